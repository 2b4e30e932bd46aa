"""Building MTRec from a config, resolving `model.pretrained`, and saving/loading trainable weights."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

from mtnews.config import load_config
from mtnews.data.articles import load_articles
from mtnews.errors import CheckpointError, ConfigError
from mtnews.model.build import build_model, load_weights, save_weights, trainable_state
from mtnews.model.run import run_weights
from mtnews.model.pretrained import resolve_pretrained


@pytest.fixture
def articles(tiny_dataset):
    return load_articles(tiny_dataset() / "articles.parquet")


def _cfg(tiny_bert, *extra):
    return load_config(None, ["--model.pretrained", str(tiny_bert), *extra])


def _trainable(model):
    return {n for n, p in model.named_parameters() if p.requires_grad}


def test_lora_trains_adapters_and_heads_only(tiny_bert, articles):
    model, tok = build_model(_cfg(tiny_bert, "--model.lora.r", "4"), articles.vocab)
    names = _trainable(model)
    bert = {n for n in names if n.startswith("bert.")}
    assert bert and all("lora_" in n for n in bert)
    assert all(("query" in n or "value" in n) for n in bert)  # the default target modules
    assert {"user_encoder.query", "user_encoder.empty_user", "category_head.weight", "sentiment_head.weight"} <= names
    assert model.category_head.out_features == articles.num_categories
    assert model.ner_head is None  # tasks.ner defaults to 0
    assert tok("a title")["input_ids"][0] == tok.cls_token_id


def test_full_fine_tune_with_frozen_lower_layers(tiny_bert, articles):
    model, _ = build_model(_cfg(tiny_bert, "--model.lora.enabled", "false", "--model.freeze_layers", "1"), articles.vocab)
    names = _trainable(model)
    assert not any("embeddings" in n or ".layer.0." in n for n in names)
    assert any(".layer.1." in n for n in names)
    assert set(trainable_state(model)) == names
    # shared = the trainable BERT parameters; heads are everything else that trains
    shared = {id(p) for p in model.shared_parameters()}
    heads = {id(p) for ps in model.head_parameters().values() for p in ps}
    assert not shared & heads
    assert shared | heads == {id(p) for p in model.parameters() if p.requires_grad}


def test_save_and_load_round_trip_restores_exactly(tiny_bert, articles, tmp_path):
    cfg = _cfg(tiny_bert)
    torch.manual_seed(0)
    a, _ = build_model(cfg, articles.vocab)
    with torch.no_grad():
        for p in a.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p))  # make the weights differ from any fresh initialisation
    save_weights(a, tmp_path / "w.safetensors")
    saved = load_file(str(tmp_path / "w.safetensors"))
    assert set(saved) == _trainable(a)  # only trainable tensors are written; frozen BERT comes from pretrained
    torch.manual_seed(1)
    b, _ = build_model(cfg, articles.vocab)
    load_weights(b, tmp_path / "w.safetensors")
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def test_load_weights_errors(tiny_bert, articles, tmp_path):
    model, _ = build_model(_cfg(tiny_bert), articles.vocab)
    with pytest.raises(CheckpointError, match="not found"):
        load_weights(model, tmp_path / "missing.safetensors")
    p = tmp_path / "w.safetensors"
    save_weights(model, p)
    p.write_bytes(p.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="corrupt"):
        load_weights(model, p)
    # weights of another model (LoRA off) do not silently half-load
    other, _ = build_model(_cfg(tiny_bert, "--model.lora.enabled", "false"), articles.vocab)
    save_weights(other, p)
    with pytest.raises(CheckpointError, match="do not match"):
        load_weights(model, p)
    # right names, wrong shape
    state = trainable_state(model)
    state["category_head.bias"] = torch.zeros(99)
    save_file(state, str(p))
    with pytest.raises(CheckpointError, match="shape"):
        load_weights(model, p)


def test_run_weights_preference(tiny_bert, articles, tmp_path):
    run = tmp_path / "run"
    with pytest.raises(CheckpointError, match="no trained weights"):
        run_weights(run)
    model, _ = build_model(_cfg(tiny_bert), articles.vocab)
    for sub in ("checkpoints/step-5", "checkpoints/step-40", "checkpoints/step-100", "final"):
        save_weights(model, run / sub / "model.safetensors")
    assert run_weights(run) == run / "final" / "model.safetensors"
    save_weights(model, run / "best" / "model.safetensors")
    assert run_weights(run) == run / "best" / "model.safetensors"


def test_run_weights_falls_back_to_the_numerically_latest_checkpoint(tiny_bert, articles, tmp_path):
    model, _ = build_model(_cfg(tiny_bert), articles.vocab)
    for sub in ("step-5", "step-40", "step-100"):
        save_weights(model, tmp_path / "checkpoints" / sub / "model.safetensors")
    assert run_weights(tmp_path) == tmp_path / "checkpoints" / "step-100" / "model.safetensors"


def test_resolve_pretrained(tiny_bert, tmp_path):
    assert resolve_pretrained(str(tiny_bert)) == str(tiny_bert)
    with pytest.raises(ConfigError, match="does not exist"):
        resolve_pretrained(str(tmp_path / "no" / "such" / "model"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no config.json"):
        resolve_pretrained(str(tmp_path / "empty"))
    assert resolve_pretrained("org/some-hub-model") == "org/some-hub-model"  # left to the hub cache
