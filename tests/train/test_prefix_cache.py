"""The frozen-prefix cache and staged training, against the uncached full forward pass.

Exactness: with the frozen prefix in eval mode (always, since it is frozen), a step that starts at layer F
from cached hidden states must give the losses and gradients of a step through the whole BERT. The models
train in train mode, so dropout above F is active on both sides: the prefix draws no random numbers, so
both sides see the same masks when seeded alike.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from accelerate import Accelerator
from safetensors.torch import load_file

from mtnews.config import load_config
from mtnews.data.dataset import load_split
from mtnews.errors import ConfigError, MtnewsError
from mtnews.model.build import build_model
from mtnews.model.run import load_run
from mtnews.model.tokens import tokenize_titles
from mtnews.train import prefix_cache as pc
from mtnews.train.batching import BatchBuilder
from mtnews.train.loop import train
from mtnews.train.step import GradientEngine

REL = 1e-5


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def data(small_synth, tiny_bert):
    from transformers import AutoTokenizer

    split = load_split(small_synth, "train", 8)
    tokens = tokenize_titles(split.articles.titles, AutoTokenizer.from_pretrained(str(tiny_bert)), 12)
    return split, tokens, split.train_samples(3, seed=0)


def _cfg(tiny_bert, *extra):
    return load_config(None, ["--model.pretrained", str(tiny_bert), "--data.history_size", "8",
                              "--tasks.category", "0.7", "--tasks.sentiment", "0.4", *extra])


def _model(data, tiny_bert, *extra):
    torch.manual_seed(0)
    model, _ = build_model(_cfg(tiny_bert, *extra), data[0].articles.vocab)
    return model


def _acc(rank: int = 0, main: bool = True, local_main: bool = True, log: list | None = None):
    """Stands in for accelerate's Accelerator where only the process roles matter."""
    return SimpleNamespace(device=torch.device("cpu"), is_main_process=main, is_local_main_process=local_main,
                           process_index=rank, wait_for_everyone=lambda: log.append("wait") if log is not None else None)


def _builders(data, model, root: Path):
    split, tokens, samples = data
    cache = pc.open_prefix_cache(model, tokens, model.frozen_prefix, _acc(), root=root)
    plain = BatchBuilder(samples, split.histories, split.articles, tokens)
    cached = BatchBuilder(samples, split.histories, split.articles, tokens, prefix=cache)
    return plain, cached, cache


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach(), b.detach()
    return float((a - b).abs().max()) / max(float(b.abs().max()), 1e-12)


# --- the encode path ---------------------------------------------------------------------------------

@pytest.mark.parametrize("extra", [
    ("--model.freeze_layers", "1"),                                         # LoRA above layer 1
    ("--model.lora.enabled", "false", "--model.freeze_layers", "1"),        # full fine-tuning above 1
    ("--model.freeze_layers", "all", "--model.projection", "true"),         # cached [CLS] + projection
])
def test_cached_prefix_then_the_rest_equals_the_full_forward(data, tiny_bert, tmp_path, extra):
    model = _model(data, tiny_bert, *extra).eval()
    _, _, cache = _builders(data, model, tmp_path)
    idx = np.arange(2, 60)
    ids, mask = data[1].batch(idx)
    full = model.encode_news(ids, mask)
    got = model.encode_from_prefix(cache.batch(idx), mask, model.frozen_prefix)
    assert _rel(got, full) < REL
    if not cache.cls_only:  # ragged storage: the rows of title i are its first `length` token states
        assert cache.states.shape[0] == int(data[1].lengths.sum())
        direct = model.prefix_states(ids, mask, model.frozen_prefix)
        torch.testing.assert_close(cache.batch(idx)[mask.bool()], direct[mask.bool()], rtol=0, atol=1e-6)
        assert not cache.batch(idx)[~mask.bool()].any()  # padding is zeros (masked out)


