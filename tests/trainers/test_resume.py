"""Faults: a fit killed with SIGKILL in the middle of an epoch resumes with `mmctx fit
--ckpt_path last` and ends exactly where the uninterrupted run ends (same seed); the
checkpoint left by the kill is complete."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
TESTS = REPO / "tests"  # fault_callbacks.py, imported by the child

def fit(root: Path, save_dir: Path, tmp: Path, *extra: str) -> subprocess.CompletedProcess:
    args = [
        sys.executable, "-m", "mmctx.cli", "fit", f"--config={REPO / 'configs/default.yaml'}",
        f"--data.root={root}", "--data.num_train=40", "--data.num_val=10", "--data.num_test=10",
        "--data.data_seed=0", "--data.num_workers=0", "--data.batch_size=8",
        "--trainer.max_epochs=3", "--trainer.enable_progress_bar=false", "--trainer.log_every_n_steps=1",
        f"--trainer.logger.init_args.save_dir={save_dir}", *extra,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{TESTS}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return subprocess.run(args, cwd=tmp, env=env, capture_output=True, text=True, timeout=600)


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_reaches_the_uninterrupted_result(default_root, tmp_path):
    kill = '--trainer.callbacks+={"class_path": "fault_callbacks.SigkillAt", "init_args": {"step": 8}}'
    # 40 samples / batch 8 = 5 steps per epoch, 3 epochs; the kill comes at step 8, in epoch 2
    straight = fit(default_root, tmp_path / "straight", tmp_path)
    assert straight.returncode == 0, straight.stderr[-3000:]
    reference = weights(tmp_path / "straight" / "default" / "version_0" / "checkpoints" / "last.ckpt")

    # 1. from the epoch-end checkpoint: `--ckpt_path last`
    killed = fit(default_root, tmp_path / "killed", tmp_path, kill)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    run = tmp_path / "killed" / "default" / "version_0"
    last = run / "checkpoints" / "last.ckpt"
    state = torch.load(last, map_location="cpu", weights_only=True)  # complete, and no pickled code
    assert state["epoch"] == 0 and state["global_step"] == 5  # the end of epoch 1, not the kill point
    assert not list(run.glob("checkpoints/.*.tmp"))
    resumed = fit(default_root, tmp_path / "killed", tmp_path, "--ckpt_path=last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"--ckpt_path last → {last}" in resumed.stdout
    assert not (tmp_path / "killed" / "default" / "version_1").exists()  # it went on in its own folder
    assert torch.load(last, map_location="cpu", weights_only=True)["global_step"] == 15
    assert_same(weights(last), reference)

    # 2. from a checkpoint taken in the middle of epoch 2 (every 3 steps: the last one at step 6)
    every3 = ('--trainer.callbacks+={"class_path": "lightning.pytorch.callbacks.ModelCheckpoint", "init_args": '
              f'{{"dirpath": "{tmp_path / "steps"}", "filename": "step", "every_n_train_steps": 3, '
              '"enable_version_counter": false}}')
    killed = fit(default_root, tmp_path / "mid", tmp_path, kill, every3)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    mid = tmp_path / "steps" / "step.ckpt"
    assert torch.load(mid, map_location="cpu", weights_only=True)["global_step"] == 6
    resumed = fit(default_root, tmp_path / "mid", tmp_path, f"--ckpt_path={mid}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming in the middle of epoch 1: the first 1 batch(es) of its order are skipped" in resumed.stderr
    assert "not resumable" not in resumed.stderr  # Lightning's warning is answered
    final = tmp_path / "mid" / "default" / "version_1" / "checkpoints" / "last.ckpt"
    assert torch.load(final, map_location="cpu", weights_only=True)["global_step"] == 15
    assert_same(weights(final), reference)


def assert_same(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    assert got.keys() == want.keys()
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=0, atol=0, msg=key)


def test_fit_ckpt_path_last_without_a_run_says_what_to_do(default_root, tmp_path, monkeypatch, capsys):
    from mmctx.cli import main

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:  # a usage error: one block, exit 2, no traceback
        main(["fit", f"--config={REPO / 'configs/default.yaml'}", f"--data.root={default_root}", "--ckpt_path=last"])
    assert exit_.value.code == 2 and "no last.ckpt under runs/default" in capsys.readouterr().err
