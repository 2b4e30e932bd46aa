"""mtnews: multi-task BERT news recommendation (MTRec) on EBNeRD."""

__version__ = "0.1.0"
