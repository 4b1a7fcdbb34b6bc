"""Training step time of the image-caption model (configs/caption_image.yaml), eager vs compiled.

Builds the task and data module from a config exactly as ``mmctx fit`` does (sizes filled in
from the data), loads a few real training batches of the default data into memory, and times
full optimisation steps (teacher-forced loss, backward, AdamW step) side by side:

* eager PyTorch;
* the same model compiled by the task's ``compile`` switch (``--model.init_args.compile=true``:
  ``nn.Module.compile`` of the model's forward; its one-off compile time is reported apart).

For the compiled variant it also reports the graphs Dynamo compiled during the first calls
and how many frames it (re)compiled during the timed steps (0: no recompiles).

Both start from the same weights; their losses on the first batch in eval mode (no dropout,
whose random streams differ between eager and compiled code) are compared so the compiled
model is known to compute the same thing. One warm-up step each, then the median of ``--steps``
steps, interleaved so that drifting machine load hits both alike.

    python benchmarks/caption_step_time.py                      # CPU, the config's batch size
    python benchmarks/caption_step_time.py --batch-size 16 --steps 5
    python benchmarks/caption_step_time.py --device cuda --no-compile
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def build(config: Path, batch_size: int | None):
    """The task and data module of ``config``, as the CLI builds them (no training)."""
    from mmctx.cli import MMCtxCLI
    import lightning as L

    args = [f"--config={config}", "--data.num_workers=0"]
    if batch_size:
        args.append(f"--data.batch_size={batch_size}")
    cli = MMCtxCLI(
        L.LightningModule, L.LightningDataModule, subclass_mode_model=True, subclass_mode_data=True,
        auto_configure_optimizers=False, run=False, args=args,
    )
    return cli.model, cli.datamodule


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "caption_image.yaml")
    parser.add_argument("--batch-size", type=int, default=0, help="0: the config's")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per variant (median)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--no-compile", action="store_true", help="time eager only")
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    task, dm = build(args.config, args.batch_size or None)
    dm.prepare_data()
    dm.setup("fit")
    loader = dm.train_dataloader()
    batches = []
    for batch in loader:
        batches.append(batch.to(device))
        if len(batches) == 4:
            break
    task = task.to(device).train()

    variants = {"eager": task}
    if not args.no_compile:
        compiled = copy.deepcopy(task)
        compiled.compile_model = True  # the task's ``compile`` switch, as the Trainer applies it
        compiled.configure_model()
        variants["torch.compile"] = compiled
    frames = torch._dynamo.utils.counters["frames"]
    optimizers = {name: torch.optim.AdamW(t.parameters(), lr=1e-3) for name, t in variants.items()}

    def step(name: str, i: int) -> tuple[float, float]:
        t, opt = variants[name], optimizers[name]
        batch = batches[i % len(batches)]
        sync(device)
        start = time.perf_counter()
        loss = t.loss(batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sync(device)
        return time.perf_counter() - start, loss.item()

    first: dict[str, float] = {}
    compile_s: dict[str, float] = {}
    for name, t in variants.items():  # first calls (compilation: eval graph, then train graph)
        start = time.perf_counter()
        with torch.no_grad():
            t.eval()
            first[name] = t.loss(batches[0]).item()
            t.train()
        compile_s[name] = time.perf_counter() - start + step(name, 0)[0]
    graphs = frames["ok"]
    times: dict[str, list[float]] = {name: [] for name in variants}
    for i in range(1, args.steps + 1):
        for name in variants:
            times[name].append(step(name, i)[0])
    recompiled = frames["ok"] - graphs

    n_params = sum(p.numel() for p in task.parameters() if p.requires_grad)
    bs = batches[0].targets["caption"].shape[0]
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    load = f", load avg {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
    print(f"# training step of {args.config.name}: batch {bs}, {n_params / 1e6:.2f} M trainable parameters")
    print(f"# torch {torch.__version__}, {where}, {torch.get_num_threads()} threads{load}; median of {args.steps}\n")
    columns = ("variant", "first calls s", "ms/step", "samples/s", "vs eager", "eval loss")
    widths = (14, 12, 9, 9, 8, 10)
    header = " | ".join(f"{c:>{w}}" for c, w in zip(columns, widths))
    print(header)
    print("-" * len(header))
    eager_ms = statistics.median(times["eager"]) * 1e3
    for name in variants:
        ms = statistics.median(times[name]) * 1e3
        cells = (name, f"{compile_s[name]:.1f}", f"{ms:.0f}", f"{bs / ms * 1e3:.0f}", f"{eager_ms / ms:.2f}x",
                 f"{first[name]:.4f}")
        print(" | ".join(f"{c:>{w}}" for c, w in zip(cells, widths)))
    if len(first) == 2:
        diff = abs(first["eager"] - first["torch.compile"])
        print(f"\neval-mode loss on the first batch, eager vs compiled: difference {diff:.2e}")
        print(f"compiled frames (graphs) in the first calls: {graphs}; (re)compiled during the timed steps: "
              f"{recompiled}")


if __name__ == "__main__":
    main()
