"""Request counters and latency histograms, rendered in the Prometheus text exposition format (0.0.4).

Routes are labelled by their *template* ("/v1/users/{user_id}/recommend"), never by the raw path, and
anything that matched no route is "unmatched": a scan of random URLs cannot grow the label set.
"""

from __future__ import annotations

import math
import threading
import time
from collections import defaultdict

from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(**kv: str) -> str:
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in kv.items()) + "}"


def _num(x: float) -> str:
    if math.isinf(x):
        return "+Inf" if x > 0 else "-Inf"
    return repr(float(x)) if not float(x).is_integer() else str(int(x))


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, str, str], int] = defaultdict(int)  # (route, method, status) -> n
        self._buckets: dict[str, list[int]] = {}  # route -> non-cumulative counts per bucket (+Inf last)
        self._sum: dict[str, float] = defaultdict(float)
        self.started = time.time()
        self.unexpected_validation_errors = 0

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        method = method if method in METHODS else "OTHER"
        with self._lock:
            self.requests[(route, method, str(status))] += 1
            counts = self._buckets.setdefault(route, [0] * (len(BUCKETS) + 1))
            i = next((k for k, b in enumerate(BUCKETS) if seconds <= b), len(BUCKETS))
            counts[i] += 1
            self._sum[route] += seconds

    def count(self, status_prefix: str = "") -> int:
        """Total requests whose status code starts with `status_prefix` (e.g. "5")."""
        with self._lock:
            return sum(n for (_, _, s), n in self.requests.items() if s.startswith(status_prefix))

    def render(self, gauges: dict[str, tuple[str, str, float]] | None = None) -> str:
        """The exposition text; `gauges` maps metric name -> (type, help, value) for engine stats."""
        out: list[str] = []
        with self._lock:
            out += ["# HELP mtnews_http_requests_total HTTP requests by route template, method and status code.",
                    "# TYPE mtnews_http_requests_total counter"]
            for (route, method, status), n in sorted(self.requests.items()):
                out.append(f"mtnews_http_requests_total{_labels(route=route, method=method, status=status)} {n}")
            out += ["# HELP mtnews_http_request_duration_seconds Time from request start to response end.",
                    "# TYPE mtnews_http_request_duration_seconds histogram"]
            for route in sorted(self._buckets):
                cum = 0
                for bound, n in zip((*BUCKETS, math.inf), self._buckets[route]):
                    cum += n
                    out.append(f"mtnews_http_request_duration_seconds_bucket{_labels(route=route, le=_num(bound))} {cum}")
                out.append(f"mtnews_http_request_duration_seconds_sum{_labels(route=route)} {self._sum[route]!r}")
                out.append(f"mtnews_http_request_duration_seconds_count{_labels(route=route)} {cum}")
        out += ["# HELP mtnews_uptime_seconds Seconds since the app was created.", "# TYPE mtnews_uptime_seconds gauge",
                f"mtnews_uptime_seconds {time.time() - self.started:.3f}"]
        for name, (kind, help_, value) in (gauges or {}).items():
            out += [f"# HELP {name} {help_}", f"# TYPE {name} {kind}", f"{name} {_num(value)}"]
        return "\n".join(out) + "\n"


class MetricsMiddleware:
    """Pure ASGI middleware (no BaseHTTPMiddleware: it would buffer and add a task per request)."""

    def __init__(self, app: ASGIApp, metrics: Metrics, routes: list | None = None) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes if routes is not None else []  # the app's live route list

    def _template(self, scope: Scope) -> str:
        route = scope.get("route")
        if route is None:
            # Answered before routing (e.g. the body limit's 413): find the route the path would have hit.
            for candidate in self.routes:
                if candidate.matches(scope)[0] != Match.NONE:
                    route = candidate
                    break
        return getattr(route, "path", None) or "unmatched"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status: list[int] = []

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.append(int(message["status"]))
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            # No response started means an exception escaped the app: the server error middleware outside
            # us answers it with a 500. An exception after the start (a client hang-up) keeps its status.
            self.metrics.observe(self._template(scope), scope.get("method", ""), status[0] if status else 500,
                                 time.perf_counter() - start)
