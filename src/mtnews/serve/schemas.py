"""Request and response models of the HTTP API.

Request models accept what their published JSON Schema allows and nothing else (read as I-JSON, RFC 7493:
a string with a lone surrogate is not text, and is a 422). They are strict (no "12" for 12, no true for
an id) and forbid unknown fields, so a typo such as "candidate" is a 422 naming the field instead of a
silently ignored key. List limits depend on `--max-list`, so the request models are built per app by
`request_models`; /openapi.json then carries the limits actually enforced.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

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
Title = Annotated[str, StringConstraints(min_length=1, max_length=MAX_TITLE_CHARS)]
Category = Annotated[str, StringConstraints(max_length=MAX_CATEGORY_CHARS)]

STRICT = ConfigDict(strict=True, extra="forbid")


class SuppliedArticleIn(BaseModel):
    """An article the dataset may not know: it is encoded from its title (ignored for known ids)."""

    model_config = STRICT
    article_id: ArticleId
    title: Title
    category_str: Category | None = None


@dataclass(frozen=True)
class RequestModels:
    rank: type[BaseModel]
    recommend: type[BaseModel]
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
            description="titles for ids that the dataset does not know; encoded on the fly and cached",
        )

    class RecommendRequest(BaseModel):
        """Optional body of /v1/users/{user_id}/recommend."""

        model_config = STRICT
        candidates: list[ArticleId] | None = Field(
            None, min_length=1, max_length=max_list,
            description="article ids to rank; default: the newest articles the user has not clicked",
        )
        top_k: TopK | None = None

    return RequestModels(RankRequest, RecommendRequest, max_list)


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


class RecommendResponse(RankResponse):
    user_id: int
    default_candidates: bool = Field(description="true when the candidates were the newest unclicked articles")


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
