"""Collaborative filtering: what similar readers clicked, beside (and blended with) the content model.

    cf-user    `user_cf.UserCF`: the k nearest users in user-embedding space (faiss inner product over a run's
               user vectors, `neighbours`), a candidate scored by those neighbours' clicks before the
               impression, each decayed by its age (half-life `CFParams.half_life_hours`).
    cf-als     `als.AlsScorer`: `implicit` ALS on the clicks known before the split (a classical baseline).
    mtrec+cf   `blend`: z(content) + w * z(cf-user) per impression, w chosen on the selection holdout.

`clicks` holds the timed click log every scorer reads; `scorers` builds the in-view scorers that
`mtnews evaluate --scorer` streams. The pool task (`mtnews retrieve --scorer cf-user|cf-als|mtrec+cf`) uses
the same kernels through `pool`. This package sits beside evaluate and train (tests/test_architecture.py):
it reads data and model, and evaluate's split scoring builds its scorers.
"""
