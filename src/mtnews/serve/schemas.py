"""Request and response models of the HTTP API.

Request models accept what their published JSON Schema allows and nothing else (read as I-JSON, RFC 7493:
a string with a lone surrogate is not text, and is a 422). They are strict (no "12" for 12, no true for
an id) and forbid unknown fields, so a typo such as "candidate" is a 422 naming the field instead of a
silently ignored key. List limits depend on `--max-list`, so the request models are built per app by
`request_models`; /openapi.json then carries the limits actually enforced.
"""

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints, WithJsonSchema

# Ids are bounded by the integers every JSON implementation represents exactly (RFC 7493, I-JSON). A bound
# near 2**63 is not the same number once it is a double: FastAPI's OpenAPI model stores bounds as floats
# (2**63 - 1 was published as 2**63), as do clients that parse JSON numbers as doubles (JavaScript), so
# the schema could not say which ids the server takes. Dataset ids are 32-bit (mtnews.data.schema).
ID_MAX = 2**53 - 1
MAX_TITLE_CHARS = 2000
MAX_CATEGORY_CHARS = 200


def _integral(value: object) -> object:
    """2.0 as 2: JSON (and so JSON Schema's "integer") does not tell 2.0 from 2; 2.5, "2" and true stay invalid."""
    if type(value) is float and value.is_integer():
        return int(value)
    return value


Integer = BeforeValidator(_integral)
# The validator comes after the Field, so the bounds stay the integer's own (minimum/maximum in the schema).
ArticleId = Annotated[int, Field(ge=0, le=ID_MAX, description="an article id (article_id in articles.parquet)"),
                      Integer]
UserId = Annotated[int, Field(ge=0, le=ID_MAX)]
# articles.parquet's published_time has no time zone, and neither does its answer here: JSON Schema's
# "date-time" format requires one, so the schema says what is sent instead.
LocalDateTime = Annotated[datetime, WithJsonSchema({
    "type": "string", "pattern": r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?$",
    "description": "local date and time as in articles.parquet (ISO 8601, no time zone)",
})]

RFC3339 = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]+))?([Zz]|[+-][0-9]{2}:[0-9]{2})")
TIME_HELP = "an RFC 3339 date-time with its offset, e.g. 2023-05-25T07:20:35Z"


def parse_time(value: str) -> datetime:
    """An RFC 3339 date-time string as an aware datetime (ValueError otherwise); see `_rfc3339`."""
    out = _rfc3339(value)
    assert isinstance(out, datetime)
    return out


def _rfc3339(value: object) -> object:
    """An RFC 3339 date-time string (JSON Schema's "date-time": the offset is required) as an aware datetime.

    Exactly the strings the published format allows are accepted, so the schema says which times the
    server takes: a leap second (:60) is the next second, digits past microseconds are dropped.
    """
    if isinstance(value, datetime):  # from Python callers
        return value
    if not isinstance(value, str) or not (m := RFC3339.fullmatch(value)):
        raise ValueError(f"expected {TIME_HELP}")
    y, mo, d, h, mi, sec = (int(x) for x in m.groups()[:6])
    us = int(((m.group(7) or "") + "000000")[:6])
    off = m.group(8)
    try:
        if off in ("Z", "z"):
            tz = timezone.utc
        else:
            sign = -1 if off[0] == "-" else 1
            tz = timezone(sign * timedelta(hours=int(off[1:3]), minutes=int(off[4:6])))
        t = datetime(y, mo, d, h, mi, min(sec, 59), us, tzinfo=tz)
        return t + timedelta(seconds=1) if sec == 60 else t
    except (ValueError, OverflowError) as e:
        raise ValueError(f"not a valid date and time ({e}); expected {TIME_HELP}") from None


