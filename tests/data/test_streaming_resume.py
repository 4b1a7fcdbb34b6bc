"""A streaming run (configs/streaming.yaml, the default data as shards) killed with SIGKILL in
the middle of an epoch and resumed from its mid-epoch checkpoint trains on exactly the sample
sequence of an uninterrupted run (ids logged per step) and ends with bit-identical weights."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
TESTS = REPO / "tests"  # fault_callbacks.py, imported by the child

def fit(root: Path, shards: Path, save_dir: Path, tmp: Path, ids: Path, *extra: str) -> subprocess.CompletedProcess:
    log = '--trainer.callbacks+={"class_path": "fault_callbacks.IdLog", "init_args": {"path": "%s"}}' % ids
    args = [
        sys.executable, "-m", "mmctx.cli", "fit", f"--config={REPO / 'configs/streaming.yaml'}",
        f"--data.root={root}", f"--data.shards_root={shards}", "--data.num_train=40", "--data.num_val=10",
        "--data.num_test=10", "--data.data_seed=0", "--data.num_workers=0", "--data.batch_size=8",
        "--trainer.max_epochs=3", "--trainer.enable_progress_bar=false", "--trainer.log_every_n_steps=1",
        f"--trainer.logger.init_args.save_dir={save_dir}", log, *extra,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{TESTS}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return subprocess.run(args, cwd=tmp, env=env, capture_output=True, text=True, timeout=600)


def steps(path: Path) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for line in path.read_text().splitlines():
        entry = json.loads(line)
        out[entry["step"]] = entry["ids"]
    return out


@pytest.mark.slow
def test_streaming_run_killed_mid_epoch_resumes_to_the_same_samples_and_weights(default_root, tmp_path):
    shards = tmp_path / "shards"
    straight = fit(default_root, shards, tmp_path / "straight", tmp_path, tmp_path / "straight.jsonl")
    assert straight.returncode == 0, straight.stderr[-3000:]
    reference = torch.load(tmp_path / "straight" / "streaming" / "version_0" / "checkpoints" / "last.ckpt",
                           map_location="cpu", weights_only=True)
    want = steps(tmp_path / "straight.jsonl")
    assert sorted(want) == list(range(1, 16))  # 40 samples / batch 8 = 5 steps a epoch, 3 epochs
    for epoch in range(3):  # every sample once per epoch, in another order each epoch
        ids = [i for s in range(5 * epoch + 1, 5 * epoch + 6) for i in want[s]]
        assert sorted(ids) == sorted(f"train-{k:05d}" for k in range(40))
    assert want[1] != want[6]

    kill = '--trainer.callbacks+={"class_path": "fault_callbacks.SigkillAt", "init_args": {"step": 8}}'
    every3 = ('--trainer.callbacks+={"class_path": "lightning.pytorch.callbacks.ModelCheckpoint", "init_args": '
              f'{{"dirpath": "{tmp_path / "steps"}", "filename": "step", "every_n_train_steps": 3, '
              '"enable_version_counter": false}}')
    killed = fit(default_root, shards, tmp_path / "mid", tmp_path, tmp_path / "killed.jsonl", kill, every3)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    mid = tmp_path / "steps" / "step.ckpt"
    state = torch.load(mid, map_location="cpu", weights_only=True)
    assert state["global_step"] == 6  # in the middle of epoch 2
    assert state["DefaultStreamingDataModule"]["train_order"]["batch_size"] == 8
    resumed = fit(default_root, shards, tmp_path / "mid", tmp_path, tmp_path / "resumed.jsonl", f"--ckpt_path={mid}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming in the middle of epoch 1: the first 1 batch(es) of its order are skipped" in resumed.stderr

    before, after = steps(tmp_path / "killed.jsonl"), steps(tmp_path / "resumed.jsonl")
    assert sorted(after) == list(range(7, 16))
    got = {**{s: ids for s, ids in before.items() if s <= 6}, **after}
    assert got == want  # no sample repeated or skipped: the uninterrupted sequence, step by step
    final = torch.load(tmp_path / "mid" / "streaming" / "version_1" / "checkpoints" / "last.ckpt",
                       map_location="cpu", weights_only=True)
    assert final["global_step"] == 15
    assert final["state_dict"].keys() == reference["state_dict"].keys()
    for key, value in reference["state_dict"].items():
        torch.testing.assert_close(final["state_dict"][key], value, rtol=0, atol=0, msg=key)

    # other shards under the same checkpoint: refused, not silently resumed at the wrong place
    other = fit(default_root, shards, tmp_path / "mid", tmp_path, tmp_path / "other.jsonl", f"--ckpt_path={mid}",
                "--data.batch_size=4")
    assert other.returncode != 0 and "would repeat or skip samples" in other.stderr
