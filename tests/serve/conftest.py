"""A tiny trained run on the small synthetic dataset, served once per session on a free loopback port."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

# Small limits so the oversized-input tests send small bodies (tests read them back from app.state).
MAX_LIST = 64
MAX_BODY = 32 * 1024


@pytest.fixture(scope="session")
def served_run(tmp_path_factory, small_synth, tiny_bert) -> Path:
    from mtnews.config import load_config
    from mtnews.train.loop import train

    out = tmp_path_factory.mktemp("serve") / "run"
    cfg = load_config(None, ["--model.pretrained", str(tiny_bert), "--train.max_steps", "10",
                             "--train.eval_every", "0", "--train.device", "cpu"])
    train(cfg, small_synth, out, progress=False)
    return out


@pytest.fixture(scope="session")
def engine(served_run, small_synth):
    from mtnews.recommender import Recommender

    # Historical data: the clock is pinned to the log's last impression, so fresh pools are not empty.
    return Recommender.from_run(served_run, small_synth, "validation", device="cpu", cache_size=100,
                                clock="last-impression")


@pytest.fixture(scope="session")
def app(engine):
    from mtnews.serve.app import create_app

    return create_app(engine, max_list=MAX_LIST, max_body_bytes=MAX_BODY)


@pytest.fixture(scope="session")
def base_url(app):
    from mtnews.serve.server import BackgroundServer

    with BackgroundServer(app) as url:
        assert url.startswith("http://127.0.0.1:")
        yield url


@pytest.fixture
def client(base_url):
    with httpx.Client(base_url=base_url, timeout=30) as c:
        yield c