# Requests take zone-aware times; a dataset's own times have no zone and are read as UTC.
RequestTime = Annotated[datetime, BeforeValidator(_rfc3339), WithJsonSchema({
    "type": "string", "format": "date-time",
    "description": f"{TIME_HELP}; the dataset's own times (no zone) count as UTC",
})]
ResponseTime = Annotated[datetime, WithJsonSchema({"type": "string", "format": "date-time",
                                                   "description": "UTC (RFC 3339)"})]
Title = Annotated[str, StringConstraints(min_length=1, max_length=MAX_TITLE_CHARS)]
Category = Annotated[str, StringConstraints(max_length=MAX_CATEGORY_CHARS)]

STRICT = ConfigDict(strict=True, extra="forbid")


class SuppliedArticleIn(BaseModel):
    """An article the dataset may not know: it is encoded from its title (ignored for known ids)."""

    model_config = STRICT
    article_id: ArticleId
    title: Title
    category_str: Category | None = None
    published_time: RequestTime | None = Field(
        None, description="when it was published (for the fresh pool and its age); default: the request's "
        "impression_time")


@dataclass(frozen=True)
class RequestModels:
    rank: type[BaseModel]
    recommend: type[BaseModel]
    events: type[BaseModel]
    signals: type[BaseModel]
    max_list: int


def rank_example(max_list: int, article_ids: Sequence[int]) -> dict[str, Any] | None:
    """A /v1/rank body within `max_list` built from dataset ids (so "Try it out" in /docs ranks), if any."""
    if not article_ids:
        return None
    n = min(max_list, 3)
    return {"history": list(article_ids[:n]), "candidates": list(article_ids[-n:]), "top_k": min(max_list, 2)}


def request_models(max_list: int, article_ids: Sequence[int] = ()) -> RequestModels:
    """Request models whose lists hold at most `max_list` items; `article_ids` (known ids) make the example.

    The published example must itself be valid: schema-driven clients send it as is.
    """
    example = rank_example(max_list, article_ids)

    TopK = Annotated[int, Field(ge=1, le=max_list, description="return only the best top_k candidates"), Integer]

    class RankRequest(BaseModel):
        """Rank candidates for a user given by their click history."""

        model_config = ConfigDict(strict=True, extra="forbid",
                                  json_schema_extra={"examples": [example]} if example else None)
        history: list[ArticleId] = Field(
            default_factory=list, max_length=max_list,
            description="clicked article ids, oldest first; the last data.history_size are used "
            "(an empty history gets the model's learned cold-start user vector)",
        )
        candidates: list[ArticleId] = Field(min_length=1, max_length=max_list, description="article ids to rank")
        top_k: TopK | None = None
        articles: list[SuppliedArticleIn] = Field(
            default_factory=list, max_length=max_list,
            description="titles for ids that the dataset does not know; encoded on the fly and cached; "
            "those used enter the fresh-pool index",
        )
        impression_time: RequestTime | None = Field(None, description=IMPRESSION_TIME)

    class RecommendRequest(BaseModel):
        """Optional body of /v1/users/{user_id}/recommend."""

        model_config = STRICT
        candidates: list[ArticleId] | None = Field(
            None, min_length=1, max_length=max_list,
            description="article ids to rank; default: retrieved from the fresh pool (published in the "
            "--max-age-hours before impression_time, unread) through the index, or without an index the "
            "freshest unread articles",
        )
        top_k: TopK | None = None
        impression_time: RequestTime | None = Field(None, description=IMPRESSION_TIME)

    class EventsRequest(BaseModel):
        """One impression's events for the live time signals: what was shown (in view) and clicked."""

        model_config = STRICT
        inview: list[ArticleId] = Field(default_factory=list, max_length=max_list,
                                        description="article ids shown in view")
        clicked: list[ArticleId] = Field(default_factory=list, max_length=max_list,
                                         description="article ids clicked")
        impression_time: RequestTime | None = Field(None, description="when they happened; default: the "
                                                    "server's clock")

    class SignalsRequest(BaseModel):
        """Articles whose time signals to compute at one impression time."""

        model_config = STRICT
        article_ids: list[ArticleId] = Field(min_length=1, max_length=max_list)
        impression_time: RequestTime | None = Field(None, description=IMPRESSION_TIME)

    return RequestModels(RankRequest, RecommendRequest, EventsRequest, SignalsRequest, max_list)


