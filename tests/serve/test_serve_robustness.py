"""Seeded fuzzing (every malformed request is a 4xx), concurrency, and bugs that must stay 500s."""

from __future__ import annotations

import json
import random
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

FUZZ_REQUESTS = 1000
FUZZ_SECONDS = 40  # a hard stop, far above the ~5 s this takes, so a hang fails instead of stalling CI

JUNK_VALUES = ["", "abc", "1", 1.5, -1, 2**64, True, False, None, [], {}, [[1]], [None], ["1"], [1.5],
               {"a": 1}, "\u0000", "💥" * 10, float("1e300")]
JUNK_SEGMENTS = ["abc", "-1", "1.5", "0x10", "%00", "%ff", "..", "99999999999999999999999", "1e3", "😀",
                 "%2F", "null", "true", "' OR 1=1 --", "<script>", " ", "%20"]


class Fuzzer:
    """Generators of requests that are invalid by construction (each has at least one certain defect)."""

    def __init__(self, rng: random.Random, known_ids: list[int], user_id: int, unknown_users: list[int],
                 max_list: int, max_body: int):
        self.rng, self.ids, self.user, self.n, self.max_body = rng, known_ids, user_id, max_list, max_body
        self.unknown_users = unknown_users

    def valid_rank(self) -> dict:
        r = self.rng
        return {"history": r.sample(self.ids, r.randint(0, 5)), "candidates": r.sample(self.ids, r.randint(1, 8)),
                "top_k": r.randint(1, 8)}

    def bad_value(self, field: str):
        r = self.rng
        over = list(range(1, self.n + 2 + r.randint(0, 20)))
        options = {
            "history": [v for v in JUNK_VALUES if v != []] + [over, [r.choice(self.ids), "x"]],
            "candidates": JUNK_VALUES + [over, [r.choice(self.ids), -5], [r.choice(self.ids), 2**63]],
            "top_k": [0, -3, self.n + 1, "3", 2.5, True, [], {}, "", 10**30],
            "articles": ["x", 5, [1], [{}], [{"article_id": "1", "title": "t"}], [{"article_id": 1, "title": ""}],
                        [{"article_id": 1, "title": 5}], [{"article_id": 1, "title": "t", "extra": 1}],
                        [{"article_id": 1, "title": "t" * 2001}], [{"article_id": 1, "title": "t", "category_str": 3}]],
        }
        return r.choice(options[field])

    def case(self) -> tuple[str, str, dict]:
        """(method, path, httpx request kwargs)."""
        r = self.rng
        kind = r.choices(
            ["field", "extra", "unknown", "truncated", "bytes", "type", "path", "method", "query", "user",
             "recommend_body", "big"],
            weights=[30, 5, 8, 10, 6, 6, 10, 6, 5, 5, 8, 1],
        )[0]
        json_headers = {"content-type": "application/json"}
        if kind == "field":
            body = self.valid_rank()
            field = r.choice(["history", "candidates", "top_k", "articles"])
            body[field] = self.bad_value(field)
            if field != "candidates" and r.random() < 0.3:
                del body["candidates"]  # a second defect: the required list is missing too
            return "POST", "/v1/rank", {"content": json.dumps(body).encode(), "headers": json_headers}
        if kind == "extra":
            body = self.valid_rank()
            body["".join(r.choices("abcdefgh_", k=r.randint(1, 12))) + "_x"] = r.choice(JUNK_VALUES[:8])
            return "POST", "/v1/rank", {"content": json.dumps(body).encode(), "headers": json_headers}
        if kind == "unknown":
            body = self.valid_rank()
            body["candidates"] = body["candidates"] + [r.randint(10**12, 10**15)]
            return "POST", "/v1/rank", {"json": body}
        if kind == "truncated":
            text = json.dumps(self.valid_rank()).encode()
            return "POST", "/v1/rank", {"content": text[: r.randint(0, len(text) - 1)], "headers": json_headers}
        if kind == "bytes":
            junk = b"\xff" + bytes(r.getrandbits(8) for _ in range(r.randint(0, 200)))
            return "POST", r.choice(["/v1/rank", f"/v1/users/{self.user}/recommend"]), {"content": junk,
                                                                                      "headers": json_headers}
        if kind == "type":
            ctype = r.choice(["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
                              "application/xml", "image/png"])
            return "POST", "/v1/rank", {"content": json.dumps(self.valid_rank()).encode(),
                                        "headers": {"content-type": ctype}}
        if kind == "path":
            seg = r.choice(JUNK_SEGMENTS)
            path = r.choice([f"/v1/articles/{seg}", f"/v1/users/{seg}", f"/v1/users/{seg}/recommend",
                             f"/v1/x{seg}", f"/{seg}/v1/rank", f"/v1/rank/{seg}", f"/v1/articles/{r.randint(0, 10**6)}"])
            method = "POST" if path.endswith("/recommend") else "GET"
            return method, path, {}
        if kind == "method":
            return r.choice([("PUT", "/v1/rank"), ("DELETE", "/v1/rank"), ("GET", "/v1/rank"), ("PATCH", "/v1/rank"),
                             ("POST", "/healthz"), ("DELETE", "/metrics"), ("PUT", "/v1/users/1/recommend"),
                             ("POST", "/v1/articles/1"), ("GET", f"/v1/users/{self.user}/recommend")]) + ({},)
        if kind == "query":
            bad = ["abc", "-5", str(10**30), "", "1.5", "%00"]
            param, value = r.choice([("limit", r.choice(bad + ["0", "1001"])), ("offset", r.choice(bad))])
            return "GET", f"/v1/users?{param}={value}", {}
        if kind == "user":
            return "POST", f"/v1/users/{r.choice(self.unknown_users)}/recommend", {}
        if kind == "recommend_body":
            # null means "use the defaults" in this body, so it is left out of the junk here.
            if r.random() < 0.6:
                body = {"candidates": self.bad_value("candidates")}
                while body["candidates"] is None:
                    body = {"candidates": self.bad_value("candidates")}
            else:
                body = {"top_k": self.bad_value("top_k")}
            if r.random() < 0.2:
                body = r.choice([[], "x", 5, {"history": [1]}])
            return "POST", f"/v1/users/{self.user}/recommend", {"content": json.dumps(body).encode(),
                                                               "headers": json_headers}
        # big: over the body limit, with or without Content-Length
        pad = {"candidates": [1], "pad": "x" * (self.max_body + 10)}
        data = json.dumps(pad).encode()
        if r.random() < 0.5:
            return "POST", "/v1/rank", {"content": data, "headers": json_headers}
        return "POST", "/v1/rank", {"content": iter([data[:1000], data[1000:]]), "headers": json_headers}


