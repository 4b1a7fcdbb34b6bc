"""Scale-out: DDP with 2 CPU processes (gloo) on the default data trains to the same weights and
the same validation-loss curve as one process with the same global batch.

The image encoder uses per-sample normalisation (``norm_layer: groupnorm1``): BatchNorm
statistics of a 4-sample half batch differ from the 8-sample batch's, and SyncBatchNorm,
which would fix that, only runs on GPUs. The optimizer is SGD with momentum: Adam's
``g / sqrt(v)`` turns the last-bit differences of a near-zero gradient summed in another order
into full ``lr``-sized steps of either sign, which hides whether the gradients agree."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

REPO = Path(__file__).resolve().parents[2]


def fit(root: Path, save_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    args = [
        sys.executable, "-m", "mmctx.cli", "fit", f"--config={REPO / 'configs/default.yaml'}",
        f"--data.root={root}", "--data.num_train=40", "--data.num_val=10", "--data.num_test=10",
        "--data.data_seed=0", "--data.num_workers=0",
        "--trainer.max_epochs=3", "--trainer.accelerator=cpu", "--trainer.enable_progress_bar=false",
        "--model.init_args.model.init_args.encoders.image.init_args.norm_layer=groupnorm1",
        "--model.init_args.optimizer.class_path=torch.optim.SGD", "--model.init_args.optimizer.init_args.lr=0.05",
        "--model.init_args.optimizer.init_args.momentum=0.9",
        f"--trainer.logger.init_args.save_dir={save_dir}", *extra,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(args, cwd=save_dir.parent, env=env, capture_output=True, text=True, timeout=600)


def scalars(run: Path, tag: str) -> list[float]:
    values: dict[int, float] = {}
    for events in sorted(run.glob("events.out.tfevents*")):
        acc = EventAccumulator(str(events))
        acc.Reload()
        if tag in acc.Tags()["scalars"]:
            values.update({e.step: e.value for e in acc.Scalars(tag)})
    return [values[k] for k in sorted(values)]


@pytest.mark.slow
def test_two_process_ddp_matches_one_process_on_the_same_global_batch(default_root, tmp_path):
    one = fit(default_root, tmp_path / "one", "--data.batch_size=8", "--trainer.devices=1")
    assert one.returncode == 0, one.stderr[-3000:]
    # per-process batch 4 x 2 processes = the global batch of 8
    two = fit(default_root, tmp_path / "two", f"--config={REPO / 'configs/strategies/ddp.yaml'}",
              "--data.batch_size=4", "--trainer.devices=2", "--trainer.sync_batchnorm=false")
    assert two.returncode == 0, two.stderr[-3000:]
    run_one, run_two = (tmp_path / name / "default" / "version_0" for name in ("one", "two"))
    a = torch.load(run_one / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    b = torch.load(run_two / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert a["global_step"] == b["global_step"] == 15  # 40 samples / global batch 8, 3 epochs
    for key, value in a["state_dict"].items():
        if value.is_floating_point():
            torch.testing.assert_close(b["state_dict"][key], value, rtol=1e-4, atol=1e-6, msg=key)
    # the validation-loss curve (synced over the processes) and the accuracy curve
    for tag in ("val/loss", "val/acc"):
        curve_one, curve_two = scalars(run_one, tag), scalars(run_two, tag)
        assert len(curve_one) == len(curve_two) == 3, tag
        torch.testing.assert_close(torch.tensor(curve_two), torch.tensor(curve_one), rtol=1e-3, atol=1e-4, msg=tag)