def test_the_frozen_prefix_stays_in_eval_mode_while_training(data, tiny_bert):
    model = _model(data, tiny_bert, "--model.lora.enabled", "false", "--model.freeze_layers", "1").train()
    bert = model.backbone()
    assert not bert.embeddings.training and not bert.encoder.layer[0].training
    assert bert.encoder.layer[1].training and model.user_encoder.training
    # Nothing below F trains; the layer above does.
    assert not any(p.requires_grad for p in [*bert.embeddings.parameters(), *bert.encoder.layer[0].parameters()])
    assert all(p.requires_grad for p in bert.encoder.layer[1].parameters())
    # Dropout below F is off: two training-mode passes through the prefix agree exactly.
    ids, mask = data[1].batch(np.arange(2, 20))
    torch.manual_seed(1)
    a = model.prefix_states(ids, mask, 1)
    b = model.prefix_states(ids, mask, 1)
    assert torch.equal(a, b)


# --- exactness of a whole gradient step --------------------------------------------------------------

def _steps(model, builder, mode: str, space: str, n_steps: int = 2):
    """Per step: (losses, gradients) of the engine on 2 micro-batches, then an AdamW step."""
    cfg = _cfg_like(model, mode, space)
    engine = GradientEngine(model, model, Accelerator(cpu=True), 7, cfg=cfg)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    out = []
    model.train()
    for s in range(n_steps):
        torch.manual_seed(100 + s)
        batches = [builder(np.arange(start, start + 6)) for start in (12 * s, 12 * s + 6)]
        stats = engine.step(batches)
        out.append((stats.losses, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None},
                    stats.cosine))
        opt.step()
        opt.zero_grad(set_to_none=True)
    return out


def _cfg_like(model, mode, space):
    import copy

    cfg = copy.deepcopy(model.cfg)
    cfg.train.surgery, cfg.train.surgery_space = mode, space
    return cfg


@pytest.mark.parametrize("mode", ["project-both", "pcgrad"])
@pytest.mark.parametrize("space", ["params", "representation"])
def test_a_step_from_the_cache_equals_a_step_through_the_whole_bert(data, tiny_bert, tmp_path, mode, space):
    extra = ("--model.lora.enabled", "false", "--model.freeze_layers", "1")
    plain_model, cached_model = _model(data, tiny_bert, *extra), _model(data, tiny_bert, *extra)
    plain, _, _ = _builders(data, plain_model, tmp_path)
    _, cached, _ = _builders(data, cached_model, tmp_path)
    want, got = _steps(plain_model, plain, mode, space), _steps(cached_model, cached, mode, space)
    for (lw, gw, cw), (lg, gg, cg) in zip(want, got):
        assert lw.keys() == lg.keys() == {"main", "category", "sentiment"}
        for k in lw:
            assert lg[k] == pytest.approx(lw[k], rel=REL), k
        assert gw.keys() == gg.keys()
        assert any(".encoder.layer.1." in n for n in gw)  # the encoder above F got gradients
        for n in gw:
            assert _rel(gg[n], gw[n]) < REL, n
        assert cg == pytest.approx(cw, rel=1e-4, abs=1e-6)


def test_frozen_bert_without_projection_trains_the_heads_on_cached_cls(data, tiny_bert, tmp_path):
    extra = ("--model.freeze_layers", "all")
    plain_model, cached_model = _model(data, tiny_bert, *extra), _model(data, tiny_bert, *extra)
    assert cached_model.shared_parameters() == []  # nothing shared: every mode is a plain sum
    plain, _, _ = _builders(data, plain_model, tmp_path)
    _, cached, cache = _builders(data, cached_model, tmp_path)
    assert cache.cls_only and cache.states.shape == (len(data[1].lengths), 32)
    rows = np.arange(2, 30)
    held = cache.batch(rows)
    cache.make_resident("cpu")
    assert torch.equal(cache.batch(rows), held)
    want, got = _steps(plain_model, plain, "project-both", "params"), _steps(cached_model, cached, "project-both", "params")
    for (lw, gw, _), (lg, gg, _) in zip(want, got):
        assert {k: pytest.approx(v, rel=REL) for k, v in lw.items()} == lg
        assert set(gg) == {n for n, p in cached_model.named_parameters() if p.requires_grad}
        for n in gw:
            assert _rel(gg[n], gw[n]) < REL, n


# --- the cache on disk -----------------------------------------------------------------------------

