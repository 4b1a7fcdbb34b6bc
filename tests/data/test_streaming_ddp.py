"""Streaming under DDP: 2 CPU processes (gloo) on shards of uneven sizes do not hang, see every
training sample exactly once per epoch between them (ids logged per rank), and train to the
weights of one process with the same global batch.

As in tests/trainers/test_ddp.py, the image encoder uses per-sample normalisation and the
optimizer is SGD with momentum, so that one and two processes compute the same thing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]

CALLBACKS = '''
import json
import lightning as L

class IdLog(L.Callback):
    """Append each training step's sample ids to <path>.rank<r>.jsonl."""

    def __init__(self, path: str) -> None:
        self.path = path

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        with open(f"{self.path}.rank{trainer.global_rank}.jsonl", "a") as handle:
            handle.write(json.dumps({"epoch": trainer.current_epoch, "step": trainer.global_step,
                                     "ids": list(batch.ids)}) + "\\n")
'''

NUM_TRAIN = 42  # 5 global batches of 8 and a last one of 2 (1 per process); chunks of uneven sizes


def fit(root: Path, shards: Path, save_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    ids = '--trainer.callbacks+={"class_path": "callbacks.IdLog", "init_args": {"path": "%s"}}' % (save_dir / "ids")
    args = [
        sys.executable, "-m", "mmctx.cli", "fit", f"--config={REPO / 'configs/streaming.yaml'}",
        f"--data.root={root}", f"--data.shards_root={shards}", f"--data.num_train={NUM_TRAIN}", "--data.num_val=10",
        "--data.num_test=10", "--data.data_seed=0", "--data.num_workers=0",
        "--trainer.max_epochs=2", "--trainer.accelerator=cpu", "--trainer.enable_progress_bar=false",
        "--model.init_args.model.init_args.encoders.image.init_args.norm_layer=groupnorm1",
        "--model.init_args.optimizer.class_path=torch.optim.SGD", "--model.init_args.optimizer.init_args.lr=0.05",
        "--model.init_args.optimizer.init_args.momentum=0.9",
        f"--trainer.logger.init_args.save_dir={save_dir}", ids, *extra,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": f"{save_dir.parent}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    save_dir.mkdir(parents=True, exist_ok=True)
    return subprocess.run(args, cwd=save_dir.parent, env=env, capture_output=True, text=True, timeout=600)


def logged(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_two_process_streaming_sees_every_sample_once_and_matches_one_process(tmp_path):
    (tmp_path / "callbacks.py").write_text(CALLBACKS)
    root, shards = tmp_path / "data", tmp_path / "shards"
    one = fit(root, shards, tmp_path / "one", "--data.batch_size=8", "--trainer.devices=1")
    assert one.returncode == 0, one.stderr[-3000:]
    chunks = [c["chunk_size"] for c in json.loads((shards / "train" / "index.json").read_text())["chunks"]]
    assert sum(chunks) == NUM_TRAIN and len(set(chunks)) > 1, chunks  # uneven shards
    two = fit(root, shards, tmp_path / "two", f"--config={REPO / 'configs/strategies/ddp.yaml'}",
              "--data.batch_size=4", "--trainer.devices=2", "--trainer.sync_batchnorm=false")
    assert two.returncode == 0, two.stderr[-3000:]

    ranks = [logged(tmp_path / "two" / f"ids.rank{r}.jsonl") for r in (0, 1)]
    single = logged(tmp_path / "one" / "ids.rank0.jsonl")
    assert len(ranks[0]) == len(ranks[1]) == len(single) == 12  # 6 steps an epoch on every rank: no hang
    for epoch in (0, 1):
        seen = Counter(i for rank in ranks for entry in rank if entry["epoch"] == epoch for i in entry["ids"])
        assert seen == Counter({f"train-{k:05d}": 1 for k in range(NUM_TRAIN)}), epoch  # each sample once
    for a, b, whole in zip(*ranks, single):  # rank r's batch is the r-th block of the one-process batch
        assert a["step"] == b["step"] == whole["step"] and a["ids"] + b["ids"] == whole["ids"]

    run_one, run_two = (tmp_path / name / "streaming" / "version_0" / "checkpoints" / "last.ckpt" for name in ("one", "two"))
    a = torch.load(run_one, map_location="cpu", weights_only=True)
    b = torch.load(run_two, map_location="cpu", weights_only=True)
    assert a["global_step"] == b["global_step"] == 12
    for key, value in a["state_dict"].items():
        if value.is_floating_point():
            torch.testing.assert_close(b["state_dict"][key], value, rtol=1e-4, atol=1e-6, msg=key)
