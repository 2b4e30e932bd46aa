"""`mtnews embed` and `mtnews retrieve`."""

from __future__ import annotations

import argparse
import json

from mtnews.evaluate.commands import cf_flags, cf_params

# retrieval/task.SCORERS and params.INDEX_KINDS, kept here so `mtnews --help` imports no torch or faiss.
SCORERS = ("model", "popular-fresh", "newest", "cf-user", "cf-als", "mtrec+cf")
INDEX_KINDS = ("hnsw", "flat")


def _index_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("index", "the ANN index (defaults keep ANN recall@100 vs exact >= 0.99; "
                                      "docs/performance.md)")
    g.add_argument("--index-kind", default="hnsw", choices=INDEX_KINDS, help="hnsw (ANN) or flat (exact)")
    g.add_argument("--hnsw-m", type=int, default=32, help="HNSW graph degree (default: 32)")
    g.add_argument("--ef-construction", type=int, default=200, help="HNSW build beam (default: 200)")
    g.add_argument("--ef-search", type=int, default=512, help="HNSW search beam, at least the results asked for "
                                                               "(default: 512)")
    g.add_argument("--shard-hours", type=float, default=24.0, help="publication-time width of a shard (default: 24)")
    g.add_argument("--exact-below", type=int, default=50_000,
                   help="shards with fewer articles are searched exactly, without a graph (default: 50000)")


def _params(args: argparse.Namespace):
    from mtnews.retrieval.params import IndexParams

    return IndexParams(args.index_kind, args.hnsw_m, args.ef_construction, args.ef_search, args.shard_hours,
                       args.exact_below).validate()


def register(sub: argparse._SubParsersAction) -> None:
    e = sub.add_parser("embed", help="export a run's article and user vectors (parquet) and the retrieval index",
                       description="Write DIR/articles.parquet (article_id, vector, published_time), "
                                   "DIR/users.parquet (user_id, vector, history_length) and DIR/index/, each "
                                   "tagged with the run's fingerprint.")
    e.add_argument("--run", required=True, help="training run directory")
    e.add_argument("--data", required=True, help="dataset root folder")
    e.add_argument("--split", default="validation", choices=("train", "validation", "test"),
                   help="split whose history.parquet gives the users (default: validation)")
    e.add_argument("--out", required=True, help="output folder (new, empty, or an earlier export)")
    e.add_argument("--no-index", action="store_true", help="vectors only (no published_time needed)")
    e.add_argument("--chunk", type=int, default=65_536, help="users encoded and written per row group")
    e.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    _index_flags(e)
    e.set_defaults(func=_embed)

    r = sub.add_parser("retrieve", help="whole-pool retrieval: recall@K / nDCG@K of each impression's clicks "
                                        "among all fresh articles",
                       description="For every impression, retrieve the top K of all articles published in the "
                                   "--max-age-hours before it that the user has not read, and score the clicks.")
    r.add_argument("--data", required=True, help="dataset root folder")
    r.add_argument("--split", default="validation", choices=("train", "validation", "test"))
    r.add_argument("--scorer", default="model", choices=SCORERS,
                   help="model (needs --run), a baseline: popular-fresh (past-only clicks), newest, or CF: "
                        "cf-user and mtrec+cf (need --run), cf-als")
    r.add_argument("--run", help="training run directory (for --scorer model, cf-user, mtrec+cf)")
    r.add_argument("--index", dest="index_dir", help="load DIR/index written by `mtnews embed` instead of building one")
    r.add_argument("--k", type=int, default=100, help="articles retrieved per impression (default: 100)")
    r.add_argument("--max-age-hours", type=float, default=72.0, help="freshness window (default: 72)")
    r.add_argument("--json-out", help="write the metrics dict as JSON here")
    r.add_argument("--no-exact-check", action="store_true", help="skip the exact brute force run beside the ANN")
    r.add_argument("--chunk", type=int, default=50_000, help="impressions per streamed chunk")
    r.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    _index_flags(r)
    cf_flags(r)
    r.set_defaults(func=_retrieve)


def _embed(args: argparse.Namespace) -> int:
    from mtnews.retrieval.export import export_embeddings

    m = export_embeddings(args.run, args.data, args.split, args.out, index=not args.no_index, params=_params(args),
                          chunk=args.chunk, device=args.device)
    index = f", index of {m['index']['articles']} articles in {m['index']['shards']} shards" if m["index"] else ""
    print(f"wrote {args.out}: {m['articles']} articles, {m['users']} users ({m['dim']}-dim){index}")
    return 0


def _retrieve(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from mtnews.io import atomic_write_text, check_output_file
    from mtnews.retrieval.task import retrieve_split

    check_output_file(args.json_out, "metrics JSON")
    res = retrieve_split(args.data, args.split, run=args.run, scorer=args.scorer, k=args.k,
                         max_age_hours=args.max_age_hours, params=_params(args), index_dir=args.index_dir,
                         chunk=args.chunk, exact_check=not args.no_exact_check, device=args.device, progress=True,
                         cf=cf_params(args))
    names = [key for key in res if key.startswith(("recall@", "ndcg@"))]
    table = Table("segment", "impressions", *names, title=f"{args.scorer} / {args.split} / {args.max_age_hours:g} h pool")
    table.add_row("all", str(res["evaluated"]), *(f"{res[n]:.4f}" for n in names))
    for label, seg in res["segments"].items():
        table.add_row(label, str(seg["impressions"]), *("-" if seg[n] is None else f"{seg[n]:.4f}" for n in names))
    console = Console()
    if not console.is_terminal:  # logs and pipes get every column unabbreviated
        console = Console(width=120)
    console.print(table)
    console.print(f"mean pool {res['mean_pool_size']:.1f} articles; {res['out_of_pool']:.1%} of clicks outside their "
                  f"pool; skipped {res['skipped_empty_pool']} impressions with an empty pool, "
                  f"{res['skipped_no_click']} without a click")
    if "ann_vs_exact@" + str(args.k) in res:
        console.print(f"ANN recall@{args.k} vs exact {res['ann_vs_exact@' + str(args.k)]:.4f}; "
                      f"{res['qps_ann']:.0f} queries/s ANN, {res['qps_exact']:.0f} exact")
    if args.json_out:
        atomic_write_text(args.json_out, json.dumps(res, indent=2))
    return 0
