"""`mtnews serve`: a trained run behind an HTTP API (FastAPI + uvicorn), with a small demo page at `/`."""

from __future__ import annotations

import argparse

DEFAULT_MAX_LIST = 512
DEFAULT_MAX_BODY_BYTES = 1024 * 1024
DEFAULT_CACHE_SIZE = 10_000
DEFAULT_RECENT = 100


def register(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser(
        "serve",
        help="serve a trained run over HTTP (POST /v1/rank, /v1/users/{id}/recommend; docs at /docs)",
        description="Load a training run, encode every article of the dataset once, and answer ranking "
        "requests over HTTP. Binds 127.0.0.1 unless --host says otherwise.",
    )
    s.add_argument("--run", required=True, help="training run directory")
    s.add_argument("--data", default=None,
                   help="dataset root folder (articles.parquet, <split>/history.parquet) or a MIND folder; default: "
                        "the run's own articles and no known users")
    s.add_argument("--split", default="validation", choices=("train", "validation", "test"),
                   help="split whose history.parquet gives the known users (default: validation)")
    s.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, loopback only)")
    s.add_argument("--port", type=int, default=8000, help="port to bind (default: 8000; 0 = any free port)")
    s.add_argument("--max-list", type=int, default=DEFAULT_MAX_LIST,
                   help=f"most ids in one history/candidates/articles list (default: {DEFAULT_MAX_LIST})")
    s.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES,
                   help=f"largest accepted request body (default: {DEFAULT_MAX_BODY_BYTES})")
    s.add_argument("--cache-size", type=int, default=DEFAULT_CACHE_SIZE,
                   help=f"vectors of request-supplied titles kept in an LRU cache (default: {DEFAULT_CACHE_SIZE}; 0 = off)")
    s.add_argument("--recent", type=int, default=DEFAULT_RECENT,
                   help=f"default candidates of /recommend: the N most recently published articles (default: {DEFAULT_RECENT})")
    s.add_argument("--clock", default="now",
                   help="the default impression time: now (UTC), last-impression (the split's last impression_time: "
                        "for historical datasets, where now makes every article years old), or an RFC 3339 time "
                        "to pin it to (default: now)")
    s.add_argument("--max-age-hours", type=float, default=72.0,
                   help="fresh pool of /recommend without candidates: articles published this many hours before "
                        "the impression time (default: 72)")
    s.add_argument("--index", default=None,
                   help="load the fresh-pool index written by `mtnews embed` (DIR or DIR/index) instead of "
                        "building it at start-up")
    s.add_argument("--no-index", action="store_true",
                   help="no fresh-pool index: /recommend without candidates ranks the freshest articles")
    s.add_argument("--events-log", default=None,
                   help="JSON-lines file that keeps the events posted to /v1/events and replays them at the next "
                        "start (default: none; the counters then restart from the --data logs alone)")
    s.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    s.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads for request-time work after start-up (default: 1; start-up "
                   "encoding uses torch's default)")
    s.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))
    s.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> int:
    from mtnews.errors import ConfigError
    from mtnews.serve.app import create_app
    from mtnews.recommender import Recommender
    from mtnews.serve.server import bind_socket, serve_forever

    # Checked before the (slow) model load, so a typo fails in milliseconds.
    for name, value, low in (("--max-list", args.max_list, 1), ("--max-body-bytes", args.max_body_bytes, 1),
                             ("--cache-size", args.cache_size, 0), ("--recent", args.recent, 1),
                             ("--threads", args.threads, 1)):
        if value < low:
            raise ConfigError(f"{name} must be >= {low}, got {value}")
    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port must be in 0..65535, got {args.port}")
    if not args.max_age_hours > 0:
        raise ConfigError(f"--max-age-hours must be > 0, got {args.max_age_hours}")
    if args.index is not None and args.no_index:
        raise ConfigError("--index and --no-index exclude each other")
    clock = parse_clock(args.clock)
    sock = bind_socket(args.host, args.port)  # fails fast (port in use) before the model is loaded
    try:
        print(f"loading {args.run} and encoding the articles of {args.data or 'the run'} ...", flush=True)
        engine = Recommender.from_run(args.run, args.data, args.split, device=args.device,
                                      cache_size=args.cache_size, recent=args.recent, clock=clock,
                                      index=False if args.no_index else (args.index or True),
                                      max_age_hours=args.max_age_hours, events_log=args.events_log)
        # A request runs a few [H, D] matmuls under the model lock: intra-op threads only add barrier
        # waits there (measured: 1.5 ms per request with 1 thread vs. 40 ms with 2 on a busy 2-core box).
        # The whole-catalogue encoding above is the part that profits from them, and it is done.
        import torch

        torch.set_num_threads(args.threads)
        app = create_app(engine, max_list=args.max_list, max_body_bytes=args.max_body_bytes)
        host, port = sock.getsockname()[:2]
        print(f"{engine.describe()}\nserving on http://{_url_host(host)}:{port}/ (API docs at /docs)", flush=True)
        try:
            serve_forever(app, sock, log_level=args.log_level)
        except KeyboardInterrupt:
            # uvicorn has already shut down gracefully and re-raised the signal: Ctrl-C is how a server
            # is meant to stop, so this is a clean exit, not an interruption.
            print("mtnews serve: stopped", flush=True)
    finally:
        sock.close()
    return 0


def parse_clock(value: str):
    """--clock: "now", "last-impression", or an RFC 3339 date-time (a datetime) to pin the clock to."""
    from mtnews.errors import ConfigError

    if value in ("now", "last-impression"):
        return value
    from mtnews.serve.schemas import TIME_HELP, parse_time

    try:
        return parse_time(value)
    except ValueError:
        raise ConfigError(f"--clock: '{value}' is not now, last-impression or {TIME_HELP}") from None


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
