"""The published contract (/openapi.json) against every answer of the server, checked by schemathesis.

Schemathesis is an independent OpenAPI client: it generates valid and invalid requests from the schema
alone and checks each answer against it (`--checks all`: status declared, body and headers as declared,
valid requests accepted, invalid ones rejected, 405s with Allow, ...). It runs as the `st run` command
line in a subprocess, because that is what runs every phase, stateful included; the pytest integration
runs the others only.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from mtnews.serve.schemas import ID_MAX, MAX_CATEGORY_CHARS, MAX_TITLE_CHARS

ST_CONFIG = Path(__file__).with_name("schemathesis.toml")  # examples, seed and timeouts only
# Neither --max-list's default nor conftest's: the schema must carry the value the server was given.
CONTRACT_MAX_LIST = 7
CONTRACT_MAX_BODY = 1024 * 1024
# A hard stop far above the 8-9 s this takes (at load 6-8 on 2 cores), so a hang fails instead of stalling CI.
ST_SECONDS = 150
ERROR_REF = "#/components/schemas/ErrorOut"


def largest_valid_body(max_list: int) -> bytes:
    """The longest body schemathesis could send for a schema-valid /v1/rank request.

    Full lists; ids written as floats (2.0 is the integer 2 to JSON Schema); the longest titles and
    categories, of astral characters, which json.dumps escapes as 12 bytes each (a surrogate pair).
    """
    wide_id = float(ID_MAX)
    article = {"article_id": wide_id, "title": "\U0001f4a5" * MAX_TITLE_CHARS,
               "category_str": "\U0001f4a5" * MAX_CATEGORY_CHARS}
    body = {"history": [wide_id] * max_list, "candidates": [wide_id] * max_list, "top_k": float(max_list),
            "articles": [article] * max_list}
    return json.dumps(body).encode()


@pytest.fixture(scope="module")
def contract_server(engine):
    """The tiny model behind its own app (own limits and counters), on a loopback port.

    Its own engine too: schemathesis posts events and run-time articles, which change an engine's live
    signals and index, and other tests check those of the shared one against references.
    """
    from mtnews.data.live_signals import LiveSignals
    from mtnews.recommender import Recommender
    from mtnews.serve.app import create_app
    from mtnews.serve.server import BackgroundServer

    engine = Recommender(engine.run, engine.articles, engine.histories, source=engine.source, clock=engine.clock(),
                         signals=LiveSignals(engine.live.options, engine.live.articles))

    # A schema cannot carry a byte limit (JSON allows any amount of whitespace), so a 413 stays possible
    # for a schema-valid request; with this limit, none that schemathesis can generate reaches it.
    assert len(largest_valid_body(CONTRACT_MAX_LIST)) < CONTRACT_MAX_BODY
    app = create_app(engine, max_list=CONTRACT_MAX_LIST, max_body_bytes=CONTRACT_MAX_BODY)
    with BackgroundServer(app) as url:
        yield app, url


def _operations(spec: dict):
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            yield f"{method.upper()} {path}", op


def test_every_error_status_is_declared_with_the_one_error_model(contract_server):
    app, url = contract_server
    spec = httpx.get(f"{url}/openapi.json").json()
    schemas = spec["components"]["schemas"]
    assert "HTTPValidationError" not in schemas and "ValidationError" not in schemas
    for name, op in _operations(spec):
        codes = {int(c) for c in op["responses"]}
        assert {400, 413, 500} <= codes, name  # the body limit answers these before any routing
        if op.get("parameters") or op.get("requestBody"):
            assert 422 in codes, name
        for code in codes - {200}:
            content = op["responses"][str(code)]["content"]
            assert content == {"application/json": {"schema": {"$ref": ERROR_REF}}}, (name, code)
    paths = spec["paths"]
    for path, method in [("/v1/rank", "post"), ("/v1/users/{user_id}/recommend", "post"),
                         ("/v1/users/{user_id}", "get"), ("/v1/articles/{article_id}", "get")]:
        assert "404" in paths[path][method]["responses"], path
    assert "409" in paths["/v1/rank"]["post"]["responses"]
    error = schemas["ErrorOut"]
    assert error["required"] == ["detail"] and error["additionalProperties"] is False
    assert set(error["properties"]) == {"detail", "errors", "unknown_ids", "user_id"}


def test_schema_carries_the_configured_bounds(contract_server):
    app, url = contract_server
    spec = httpx.get(f"{url}/openapi.json").json()
    rank = spec["components"]["schemas"]["RankRequest"]["properties"]
    for field in ("history", "candidates", "articles"):
        assert rank[field]["maxItems"] == CONTRACT_MAX_LIST, field
    top_k = next(s for s in rank["top_k"]["anyOf"] if s.get("type") == "integer")
    assert (top_k["minimum"], top_k["maximum"]) == (1, CONTRACT_MAX_LIST)
    assert rank["candidates"]["items"]["maximum"] == ID_MAX
    # FastAPI writes schema bounds as doubles: the id bound must survive that exactly (2**63 - 1 did not).
    assert float(ID_MAX) == ID_MAX and float(ID_MAX + 1) != float(ID_MAX)
    for name, op in _operations(spec):
        for p in op.get("parameters", []):
            if p["name"] in ("user_id", "article_id", "offset"):
                assert (p["schema"]["minimum"], p["schema"]["maximum"]) == (0, ID_MAX), (name, p["name"])
    # The published example is valid under the limits (schema-driven clients send it as it is).
    example = spec["components"]["schemas"]["RankRequest"]["examples"][0]
    r = httpx.post(f"{url}/v1/rank", json=example)
    assert r.status_code == 200, r.text
    # The bounds are the server's: one past each is refused, the bound itself accepted.
    ids = example["candidates"]
    over = httpx.post(f"{url}/v1/rank", json={"candidates": (ids * CONTRACT_MAX_LIST)[: CONTRACT_MAX_LIST + 1]})
    assert over.status_code == 422 and f"at most {CONTRACT_MAX_LIST} items" in over.json()["detail"]
    full = httpx.post(f"{url}/v1/rank", json={"candidates": (ids * CONTRACT_MAX_LIST)[:CONTRACT_MAX_LIST]})
    assert full.status_code == 200, full.text
    assert httpx.get(f"{url}/v1/articles/{ID_MAX}").status_code == 404
    assert httpx.get(f"{url}/v1/articles/{ID_MAX + 1}").status_code == 422


def test_schemathesis_finds_no_failures(contract_server, tmp_path):
    app, url = contract_server
    unexpected_before = app.state.metrics.unexpected_validation_errors
    # cwd: schemathesis keeps its example database and reports in the working directory.
    cmd = [sys.executable, "-m", "schemathesis.cli", "--config-file", str(ST_CONFIG), "run",
           f"{url}/openapi.json", "--checks", "all", "--report", "json", "--report-dir", str(tmp_path),
           "--no-color"]
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=ST_SECONDS)
    seconds = time.perf_counter() - start
    out = done.stdout[-6000:] + done.stderr[-2000:]
    reports = list(tmp_path.glob("*.json"))
    assert len(reports) == 1, out
    report = json.loads(reports[0].read_text())
    print(f"schemathesis {report['schemathesis_version']}: {report['test_cases']['generated']} cases, "
          f"{report['test_cases']['unique_failures']} failures, {seconds:.1f}s")
    assert done.returncode == 0, out
    assert report["failures"] == [] and report["errors"] == [], out
    assert report["stop_reason"] == "completed" and report["complete"], out
    ops = report["operations"]
    published = len(list(_operations(app.openapi())))
    assert ops["tested"] == ops["total"] == published and ops["errored"] == ops["skipped"] == 0, ops
    assert {name: p["status"] for name, p in report["phases"].items()} == {
        "examples": "success", "coverage": "success", "fuzzing": "success", "stateful": "success"}
    assert report["test_cases"]["generated"] >= 300, report["test_cases"]  # bounded, but not trivially small
    assert app.state.metrics.count("5") == 0
    assert app.state.metrics.unexpected_validation_errors == unexpected_before
