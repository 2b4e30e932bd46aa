"""Benchmark: `mtnews serve` under a bounded load from concurrent clients, on loopback only.

    .venv/bin/python benchmarks/bench_serve.py [--run RUN --data DATA] [--clients 20] [--requests 2000]
                                               [--candidates 50] [--max-seconds 60]

The server is the real CLI (`python -m mtnews serve --port 0`) in its own process, bound to 127.0.0.1;
the load comes from this process: `--clients` threads, each with its own keep-alive connection, share
`--requests` pre-built requests per scenario and stop early once `--max-seconds` have passed. Scenarios:
`/v1/users/{id}/recommend` with explicit candidates, and `/v1/rank` with an explicit history.

Without --run/--data a tiny run is built first (a random 2-layer BERT, a small synthetic dataset, 10
training steps), which measures the service overhead rather than the encoder.
"""

from __future__ import annotations

import argparse
import os
import queue
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import polars as pl
from rich.console import Console
from rich.table import Table

HOST = "127.0.0.1"  # never anything else: this benchmark must not touch a network


def build_tiny_run(work: Path) -> tuple[Path, Path]:
    from benchcommon import tiny_bert

    from mtnews.config import load_config
    from mtnews.data.synth import synthesize
    from mtnews.train.loop import train

    bert = tiny_bert(work / "tiny-bert")
    data = work / "data"
    synthesize(data, users=200, articles=300, seed=0)
    run = work / "run"
    train(load_config(None, ["--model.pretrained", str(bert), "--train.max_steps", "10", "--train.eval_every", "0"]),
          data, run, progress=False)
    return run, data


class Server:
    """`mtnews serve` in a subprocess on a free loopback port."""

    def __init__(self, run: Path, data: Path, split: str, device: str, max_list: int):
        cmd = [sys.executable, "-m", "mtnews", "serve", "--run", str(run), "--data", str(data), "--split", split,
               "--host", HOST, "--port", "0", "--log-level", "warning", "--device", device,
               "--max-list", str(max_list)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line)

    def wait_ready(self, timeout: float) -> str:
        deadline, seen, url = time.monotonic() + timeout, [], None
        while url is None:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise SystemExit("the server did not start:\n" + "".join(seen))
            try:
                line = self.lines.get(timeout=0.5)
            except queue.Empty:
                continue
            seen.append(line)
            if m := re.search(rf"serving on (http://{re.escape(HOST)}:\d+)/", line):
                url = m.group(1)
        with httpx.Client(base_url=url, timeout=10) as c:
            while True:  # the address is printed just before uvicorn starts accepting
                try:
                    c.get("/healthz").raise_for_status()
                    return url
                except httpx.TransportError:
                    if time.monotonic() > deadline:
                        raise SystemExit("the server never answered /healthz") from None
                    time.sleep(0.1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def make_requests(data: Path, split: str, n: int, n_cands: int, seed: int) -> dict[str, list[tuple[str, dict]]]:
    rng = random.Random(seed)
    articles = pl.read_parquet(data / "articles.parquet", columns=["article_id"])["article_id"].to_list()
    hist = pl.read_parquet(data / split / "history.parquet", columns=["user_id", "article_id_fixed"])
    users = hist["user_id"].to_list()
    histories = hist["article_id_fixed"].to_list()
    k = min(n_cands, len(articles))
    recommend, rank = [], []
    for _ in range(n):
        i = rng.randrange(len(users))
        recommend.append((f"/v1/users/{users[i]}/recommend", {"candidates": rng.sample(articles, k), "top_k": 10}))
        j = rng.randrange(len(users))
        rank.append(("/v1/rank", {"history": [a for a in histories[j] if a is not None][-50:],
                                  "candidates": rng.sample(articles, k), "top_k": 10}))
    return {f"POST /v1/users/{{id}}/recommend ({k} cands)": recommend, f"POST /v1/rank ({k} cands, history)": rank}


def load(url: str, reqs: list[tuple[str, dict]], clients: int, max_seconds: float) -> dict:
    todo: queue.Queue[tuple[str, dict]] = queue.Queue()
    for r in reqs:
        todo.put(r)
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    deadline = time.monotonic() + max_seconds

    def worker() -> None:
        mine, bad = [], 0
        with httpx.Client(base_url=url, timeout=30) as c:
            while time.monotonic() < deadline:
                try:
                    path, body = todo.get_nowait()
                except queue.Empty:
                    break
                t = time.perf_counter()
                try:
                    ok = c.post(path, json=body).status_code == 200
                except httpx.TransportError:
                    ok = False
                mine.append(time.perf_counter() - t)
                bad += not ok
        with lock:
            latencies.extend(mine)
            errors[0] += bad

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    lat = np.array(latencies) * 1000
    return {"done": len(lat), "errors": errors[0], "seconds": wall, "rps": len(lat) / wall,
            "p50": float(np.percentile(lat, 50)) if len(lat) else float("nan"),
            "p99": float(np.percentile(lat, 99)) if len(lat) else float("nan"),
            "max": float(lat.max()) if len(lat) else float("nan"), "cut": not todo.empty()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", help="a training run (e.g. on the default synthetic dataset); needs --data")
    ap.add_argument("--data", help="the dataset root the run belongs to")
    ap.add_argument("--split", default="validation")
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--requests", type=int, default=2000, help="requests per scenario")
    ap.add_argument("--candidates", type=int, default=50)
    ap.add_argument("--max-seconds", type=float, default=60.0, help="per scenario; stops early when reached")
    ap.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if bool(args.run) != bool(args.data):
        ap.error("--run and --data go together")
    if min(args.clients, args.requests, args.candidates) < 1 or args.max_seconds <= 0:
        ap.error("--clients, --requests, --candidates and --max-seconds must be positive")

    console = Console(width=120)  # a fixed width keeps the table on one line per row when piped
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        os.environ.setdefault("MTNEWS_CACHE", str(Path(tmp) / "cache"))
        if args.run:
            run, data, what = Path(args.run), Path(args.data), f"run {args.run}"
        else:
            t = time.perf_counter()
            run, data = build_tiny_run(Path(tmp))
            what = f"tiny run (built in {time.perf_counter() - t:.1f}s)"
        reqs = make_requests(data, args.split, args.requests, args.candidates, args.seed)
        t = time.perf_counter()
        server = Server(run, data, args.split, args.device, max(512, args.candidates))
        try:
            url = server.wait_ready(timeout=600)
            console.print(f"server {url} ready in {time.perf_counter() - t:.1f}s ({what})")
            for scenario in reqs.values():  # warm-up: first-call allocations and connection set-up
                load(url, scenario[: args.clients * 2], args.clients, 30)
            results = {name: load(url, r, args.clients, args.max_seconds) for name, r in reqs.items()}
        finally:
            server.stop()

    table = Table(title=f"mtnews serve: {args.clients} concurrent clients, loopback, {os.cpu_count()} CPUs")
    for col in ("scenario", "requests", "errors", "seconds", "req/s", "p50 ms", "p99 ms", "max ms"):
        table.add_column(col, justify="left" if col == "scenario" else "right")
    for name, r in results.items():
        done = f"{r['done']}" + (" (time cap)" if r["cut"] else "")
        table.add_row(name, done, str(r["errors"]), f"{r['seconds']:.1f}", f"{r['rps']:.0f}", f"{r['p50']:.1f}",
                      f"{r['p99']:.1f}", f"{r['max']:.1f}")
    console.print(table)
    if any(r["errors"] for r in results.values()):
        raise SystemExit("some requests failed")


if __name__ == "__main__":
    main()
