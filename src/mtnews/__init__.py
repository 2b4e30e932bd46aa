"""mtnews: multi-task BERT news recommendation (MTRec) on EBNeRD.

The public API (see the README's "Python API"): `Recommender`, `fit`, `score_split`, `predict`,
`load_run`, `upgrade_run`, `Run`. They are imported on first use, so `import mtnews` and `mtnews --help`
stay fast (torch and transformers load only when a name is touched).
"""

__version__ = "0.1.0"

__all__ = ["Recommender", "Run", "fit", "load_run", "predict", "score_split", "upgrade_run"]


def __getattr__(name: str):
    if name in __all__:
        from mtnews import api

        return getattr(api, name)
    raise AttributeError(f"module 'mtnews' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