def _server_errors(client: httpx.Client) -> int:
    total = 0
    for line in client.get("/metrics").text.splitlines():
        if line.startswith("mtnews_http_requests_total{") and 'status="5' in line:
            total += int(line.rsplit(" ", 1)[1])
    return total


def test_fuzzed_malformed_requests_are_all_4xx(client, app, engine):
    rng = random.Random(20240607)
    ids = [int(x) for x in engine.articles.article_ids[2:]]
    known_users = set(engine.histories.user_ids.tolist())
    unknown_users = [u for u in range(0, 20_000, 7) if u not in known_users]
    fuzz = Fuzzer(rng, ids, engine.users(0, 1)[0], unknown_users, app.state.max_list, app.state.max_body_bytes)
    errors_before = _server_errors(client)
    unexpected_before = app.state.metrics.unexpected_validation_errors
    deadline = time.monotonic() + FUZZ_SECONDS
    bad: list[str] = []
    seen: dict[int, int] = {}
    for i in range(FUZZ_REQUESTS):
        assert time.monotonic() < deadline, f"fuzzing took over {FUZZ_SECONDS}s ({i} requests done)"
        method, path, kwargs = fuzz.case()
        r = client.request(method, path, **kwargs)
        seen[r.status_code] = seen.get(r.status_code, 0) + 1
        ok = 400 <= r.status_code < 500
        if ok:
            body = r.json()  # every error is JSON with a readable detail
            ok = isinstance(body.get("detail"), str) and body["detail"] != ""
        if not ok:
            bad.append(f"#{i} {method} {path} {str(kwargs)[:200]} -> {r.status_code} {r.text[:200]}")
    assert not bad, f"{len(bad)} fuzzed requests were not answered with a JSON 4xx:\n" + "\n".join(bad[:10])
    assert {400, 404, 405, 413, 415, 422} <= set(seen), f"the fuzzer should reach every error kind: {seen}"
    assert client.get("/healthz").json()["status"] == "ok"
    assert _server_errors(client) == errors_before
    assert app.state.metrics.unexpected_validation_errors == unexpected_before


