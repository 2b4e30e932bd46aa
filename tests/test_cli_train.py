"""Bad input to `mtnews train` / `mtnews evaluate --run`: a non-zero exit and one clear line on stderr, never a
traceback. Each case runs the real CLI in a subprocess; independent cases run concurrently to save wall time."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


def _mtnews(*args: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.Popen([sys.executable, "-m", "mtnews", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _assert_one_line_error(proc: subprocess.Popen, *needles: str) -> str:
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 2, (proc.returncode, err[-2000:])
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err  # nothing else on stderr: no library warnings, no progress bars
    assert lines[0].startswith("mtnews: error: "), lines
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def checkpointed_run(small_synth, tiny_bert, tmp_path_factory) -> Path:
    """A real two-step run with checkpoints at steps 1 and 2 (made in-process: cheaper than a subprocess)."""
    from mtnews.config import load_config
    from mtnews.train.loop import train

    run = tmp_path_factory.mktemp("cli") / "run"
    cfg = load_config(None, ["--model.pretrained", str(tiny_bert), "--train.device", "cpu", "--train.max_steps", "2",
                             "--train.checkpoint_every", "1", "--train.batch_size", "4", "--data.history_size", "4",
                             "--model.max_title_length", "12", "--data.eval_impressions", "10"])
    train(cfg, small_synth, run, progress=False)
    assert (run / "checkpoints" / "step-2" / "optimizer.pt").is_file()
    return run


@pytest.mark.slow  # six CLI subprocesses, each importing torch: ~30 s on 2 cores
def test_bad_input_exits_with_one_clear_line(small_synth, tiny_bert, checkpointed_run, tmp_path):
    common = ["--data", str(small_synth), "--no-progress", "--train.device", "cpu"]
    runs = {}
    for name in ("model.safetensors", "optimizer.pt"):
        copy = tmp_path / f"corrupt-{name}"
        shutil.copytree(checkpointed_run, copy)
        f = copy / "checkpoints" / "step-2" / name
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])  # truncated, as by a full disk
        runs[name] = copy
    (tmp_path / "not-a-run").mkdir()
    procs = {
        "bad value": _mtnews("train", *common, "--out", str(tmp_path / "a"), "--train.surgery", "magic"),
        "unknown key": _mtnews("train", *common, "--out", str(tmp_path / "b"), "--train.lrr", "1"),
        "missing model": _mtnews("train", *common, "--out", str(tmp_path / "c"),
                                 "--model.pretrained", str(tmp_path / "no" / "such" / "bert")),
        "weights": _mtnews("train", *common, "--out", str(runs["model.safetensors"]), "--resume"),
        "optimizer": _mtnews("train", *common, "--out", str(runs["optimizer.pt"]), "--resume"),
        "evaluate": _mtnews("evaluate", "--data", str(small_synth), "--run", str(tmp_path / "not-a-run"),
                            "--device", "cpu"),
    }
    try:
        _assert_one_line_error(procs["bad value"], "train.surgery", "magic")
        _assert_one_line_error(procs["unknown key"], "train.lrr")
        _assert_one_line_error(procs["missing model"], "model.pretrained", "does not exist")
        _assert_one_line_error(procs["weights"], "step-2", "model.safetensors")
        _assert_one_line_error(procs["optimizer"], "step-2", "corrupt")
        _assert_one_line_error(procs["evaluate"], "not-a-run", "config.yaml")
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
    # A failed start leaves no half-made run behind.
    assert not (tmp_path / "a").exists() and not (tmp_path / "c" / "checkpoints").exists()


def test_resume_with_a_changed_override_is_refused(tmp_path, capsys):
    """Regression: --resume used to ignore new overrides silently (it replays the saved config)."""
    from mtnews.cli import main
    from mtnews.config import load_config

    out = tmp_path / "run"
    out.mkdir()
    (out / "config.yaml").write_text(load_config(None, ["--train.max_steps", "20"]).to_yaml())
    rc = main(["train", "--data", str(tmp_path), "--out", str(out), "--resume", "--train.max_steps", "40"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1
    assert "train.max_steps (20 -> 40)" in err