@pytest.fixture
def built(data, tiny_bert, tmp_path, monkeypatch):
    model = _model(data, tiny_bert, "--model.freeze_layers", "1").eval()
    calls: list[int] = []
    real = pc.build_cache
    monkeypatch.setattr(pc, "build_cache", lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    cache = pc.open_prefix_cache(model, data[1], 1, _acc(), root=tmp_path)
    return SimpleNamespace(model=model, cache=cache, calls=calls, root=tmp_path,
                           reference=np.array(cache.states), open=lambda: pc.open_prefix_cache(model, data[1], 1, _acc(), root=tmp_path))


def test_a_resident_copy_gathers_the_same_batches(built, data):
    idx = np.array([5, 2, 40, 7, 7, 120])
    want = built.cache.batch(idx)
    built.cache.make_resident("cpu")  # on a GPU the same copy lives in device memory
    assert torch.equal(built.cache.batch(idx), want)
    assert not built.cache.fits_on(torch.device("cpu"))  # only GPUs get the copy in training


def test_the_cache_is_built_once_and_reused(built):
    again = built.open()
    assert built.calls == [1] and again.path == built.cache.path
    meta = json.loads((built.cache.path / "meta.json").read_text())
    assert meta["shape"] == list(built.reference.shape) and meta["dtype"] == "torch.float32"
    assert meta["bytes"] == built.cache.nbytes == built.reference.nbytes


@pytest.mark.parametrize("damage", ["truncated", "flipped byte", "empty", "meta garbage", "meta missing"])
def test_a_damaged_cache_is_rebuilt(built, damage):
    states, meta = built.cache.path / "states.npy", built.cache.path / "meta.json"
    if damage == "truncated":
        states.write_bytes(states.read_bytes()[: states.stat().st_size // 2])
    elif damage == "flipped byte":
        raw = bytearray(states.read_bytes())
        raw[-7] ^= 0x40
        states.write_bytes(bytes(raw))
    elif damage == "empty":
        states.write_bytes(b"")
    elif damage == "meta garbage":
        meta.write_text("{not json")
    else:
        meta.unlink()
    del built.cache
    fresh = built.open()
    assert built.calls == [1, 1]
    assert np.array_equal(np.asarray(fresh.states), built.reference)


def test_the_key_follows_the_prefix_weights_and_depth(built, data):
    tokens = data[1]
    key = pc.cache_key(built.model, tokens, 1, torch.float32)
    assert pc.cache_key(built.model, tokens, 0, torch.float32) != key
    assert pc.cache_key(built.model, tokens, 1, torch.bfloat16) != key
    with torch.no_grad():
        built.model.backbone().encoder.layer[1].output.dense.weight.add_(1.0)  # above F: same prefix
    assert pc.cache_key(built.model, tokens, 1, torch.float32) == key
    with torch.no_grad():
        built.model.backbone().encoder.layer[0].output.dense.weight.add_(1.0)  # inside the prefix
    assert pc.cache_key(built.model, tokens, 1, torch.float32) != key


def test_too_little_disk_space_is_one_clear_error(data, tiny_bert, tmp_path, monkeypatch):
    model = _model(data, tiny_bert, "--model.freeze_layers", "1")
    monkeypatch.setattr(pc.shutil, "disk_usage", lambda p: SimpleNamespace(total=1 << 30, used=1 << 30, free=1 << 20))
    with pytest.raises(MtnewsError) as e:
        pc.open_prefix_cache(model, data[1], 1, _acc(), root=tmp_path / "c")
    msg = str(e.value)
    assert str(tmp_path / "c") in msg and "MiB free" in msg and "train.prefix_cache: false" in msg
    assert not (tmp_path / "c").exists() or not any((tmp_path / "c").iterdir())


def test_other_ranks_wait_and_never_write(built, data, monkeypatch):
    monkeypatch.setattr(pc, "build_cache", lambda *a, **k: pytest.fail("a non-main rank wrote the cache"))
    log: list = []
    cache = pc.open_prefix_cache(built.model, data[1], 1, _acc(1, main=False, local_main=False, log=log),
                                 root=built.root)
    assert log == ["wait", "wait"] and np.array_equal(np.asarray(cache.states), built.reference)
    shutil.rmtree(built.cache.path)  # rank 0 could not write where this rank looks: one clear error
    with pytest.raises(MtnewsError, match="process 1 cannot read the prefix cache"):
        pc.open_prefix_cache(built.model, data[1], 1, _acc(1, main=False, local_main=False), root=built.root)


# --- staged training, checkpoints and exact resume ----------------------------------------------------

STAGES = "[{name: warm, steps: 4, freeze_layers: all, batch_size: 8, head_lr: 0.01}, {name: tune, steps: 4}]"


def _staged(tiny_bert, cache: bool, *extra):
    return _cfg(tiny_bert, "--model.lora.enabled", "false", "--model.freeze_layers", "1", "--model.projection", "true",
                "--train.device", "cpu", "--train.batch_size", "4", "--train.lr", "1e-3", "--train.head_lr", "3e-3",
                "--train.eval_every", "0", "--data.eval_impressions", "40", "--train.checkpoint_every", "2",
                "--train.keep_checkpoints", "10", "--train.seed", "3", "--train.stages", STAGES,
                "--train.prefix_cache", str(cache).lower(), *extra)


def _rows(path: Path) -> list[dict]:
    import csv

    with path.open() as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def staged(small_synth, tiny_bert, tmp_path_factory):
    root = tmp_path_factory.mktemp("staged")
    train(_staged(tiny_bert, True), small_synth, root / "cached", progress=False)
    train(_staged(tiny_bert, False), small_synth, root / "plain", progress=False)
    return root


def test_stages_share_one_run_and_show_the_boundary(staged):
    run = staged / "cached"
    rows = _rows(run / "metrics.csv")
    assert [r["stage"] for r in rows] == ["warm"] * 4 + ["tune"] * 4
    assert [int(r["step"]) for r in rows] == list(range(1, 9))
    evals = _rows(run / "eval.csv")
    assert [(int(r["step"]), r["stage"], r["split"]) for r in evals] == [  # every stage ends evaluated
        (4, "warm", "holdout"), (8, "tune", "holdout"), (8, "tune", "validation")]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["stages"] == [{"name": "warm", "first_step": 1, "last_step": 4},
                                 {"name": "tune", "first_step": 5, "last_step": 8}]
    assert set(summary["prefix_cache"]) == {"1", "2"}  # layer-1 states and (F = all, 2 layers) [CLS] vectors
    assert all(c["bytes"] > 0 for c in summary["prefix_cache"].values())
    # One checkpoint series with the same tensors throughout; BERT moves only in the second stage.
    ck = {s: load_file(str(run / "checkpoints" / f"step-{s}" / "model.safetensors")) for s in (2, 4, 6, 8)}
    assert len({tuple(sorted(c)) for c in ck.values()}) == 1
    bert = [k for k in ck[2] if ".encoder.layer.1." in k]
    assert bert and all(torch.equal(ck[2][k], ck[4][k]) for k in bert)
    assert not all(torch.equal(ck[4][k], ck[6][k]) for k in bert)
    head = "projection.weight"
    assert not torch.equal(ck[2][head], ck[4][head])
    assert json.loads((run / "checkpoints" / "step-4" / "state.json").read_text())["stage"] == 0
    assert json.loads((run / "checkpoints" / "step-6" / "state.json").read_text())["stage"] == 1


def test_staged_run_with_the_cache_matches_the_run_without(staged):
    a, b = _rows(staged / "cached" / "metrics.csv"), _rows(staged / "plain" / "metrics.csv")
    for ra, rb in zip(a, b):
        for k in ("loss", "loss_main", "loss_category", "loss_sentiment", "grad_norm"):
            assert float(ra[k]) == pytest.approx(float(rb[k]), rel=REL), (ra["step"], k)
    # The weights agree closely, not to 1e-5: AdamW divides by the root of tiny second moments, which
    # magnifies rounding in gradients that are zero in exact arithmetic (attention key biases).
    wa, wb = (load_file(str(staged / r / "final" / "model.safetensors")) for r in ("cached", "plain"))
    assert max(float((wa[k] - wb[k]).abs().max()) for k in wa) < 1e-3


def _rewind(run: Path, step: int) -> None:
    """What a run killed right after its step-`step` checkpoint leaves behind (see tests/train/ddp_worker.py)."""
    for ckpt in (run / "checkpoints").glob("step-*"):
        if int(ckpt.name.split("-")[1]) > step:
            shutil.rmtree(ckpt)
    shutil.rmtree(run / "final")
    if json.loads((run / "best" / "step.json").read_text())["step"] > step:
        shutil.rmtree(run / "best")
    (run / "summary.json").unlink()


@pytest.mark.parametrize("at", [2, 4, 6])  # inside the first stage, at the boundary, inside the second
def test_resume_in_either_stage_is_exact(staged, small_synth, tiny_bert, tmp_path, at):
    run = tmp_path / "run"
    shutil.copytree(staged / "cached", run)
    _rewind(run, at)
    train(_staged(tiny_bert, True), small_synth, run, resume=True, progress=False)
    want = load_file(str(staged / "cached" / "final" / "model.safetensors"))
    got = load_file(str(run / "final" / "model.safetensors"))
    assert all(torch.equal(want[k], got[k]) for k in want)
    cols = ("step", "stage", "loss", "loss_main", "grad_norm", "lr")
    assert [[r[c] for c in cols] for r in _rows(run / "metrics.csv")] == \
           [[r[c] for c in cols] for r in _rows(staged / "cached" / "metrics.csv")]


def test_a_staged_run_loads_for_inference(staged, small_synth):
    from mtnews.evaluate.split_scoring import score_split

    run = load_run(staged / "cached")
    assert run.model.projection is not None and run.cfg.train.stages[0].name == "warm"
    m = score_split(small_synth, "validation", run=staged / "cached")
    assert 0 <= m["auc"] <= 1
    # best/ may come from the first stage: it holds every weight all the same
    best = load_file(str(staged / "cached" / "best" / "model.safetensors"))
    assert set(best) == set(run.model.weight_parameters())


@pytest.mark.parametrize("overrides,needle", [
    (["--train.stages", "[{steps: 2, freeze_layers: 0}]", "--model.freeze_layers", "1"], "below model.freeze_layers"),
    (["--train.stages", "[{steps: 2, epochs: 1}]"], "exactly one of steps or epochs"),
    (["--train.stages", "[{name: a, steps: 2}, {name: a, steps: 2}]"], "names two stages"),
    (["--train.stages", "[{steps: 2, surgery: magic}]"], "train.stages[0].surgery"),
    (["--train.stages", "[{steps: 2, lr: 0}]"], "train.stages[0].lr: must be > 0"),
    (["--train.stages", "[{steps: 2, prefix_cache: true}]", "--model.lora.enabled", "false"], "no frozen prefix"),
    (["--model.freeze_layers", "most"], "model.freeze_layers: expected a number of layers >= 0 or 'all'"),
    (["--train.prefix_cache", "true", "--model.lora.enabled", "false"], "train.prefix_cache"),
    (["--train.stages", "[{steps: 2, history_size: 31}]", "--data.history_size", "30"],
     "train.stages[0].history_size: expected a number of clicks in 1..data.history_size (30), got 31"),
    (["--train.stages", "[{steps: 2, history_size: 0}]"], "train.stages[0].history_size"),
    (["--train.stages", "[{steps: 2, select: false}]"], "every stage has select: false"),
    (["--train.stages", "[{steps: 2, select: maybe}, {steps: 2}]"], "train.stages[0].select: expected true or false"),
])
def test_bad_stage_configs_are_one_clear_error(overrides, needle):
    with pytest.raises(ConfigError) as e:
        load_config(None, overrides)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_the_training_curve_marks_the_stage_boundary(staged, tmp_path):
    from mtnews.train.curve import plot_training_curve, stage_boundaries
    from mtnews.train.logs import read_csv

    assert stage_boundaries(read_csv(staged / "cached" / "metrics.csv")) == [(1, 4, "warm"), (5, 8, "tune")]
    assert stage_boundaries([{"step": "1", "stage": "train"}, {"step": "2", "stage": "train"}]) == []
    png = plot_training_curve(staged / "cached", tmp_path / "c.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_stage_trains_on_its_history_size_and_the_run_scores_with_the_full_one(small_synth, tiny_bert, tmp_path,
                                                                                 monkeypatch):
    import mtnews.train.loop as loop

    widths = []

    class Recording(BatchBuilder):
        def __call__(self, idx):
            batch = super().__call__(idx)
            widths.append(batch.hist_pos.shape[1])
            return batch

    monkeypatch.setattr(loop, "BatchBuilder", Recording)
    stages = "[{name: warm, steps: 2, freeze_layers: all, batch_size: 8}, {name: tune, steps: 2, history_size: 3}]"
    cfg = _staged(tiny_bert, True, "--train.stages", stages, "--train.checkpoint_every", "100")
    train(cfg, small_synth, tmp_path / "run", progress=False)
    assert widths == [8, 8, 3, 3]  # data.history_size 8 in the first stage, the tune stage's 3 after
    assert load_run(tmp_path / "run").cfg.data.history_size == 8  # inference reads all 8


@pytest.mark.parametrize("select", [None, False])
def test_a_stage_with_select_false_never_makes_best(small_synth, tiny_bert, tmp_path, monkeypatch, select):
    import mtnews.train.loop as loop

    real = loop.Trainer.evaluate

    def falling(self, name):  # the holdout gets worse at every evaluation, so plain selection keeps step 2
        m = real(self, name)
        return {**m, "auc": 1.0 - self.step / 100} if name == "holdout" else m

    monkeypatch.setattr(loop.Trainer, "evaluate", falling)
    flag = "" if select is None else f", select: {str(select).lower()}"
    stages = f"[{{name: warm, steps: 2, freeze_layers: all, batch_size: 8{flag}}}, {{name: tune, steps: 4, eval_every: 2}}]"
    cfg = _staged(tiny_bert, True, "--train.stages", stages, "--train.checkpoint_every", "100")
    summary = train(cfg, small_synth, tmp_path / "run", progress=False)
    holdout = [int(r["step"]) for r in _rows(tmp_path / "run" / "eval.csv") if r["split"] == "holdout"]
    assert holdout == [2, 4, 6]  # the warm stage is still scored and logged
    assert summary["best_step"] == (2 if select is None else 4)
    best = load_file(str(tmp_path / "run" / "best" / "model.safetensors"))
    final = load_file(str(tmp_path / "run" / "final" / "model.safetensors"))
    assert any(not torch.equal(best[k], final[k]) for k in best)  # best/ is step 4's, not the end


def test_a_run_cut_inside_a_select_false_stage_keeps_its_end_as_best(small_synth, tiny_bert, tmp_path):
    stages = "[{name: warm, steps: 3, freeze_layers: all, batch_size: 8, select: false}, {name: tune, steps: 2}]"
    cfg = _staged(tiny_bert, True, "--train.stages", stages, "--train.max_steps", "3")
    summary = train(cfg, small_synth, tmp_path / "run", progress=False)
    assert summary["steps"] == 3 and summary["best_step"] == 3  # the fallback: best/ is the last step's weights
    best = load_file(str(tmp_path / "run" / "best" / "model.safetensors"))
    final = load_file(str(tmp_path / "run" / "final" / "model.safetensors"))
    assert all(torch.equal(best[k], final[k]) for k in best)


def test_stages_lay_out_on_the_step_axis_and_max_steps_cuts_them():
    from mtnews.train.stages import plan_stages

    stages = "[{name: a, epochs: 2, batch_size: 10, freeze_layers: all}, {name: b, steps: 7, lr: 0.5}]"
    cfg = load_config(None, ["--train.stages", stages, "--train.batch_size", "4"])
    a, b = plan_stages(cfg, 105, 1, "behaviors.parquet")
    assert (a.start, a.steps, a.steps_per_epoch, a.epoch_base, a.batch_size, a.freeze_layers) == (0, 20, 10, 0, 10, "all")
    assert (b.start, b.end, b.steps_per_epoch, b.epoch_base, b.batch_size, b.lr) == (20, 27, 26, 2, 4, 0.5)
    assert b.freeze_layers == 0 and b.head_lr == cfg.train.head_lr  # what a stage leaves out is the run's
    assert a.history_size == b.history_size == cfg.data.history_size
    cfg.train.stages[1].history_size = 5
    assert [s.history_size for s in plan_stages(cfg, 105, 1, "b")] == [cfg.data.history_size, 5]
    cfg.train.stages[1].history_size = None
    cfg.train.max_steps = 24
    assert [(s.name, s.steps) for s in plan_stages(cfg, 105, 1, "b")] == [("a", 20), ("b", 4)]
    cfg.train.max_steps = 6
    assert [(s.name, s.steps) for s in plan_stages(cfg, 105, 1, "b")] == [("a", 6)]
    with pytest.raises(MtnewsError, match="stage 'a'"):
        plan_stages(cfg, 9, 1, "behaviors.parquet")  # fewer samples than one batch of stage a
