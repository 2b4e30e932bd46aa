"""The index's parameters: what `mtnews embed` and `mtnews retrieve` take as flags and index.json records."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from mtnews.errors import ConfigError

INDEX_KINDS = ("hnsw", "flat")


@dataclass(frozen=True)
class IndexParams:
    """`kind` hnsw is faiss's IndexHNSWFlat (inner product) for shards of at least `exact_below` articles;
    flat is exact (IndexFlatIP) everywhere.

    Defaults measured on the synthetic data and at 100k/1M clustered vectors (docs/performance.md): they
    keep ANN recall@100 against exact search >= 0.99.
    """

    kind: str = "hnsw"
    hnsw_m: int = 32  # graph degree: memory is about 8 * M bytes per article on top of its vector
    ef_construction: int = 200
    ef_search: int = 512  # raised to the number of results asked for when that is larger
    shard_hours: float = 24.0  # publication-time width of one shard
    # Shards with fewer articles are searched exactly (IndexFlatIP): below about this size a brute-force
    # matrix product is faster than walking a graph, and it needs no build (docs/performance.md).
    exact_below: int = 50_000

    def validate(self) -> "IndexParams":
        if self.kind not in INDEX_KINDS:
            raise ConfigError(f"--index-kind: '{self.kind}' is not one of {', '.join(INDEX_KINDS)}")
        for name in ("hnsw_m", "ef_construction", "ef_search"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ConfigError(f"--{name.replace('_', '-')}: must be a positive integer, got {v!r}")
        if isinstance(self.exact_below, bool) or not isinstance(self.exact_below, int) or self.exact_below < 0:
            raise ConfigError(f"--exact-below: must be an integer >= 0, got {self.exact_below!r}")
        if not self.shard_hours > 0 or self.shard_hours != self.shard_hours:
            raise ConfigError(f"--shard-hours: must be > 0, got {self.shard_hours}")
        return self

    @property
    def shard_us(self) -> int:
        return max(1, int(round(self.shard_hours * 3_600_000_000)))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "IndexParams":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown index parameter(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**d).validate()