IMPRESSION_TIME = ("the time to rank for: the fresh pool, the articles' ages and their time signals; default: the "
                   "server's clock (now, or pinned by `serve --clock`)")


class ArticleOut(BaseModel):
    article_id: int | None = Field(description="null for a history click missing from articles.parquet")
    title: str
    category: str | None
    published_time: LocalDateTime | None = None


class RankedArticle(BaseModel):
    rank: int = Field(description="1 = best")
    article_id: int
    score: float = Field(description="the model's score, user vector · article vector (as mtnews evaluate)")
    title: str
    category: str | None


class RankResponse(BaseModel):
    results: list[RankedArticle]
    candidates: int = Field(description="how many candidates were scored")
    history_used: int = Field(description="clicks the user vector was built from")
    encoded_titles: int = Field(description="supplied titles encoded for this request (not found in the cache)")
    impression_time: ResponseTime | None = Field(None, description="the time ranked for (null: outside years 1-9999)")


class RecommendResponse(RankResponse):
    user_id: int
    default_candidates: bool = Field(description="true when no candidates were given")
    candidate_source: Literal["candidates", "index", "freshest"] = Field(
        description="candidates: as given; index: retrieved from the fresh pool; freshest: the newest unread "
        "articles (no index)")


class SimilarUser(BaseModel):
    rank: int = Field(description="1 = nearest")
    user_id: int
    similarity: float = Field(description="cosine of the two user vectors")


class SimilarUsersResponse(BaseModel):
    user_id: int
    results: list[SimilarUser]


class SimilarArticle(BaseModel):
    rank: int = Field(description="1 = nearest")
    article_id: int
    similarity: float = Field(description="cosine of the two news vectors")
    title: str
    category: str | None


class SimilarArticlesResponse(BaseModel):
    article_id: int
    results: list[SimilarArticle]


class EventsResponse(BaseModel):
    recorded: int = Field(description="events counted (in-views plus clicks)")
    impression_time: ResponseTime | None
    kept_events: int = Field(description="events still kept with their times (the others count in *_all only)")


class SignalsResponse(BaseModel):
    impression_time: ResponseTime | None
    window: str = Field(description="the counting mode: past (strictly before impression_time)")
    columns: dict[str, list[float | None]] = Field(
        description="signal name -> one value per article id, as `mtnews evaluate` computes them (age_known "
        "is 1 or 0; null where a value is unknown, e.g. age_h without a published_time)")


class UsersResponse(BaseModel):
    users: list[int]
    total: int
    offset: int
    limit: int


class UserOut(BaseModel):
    user_id: int
    history: list[ArticleOut] = Field(description="the clicks the model sees, oldest first")
    history_size: int


class Health(BaseModel):
    status: str
    articles: int
    users: int
    history_size: int
    dim: int
    device: str
    users_from: str


class FieldError(BaseModel):
    """One problem found by request validation."""

    model_config = ConfigDict(extra="forbid")
    loc: list[str | int] = Field(description='where: e.g. ["body", "candidates", 0] or ["query", "limit"]')
    msg: str
    type: str = Field(description="pydantic's error type, e.g. greater_than_equal")


class ErrorOut(BaseModel):
    """The body of every 4xx and 5xx answer: a readable `detail`, plus the fields that apply to its status."""

    model_config = ConfigDict(extra="forbid")
    detail: str = Field(description="what went wrong, in one sentence")
    errors: list[FieldError] | None = Field(None, description="422: every validation problem (at most 20)")
    unknown_ids: list[int] | None = Field(None, description="404 on a ranking route: the article ids not found")
    user_id: int | None = Field(None, description="404 for an unknown user: that user's id")