def test_concurrent_requests_match_sequential(base_url, engine):
    rng = random.Random(7)
    ids = [int(x) for x in engine.articles.article_ids[2:]]
    users = engine.users(0, 40)
    requests = []
    for k in range(48):
        if k % 3 == 0:
            requests.append((f"/v1/users/{users[k % len(users)]}/recommend", {"top_k": 10}))
        elif k % 3 == 1:
            requests.append(("/v1/rank", {"history": rng.sample(ids, 8), "candidates": rng.sample(ids, 20)}))
        else:  # supplied titles too, so the encoder and the cache run concurrently
            new = [{"article_id": 700_000_000 + k * 10 + j, "title": f"Concurrency probe {k}-{j} on the harbour"}
                   for j in range(3)]
            requests.append(("/v1/rank", {"history": rng.sample(ids, 5) + [new[0]["article_id"]],
                                          "candidates": rng.sample(ids, 10) + [a["article_id"] for a in new[1:]],
                                          "articles": new}))

    def call(client: httpx.Client, item) -> list:
        path, body = item
        r = client.post(path, json=body)
        assert r.status_code == 200, r.text
        return r.json()["results"]

    with httpx.Client(base_url=base_url, timeout=60) as c:
        sequential = [call(c, item) for item in requests]

    clients = [httpx.Client(base_url=base_url, timeout=60) for _ in range(8)]
    try:
        with ThreadPoolExecutor(8) as pool:
            for _ in range(2):
                order = list(range(len(requests)))
                rng.shuffle(order)
                futures = {i: pool.submit(call, clients[n % 8], requests[i]) for n, i in enumerate(order)}
                for i, f in futures.items():
                    assert f.result() == sequential[i], f"request {i} differs under concurrency"
    finally:
        for c in clients:
            c.close()


def test_concurrent_identical_titles_are_encoded_once(base_url, engine):
    arts = [{"article_id": 600_000_000 + j, "title": f"Shared headline {j} about the same storm"} for j in range(6)]
    body = {"candidates": [a["article_id"] for a in arts], "articles": arts}
    with ThreadPoolExecutor(8) as pool, httpx.Client(base_url=base_url, timeout=60) as c:
        results = list(pool.map(lambda _: c.post("/v1/rank", json=body).json(), range(16)))
    assert sum(r["encoded_titles"] for r in results) == len(arts)
    assert all(r["results"] == results[0]["results"] for r in results)


@pytest.fixture
def second_server(engine):
    """A separate app on the same engine, so deliberate failures do not touch the main server's counters."""
    from mtnews.serve.app import create_app
    from mtnews.serve.server import BackgroundServer

    app = create_app(engine)
    with BackgroundServer(app) as url, httpx.Client(base_url=url, timeout=30) as c:
        yield app, c


def test_real_bugs_stay_500(second_server, engine, monkeypatch):
    app, c = second_server

    def broken(*args, **kwargs):
        raise RuntimeError("a bug in the engine")

    monkeypatch.setattr(engine, "recommend", broken)
    r = c.post(f"/v1/users/{engine.users(0, 1)[0]}/recommend")
    assert r.status_code == 500, "a bug must not be disguised as a client error"
    assert "internal server error" in r.json()["detail"] and "a bug in the engine" not in r.text
    assert app.state.metrics.count("5") == 1
    assert c.get("/healthz").status_code == 200


def test_validation_errors_inside_handlers_are_4xx_but_counted(second_server, engine, monkeypatch):
    from pydantic import BaseModel, ValidationError

    class Strict(BaseModel):
        x: int

    def validates(*args, **kwargs):
        try:
            Strict(x="not a number")
        except ValidationError as e:
            raise e

    app, c = second_server
    monkeypatch.setattr(engine, "rank", validates)
    r = c.post("/v1/rank", json={"candidates": [1]})
    assert r.status_code == 422 and r.json()["detail"].startswith("invalid request: x:")
    assert app.state.metrics.unexpected_validation_errors == 1
    assert "mtnews_unexpected_validation_errors_total 1" in c.get("/metrics").text
