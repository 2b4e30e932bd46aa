"""Request and response models of the HTTP API.

Request models are strict (no "12" for 12, no 1.0 or true for an id) and forbid unknown fields, so a
typo such as "candidate" is a 422 naming the field instead of a silently ignored key. List limits depend
on `--max-list`, so the request models are built per app by `request_models`; the OpenAPI schema at /docs
then shows the limits actually enforced.
"""

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

INT64_MAX = 2**63 - 1  # ids are matched against int64 arrays; larger numbers could never match anyway
MAX_TITLE_CHARS = 2000
MAX_CATEGORY_CHARS = 200

ArticleId = Annotated[int, Field(ge=0, le=INT64_MAX, description="an article id (article_id in articles.parquet)")]
UserId = Annotated[int, Field(ge=0, le=INT64_MAX)]
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


def request_models(max_list: int) -> RequestModels:
    """Request models whose lists hold at most `max_list` items."""

    TopK = Annotated[int, Field(ge=1, le=max_list, description="return only the best top_k candidates")]

    class RankRequest(BaseModel):
        """Rank candidates for a user given by their click history."""

        model_config = ConfigDict(
            strict=True, extra="forbid",
            json_schema_extra={"examples": [{"history": [9500001, 9500019], "candidates": [9500055, 9500089],
                                             "top_k": 10}]},
        )
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
    published_time: datetime | None = None


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


class ErrorOut(BaseModel):
    detail: str
    errors: list[dict] | None = None
    unknown_ids: list[int] | None = None
