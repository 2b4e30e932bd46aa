"""The FastAPI app: routes, request validation, error mapping, metrics, and the demo page at `/`.

Every error body is one model, `ErrorOut`: JSON with a human-readable `detail` string, and every status an
operation can answer is declared in /openapi.json with that model, so a client generated from the schema
handles every answer. Bad input of any kind is a 4xx: request validation (422, with `errors`; malformed
JSON 400), a well-formed request naming articles or a user that do not exist (404, with `unknown_ids` or
`user_id`), contradictory entries within one request (409), a body that is not JSON (415), bodies over
the size limit (413). Anything else that escapes a handler is a bug and stays a 500 (logged with its
traceback and counted in /metrics) rather than being disguised as a client error.

Handlers are plain `def`s: FastAPI runs them in its thread pool, so requests overlap while the engine
serialises only the model calls.
"""

import logging
import math
from importlib import resources
from typing import Annotated, Any

from fastapi import Body, FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from mtnews import __version__
from mtnews.recommender import (ArticleInfo, InvalidRequest, InvalidTime, Ranking, Recommender, SuppliedArticle,
                                UnknownArticles, UnknownUser, utc_datetime)
from mtnews.serve.limits import BodyLimitMiddleware
from mtnews.serve.metrics import CONTENT_TYPE, Metrics, MetricsMiddleware
from mtnews.serve.schemas import (ID_MAX, ArticleOut, ErrorOut, EventsResponse, Health, RankedArticle, RankResponse,
                                  RecommendResponse, SignalsResponse, SimilarArticle, SimilarArticlesResponse,
                                  SimilarUser, SimilarUsersResponse, UserOut, UsersResponse, request_models)

log = logging.getLogger("mtnews.serve")

MAX_ERRORS_SHOWN = 20
MAX_USERS_PAGE = 1000

# What each error status means; 404 differs per route. 400, 413 and 500 can answer any operation (the body
# limit checks Content-Length before routing), so every operation declares them.
ERROR_MEANING = {
    400: "malformed JSON body, or an invalid Content-Length header",
    409: "contradictory entries in the request (one article_id supplied twice with different fields), an "
         "impression_time before what the live time signals still hold, or events after the server's clock",
    413: "request body over the server's --max-body-bytes",
    415: "a body that is not JSON (Content-Type)",
    422: "the request fails validation; `errors` lists every problem",
    500: "a bug in mtnews serve; the server log has the traceback",
}


