"""CF's parameters: what `mtnews evaluate/retrieve --cf.*` flags set and results record."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from mtnews.errors import ConfigError


@dataclass(frozen=True)
class CFParams:
    """`k` neighbours per user; a click `half_life_hours` old counts half. The neighbour index is exact
    (faiss IndexFlatIP) below `exact_below` users and HNSW (inner product, `hnsw_m`, `ef_search`) above, as
    retrieval's article shards are. ALS: `factors`, `regularization`, `iterations`, `seed`. The blend's
    weight is chosen on the last `holdout_hours` of the train log."""

    k: int = 50
    half_life_hours: float = 24.0
    exact_below: int = 50_000
    hnsw_m: int = 32
    ef_search: int = 256
    factors: int = 64
    regularization: float = 0.05
    iterations: int = 15
    seed: int = 0
    holdout_hours: float = 24.0

    def validate(self) -> "CFParams":
        for name in ("k", "hnsw_m", "ef_search", "factors", "iterations"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ConfigError(f"--cf.{name.replace('_', '-')}: must be a positive integer, got {v!r}")
        for name in ("half_life_hours", "holdout_hours"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and v > 0 and v != float("inf")):
                raise ConfigError(f"--cf.{name.replace('_', '-')}: must be a positive number of hours, got {v!r}")
        if not self.regularization >= 0:
            raise ConfigError(f"--cf.regularization: must be >= 0, got {self.regularization!r}")
        if isinstance(self.exact_below, bool) or not isinstance(self.exact_below, int) or self.exact_below < 0:
            raise ConfigError(f"--cf.exact-below: must be an integer >= 0, got {self.exact_below!r}")
        return self

    @property
    def half_life_us(self) -> float:
        return self.half_life_hours * 3_600_000_000

    def to_dict(self) -> dict:
        return asdict(self)
