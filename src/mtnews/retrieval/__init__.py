"""Whole-pool retrieval: exported user and article vectors, a time-sharded ANN index, and its evaluation.

    mtnews embed    --run RUN --data D --split S --out DIR     articles.parquet, users.parquet, index/
    mtnews retrieve --run RUN --data D --split validation      recall@K / nDCG@K over each impression's fresh pool

`export` writes the vectors `Recommender` computes; `index.FreshIndex` is the ANN index over articles
partitioned by publication time (serving can load it, search it for a user vector at `now`, and evict what
expired); `pool` holds the time-sorted article rows and the exact brute-force search that both checks the
index and runs the baselines; `task` streams a split through any of them.
"""