def _responses(*codes: int, not_found: str | None = None) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for these error statuses (plus 400, 413, 500), all with the one error model."""
    out: dict[int | str, dict[str, Any]] = {}
    for code in sorted({*codes, 400, 413, 500} | ({404} if not_found else set())):
        out[code] = {"model": ErrorOut, "description": not_found if code == 404 else ERROR_MEANING[code]}
    return out


def _article_out(a: ArticleInfo) -> ArticleOut:
    return ArticleOut(article_id=a.article_id, title=a.title, category=a.category, published_time=a.published_time)


def _results(r: Ranking) -> list[RankedArticle]:
    return [RankedArticle(rank=k, article_id=x.article_id, score=x.score, title=x.title, category=x.category)
            for k, x in enumerate(r.items, start=1)]


def _error(status: int, detail: str, headers: dict | None = None, **extra: Any) -> JSONResponse:
    # Built through the model, so no error body can drift from the schema that declares it.
    body = ErrorOut(detail=detail, **extra).model_dump(mode="json", exclude_none=True)
    return JSONResponse(body, status_code=status, headers=headers)


def _clean(errors: list[dict]) -> list[dict]:
    """Validation errors without their `input`/`ctx` (which can echo megabytes, or bytes JSON cannot hold)."""
    return [{"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
            for e in errors[:MAX_ERRORS_SHOWN]]


def _summary(errors: list[dict]) -> str:
    def where(e: dict) -> str:
        loc = [str(x) for x in e["loc"] if x not in ("body", "query", "path")]
        return ".".join(loc) or "body"

    shown = "; ".join(f"{where(e)}: {e['msg']}" for e in errors[:3])
    more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
    return f"invalid request: {shown}{more}"


def _page() -> str:
    return resources.files("mtnews.serve").joinpath("static/index.html").read_text(encoding="utf-8")


def create_app(engine: Recommender, *, max_list: int = 512, max_body_bytes: int = 1024 * 1024,
               metrics: Metrics | None = None) -> FastAPI:
    # Examples in the schema are real ids of this dataset, so /docs and schema-driven clients reach the
    # scoring code instead of 404s.
    example_user = next(iter(engine.users(0, 1)), None)
    known = [] if example_user is None else [a.article_id for a in engine.user_history(example_user)
                                             if a.article_id is not None]
    user_examples = {} if example_user is None else {"examples": [example_user]}
    article_examples = {"examples": [known[-1]]} if known else {}
    models = request_models(max_list, known)
    RankRequest, RecommendRequest = models.rank, models.recommend
    EventsRequest, SignalsRequest = models.events, models.signals
    metrics = metrics or Metrics()
    page = _page()

    app = FastAPI(
        title="mtnews",
        version=__version__,
        description="Multi-task BERT news recommendation (MTRec): rank candidate articles for a user. "
        f"Lists hold at most {max_list} ids; bodies at most {max_body_bytes} bytes.",
        # "/v1/rank/" is a 404, not a 307 to "/v1/rank": clients re-send POST bodies inconsistently
        # across redirects, and an API has one spelling per endpoint.
        redirect_slashes=False,
    )
    app.state.engine = engine
    app.state.metrics = metrics
    app.state.max_list = max_list
    app.state.max_body_bytes = max_body_bytes
    # Added last = outermost: the metrics see every response, including the body limit's 413s.
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=metrics, routes=app.router.routes)

    # --- error mapping ------------------------------------------------------------------------------
    @app.exception_handler(RequestValidationError)
    async def on_request_invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        bad_json = next((e for e in errors if e.get("type") == "json_invalid"), None)
        if bad_json is not None:
            ctx = bad_json.get("ctx") or {}
            loc = bad_json.get("loc", ())
            pos = f" at character {loc[1]}" if len(loc) > 1 else ""
            return _error(400, f"malformed JSON body: {ctx.get('error', 'cannot be parsed')}{pos}")
        cleaned = _clean(errors)
        ctype = request.headers.get("content-type", "")
        if ctype and "json" not in ctype.lower() and any(e["loc"][:1] == ["body"] for e in cleaned):
            # FastAPI leaves a non-JSON body unparsed; the real problem is the media type, say so.
            return _error(415, f"expected a JSON body with Content-Type: application/json, got {ctype[:100]!r}")
        return _error(422, _summary(cleaned), errors=cleaned)

    @app.exception_handler(ValidationError)
    async def on_model_invalid(request: Request, exc: ValidationError) -> JSONResponse:
        # Catch-all for validation that happens after FastAPI's own request parsing: answered as the
        # client's fault (422), but counted and logged loudly, because every client input should have been
        # rejected by the request models already; the tests require this counter to stay at zero.
        metrics.unexpected_validation_errors += 1
        log.warning("validation error raised inside %s %s", request.method, request.url.path, exc_info=exc)
        cleaned = _clean(exc.errors())
        return _error(422, _summary(cleaned), errors=cleaned)

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"no such endpoint: {request.method} {request.url.path} (see /docs)"
        elif exc.status_code == 405:
            detail = f"method {request.method} is not allowed on {request.url.path}"
        return _error(exc.status_code, detail, headers=getattr(exc, "headers", None))

    @app.exception_handler(UnknownArticles)
    async def on_unknown_articles(request: Request, exc: UnknownArticles) -> JSONResponse:
        # A well-formed request that references articles that do not exist: the schema cannot know the
        # catalogue, so this is "not found" (404), not a validation failure (422).
        return _error(404, str(exc), unknown_ids=exc.ids)

    @app.exception_handler(UnknownUser)
    async def on_unknown_user(request: Request, exc: UnknownUser) -> JSONResponse:
        return _error(404, str(exc), user_id=exc.user_id)

    @app.exception_handler(InvalidRequest)
    async def on_invalid(request: Request, exc: InvalidRequest) -> JSONResponse:
        # Schema-valid entries that contradict each other (JSON Schema cannot say "article_id unique"):
        # a conflict within the request, 409, so that 422 keeps meaning "the schema rejects this".
        return _error(409, str(exc))

    @app.exception_handler(InvalidTime)
    async def on_invalid_time(request: Request, exc: InvalidTime) -> JSONResponse:
        # A well-formed time the server's state cannot answer for (its counters have moved past it):
        # a conflict with that state, not a schema violation.
        return _error(409, str(exc))

    @app.exception_handler(Exception)
    async def on_bug(request: Request, exc: Exception) -> JSONResponse:
        # Starlette re-raises after this response, so uvicorn logs the traceback and then drops the
        # connection; "Connection: close" tells the client not to send its next request down it.
        log.error("unhandled error on %s %s: %r", request.method, request.url.path, exc)
        return _error(500, "internal server error (a bug in mtnews serve; the server log has the traceback)",
                      headers={"connection": "close"})

    # --- API ----------------------------------------------------------------------------------------
    @app.post("/v1/rank", response_model=RankResponse, tags=["ranking"],
              responses=_responses(409, 415, 422, not_found="article ids that are neither in articles.parquet "
                                   "nor supplied in `articles` (listed in unknown_ids)"),
              summary="Rank candidates for a given click history")
    def rank(body: RankRequest) -> RankResponse:  # type: ignore[valid-type]
        supplied = [SuppliedArticle(a.article_id, a.title, a.category_str, a.published_time) for a in body.articles]
        r = engine.rank(body.history, body.candidates, body.top_k, supplied, body.impression_time)
        return RankResponse(results=_results(r), candidates=r.candidates, history_used=r.history_used,
                            encoded_titles=r.encoded_titles, impression_time=utc_datetime(r.impression_time))

    @app.post("/v1/users/{user_id}/recommend", response_model=RecommendResponse,
              responses=_responses(415, 422, not_found="user not in the split's history.parquet (user_id), "
                                   "or candidate ids not in articles.parquet (unknown_ids)"),
              tags=["ranking"], summary="Recommend for a user known from the split's history.parquet")
    def recommend(
        user_id: Annotated[int, Path(ge=0, le=ID_MAX, **user_examples)],
        body: Annotated[RecommendRequest | None, Body()] = None,  # type: ignore[valid-type]
    ) -> RecommendResponse:
        candidates = body.candidates if body is not None else None
        top_k = body.top_k if body is not None else None
        r = engine.recommend(user_id, candidates, top_k, body.impression_time if body is not None else None)
        return RecommendResponse(user_id=user_id, default_candidates=candidates is None, results=_results(r),
                                 candidates=r.candidates, history_used=r.history_used,
                                 encoded_titles=r.encoded_titles, impression_time=utc_datetime(r.impression_time),
                                 candidate_source=r.source)

    @app.get("/v1/users/{user_id}/similar-users", response_model=SimilarUsersResponse, tags=["neighbours"],
             responses=_responses(422, not_found="user not in the split's history.parquet (user_id)"),
             summary="The nearest users by user vector, among the users with a history")
    def similar_users(user_id: Annotated[int, Path(ge=0, le=ID_MAX, **user_examples)],
                      k: Annotated[int, Query(ge=1, le=max_list, description="how many neighbours")] = 10
                      ) -> SimilarUsersResponse:
        found = engine.similar_users(user_id, k)
        return SimilarUsersResponse(user_id=user_id, results=[
            SimilarUser(rank=i, user_id=n.id, similarity=n.similarity) for i, n in enumerate(found, start=1)])

    @app.get("/v1/articles/{article_id}/similar", response_model=SimilarArticlesResponse, tags=["neighbours"],
             responses=_responses(422, not_found="article neither in articles.parquet nor added at run time "
                                  "(unknown_ids)"),
             summary="The nearest articles by news vector (the catalogue and articles added at run time)")
    def similar_articles(article_id: Annotated[int, Path(ge=0, le=ID_MAX, **article_examples)],
                         k: Annotated[int, Query(ge=1, le=max_list, description="how many neighbours")] = 10
                         ) -> SimilarArticlesResponse:
        found = engine.similar_articles(article_id, k)
        out = []
        for i, n in enumerate(found, start=1):
            a = engine.any_article(n.id)
            out.append(SimilarArticle(rank=i, article_id=n.id, similarity=n.similarity, title=a.title,
                                      category=a.category))
        return SimilarArticlesResponse(article_id=article_id, results=out)

    # --- time signals -------------------------------------------------------------------------------
    @app.post("/v1/events", response_model=EventsResponse, tags=["signals"], responses=_responses(409, 415, 422),
              summary="Record one impression's in-views and clicks in the live time signals")
    def events(body: EventsRequest) -> EventsResponse:  # type: ignore[valid-type]
        t = engine.impression_us(body.impression_time)
        n = engine.record_events(body.inview, body.clicked, t)
        return EventsResponse(recorded=n, impression_time=utc_datetime(t), kept_events=engine.live.kept_events)

    @app.post("/v1/signals", response_model=SignalsResponse, tags=["signals"], responses=_responses(409, 415, 422),
              summary="The time signals of articles at an impression time (as mtnews evaluate computes them)")
    def signals(body: SignalsRequest) -> SignalsResponse:  # type: ignore[valid-type]
        t = engine.impression_us(body.impression_time)
        table = engine.signals(body.article_ids, t)
        columns = {name: [None if math.isnan(v) else v for v in col.astype(float).tolist()]
                   for name, col in table.columns.items()}
        return SignalsResponse(impression_time=utc_datetime(t), window=table.window, columns=columns)

    @app.get("/v1/users", response_model=UsersResponse, tags=["lookup"], responses=_responses(422),
             summary="Known user ids")
    def users(limit: Annotated[int, Query(ge=1, le=MAX_USERS_PAGE)] = 50,
              offset: Annotated[int, Query(ge=0, le=ID_MAX)] = 0) -> UsersResponse:
        return UsersResponse(users=engine.users(offset, limit), total=engine.num_users, offset=offset, limit=limit)

    @app.get("/v1/users/{user_id}", response_model=UserOut, tags=["lookup"],
             responses=_responses(422, not_found="user not in the split's history.parquet (user_id)"),
             summary="A user's history as the model sees it")
    def user(user_id: Annotated[int, Path(ge=0, le=ID_MAX, **user_examples)]) -> UserOut:
        history = [_article_out(a) for a in engine.user_history(user_id)]
        return UserOut(user_id=user_id, history=history, history_size=engine.history_size)

    @app.get("/v1/articles/{article_id}", response_model=ArticleOut, tags=["lookup"],
             responses=_responses(422, not_found="article neither in articles.parquet nor added at run time"),
             summary="One article of the dataset, or one added at run time")
    def article(article_id: Annotated[int, Path(ge=0, le=ID_MAX, **article_examples)]) -> ArticleOut:
        a = engine.any_article(article_id)
        if a is None:
            raise StarletteHTTPException(404, f"article {article_id} is neither in articles.parquet nor added at "
                                              f"run time")
        return _article_out(a)

    # --- operations ---------------------------------------------------------------------------------
    @app.get("/healthz", response_model=Health, tags=["operations"], responses=_responses())
    def healthz() -> Health:
        return Health(status="ok", articles=engine.num_articles, users=engine.num_users,
                      history_size=engine.history_size, dim=engine.dim, device=str(engine.device),
                      users_from=engine.source)

    @app.get("/metrics", tags=["operations"], response_class=Response,
             responses={200: {"content": {CONTENT_TYPE: {"schema": {"type": "string"}}},
                              "description": "Prometheus text format"}, **_responses()})
    def prometheus() -> Response:
        s = engine.stats()
        gauges = {
            "mtnews_articles": ("gauge", "Articles encoded at start-up.", s["articles"]),
            "mtnews_users": ("gauge", "Users with a history.", s["users"]),
            "mtnews_title_cache_entries": ("gauge", "Supplied-title vectors in the LRU cache.", s["cache_entries"]),
            "mtnews_title_cache_capacity": ("gauge", "Capacity of the LRU cache.", s["cache_capacity"]),
            "mtnews_title_cache_hits_total": ("counter", "Supplied titles found in the cache.", s["cache_hits"]),
            "mtnews_title_cache_misses_total": ("counter", "Supplied titles not in the cache.", s["cache_misses"]),
            "mtnews_title_cache_evictions_total": ("counter", "Cache entries evicted.", s["cache_evictions"]),
            "mtnews_titles_encoded_total": ("counter", "Supplied titles encoded on the fly.", s["encoded_on_the_fly"]),
            "mtnews_unexpected_validation_errors_total": (
                "counter", "Validation errors raised inside handlers, past request parsing (should stay 0).",
                metrics.unexpected_validation_errors),
            "mtnews_startup_encode_seconds": ("gauge", "Time to encode all articles at start-up.",
                                              s["startup_encode_seconds"]),
            "mtnews_index_articles": ("gauge", "Articles in the fresh-pool index.", s["index_articles"]),
            "mtnews_added_articles": ("gauge", "Articles added at run time (supplied titles).", s["added_articles"]),
            "mtnews_signal_events_recorded_total": ("counter", "Events counted by the live time signals.",
                                                    s["signal_events_recorded"]),
            "mtnews_signal_events_kept": ("gauge", "Events kept with their times.", s["signal_events_kept"]),
            "mtnews_signal_live_articles": ("gauge", "Articles the live counters hold.", s["signal_live_articles"]),
        }
        return Response(metrics.render(gauges), media_type=CONTENT_TYPE)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index() -> HTMLResponse:
        return HTMLResponse(page)

    return app
