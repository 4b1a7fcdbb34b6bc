"""Training-step time of the image-caption model for different image encoders, side by side.

Builds the task of ``configs/caption_image.yaml`` exactly as ``mmctx fit`` does (sizes
filled in from the data), then swaps only its image encoder for each variant (same
``out_dim``, so fusion and decoder stay the same) and times full optimisation steps
(teacher-forced loss, backward, AdamW step) on the same real training batches, all variants
in ONE process, interleaved, one warm-up each, medians of ``--steps``. It also counts the
forward GFLOPs of one batch (``torch.utils.flop_counter``, convolutions and matmuls) and the
parameters.

Test BLEU-4 / exact match need full fits (``mmctx fit`` + ``mmctx test`` per config); they
are in docs/benchmarks.md next to this script's table.

    python benchmarks/caption_encoder_variants.py                 # the config's batch (64)
    python benchmarks/caption_encoder_variants.py --steps 5 --variants today regnetx_002
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

# name → TimmImageEncoder arguments (out_dim is the config's)
VARIANTS: dict[str, dict] = {
    "today": dict(backbone="resnet10t", stage=2),
    "resnet10t+channels_last": dict(backbone="resnet10t", stage=2, channels_last=True),
    "resnet10t stage 1 (16×16)+cl": dict(backbone="resnet10t", stage=1, channels_last=True),
    "resnet18 stage 1 (7×7 stem, 16×16)+cl": dict(backbone="resnet18", stage=1, channels_last=True),
    "regnetx_002": dict(backbone="regnetx_002", stage=2),
    "mobilenetv3_small_050+cl": dict(backbone="mobilenetv3_small_050", stage=2, channels_last=True),
    # lighter stems / narrower nets of the same resnet10t (timm constructor arguments)
    "resnet10t stem_width 16+cl": dict(backbone="resnet10t", stage=2, channels_last=True, backbone_args={"stem_width": 16}),
    "resnet10t half width+cl": dict(
        backbone="resnet10t", stage=2, channels_last=True,
        backbone_args={"stem_width": 16, "channels": [32, 64, 128, 256]},
    ),
    "resnet10t 7×7 stem+cl": dict(backbone="resnet10t", stage=2, channels_last=True, backbone_args={"stem_type": ""}),
    # smaller images: the batch's pictures resized (bilinear, antialiased) before the step
    "resnet10t+cl on 48 px (6×6)": dict(backbone="resnet10t", stage=2, channels_last=True, image_size=48),
    "resnet10t+cl on 32 px (4×4)": dict(backbone="resnet10t", stage=2, channels_last=True, image_size=32),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "caption_image.yaml")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per variant (median)")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    args = parser.parse_args()

    from caption_step_time import build  # builds task + data module as the CLI does

    from mmctx.encoders import TimmImageEncoder

    task, dm = build(args.config, None)
    dm.prepare_data()
    dm.setup("fit")
    batches = []
    for batch in dm.train_dataloader():
        batches.append(batch)
        if len(batches) == 4:
            break
    out_dim = task.model.encoders["image"].out_dim
    tasks, optimizers, gflops, params, variant_batches = {}, {}, {}, {}, {}
    for name in args.variants:
        t = copy.deepcopy(task)
        torch.manual_seed(0)
        encoder_args = dict(VARIANTS[name])
        size = encoder_args.pop("image_size", None)
        variant_batches[name] = batches if size is None else [resized(b, size) for b in batches]
        t.model.encoders["image"] = TimmImageEncoder(out_dim=out_dim, **encoder_args)
        t.train()
        tasks[name] = t
        optimizers[name] = torch.optim.AdamW(t.parameters(), lr=1e-3)
        params[name] = sum(p.numel() for p in t.parameters())
        from torch.utils.flop_counter import FlopCounterMode

        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            t.loss(variant_batches[name][0])
        gflops[name] = counter.get_total_flops() / 1e9

    def step(name: str, i: int) -> float:
        t, opt = tasks[name], optimizers[name]
        start = time.perf_counter()
        loss = t.loss(variant_batches[name][i % len(batches)])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return time.perf_counter() - start

    for name in tasks:
        step(name, 0)  # warm-up
    times: dict[str, list[float]] = {name: [] for name in tasks}
    for i in range(1, args.steps + 1):
        for name in tasks:
            times[name].append(step(name, i))

    bs = batches[0].targets["caption"].shape[0]
    load = f", load avg {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
    print(f"# training step of {args.config.name} with other image encoders: batch {bs}; torch {torch.__version__}, "
          f"{platform.processor() or 'cpu'}, {torch.get_num_threads()} threads{load}; median of {args.steps}, interleaved")
    base = statistics.median(times[args.variants[0]])
    print("| image encoder | ms/step | speed-up | GFLOPs fwd | parameters |")
    print("|---|---|---|---|---|")
    for name in tasks:
        ms = statistics.median(times[name])
        print(f"| {name} | {ms * 1e3:.0f} | {base / ms:.2f}× | {gflops[name]:.2f} | {params[name] / 1e6:.2f} M |")


def resized(batch, size: int):
    """A copy of ``batch`` whose images are resized to ``size × size`` (bilinear, antialiased)."""
    import torch.nn.functional as F

    from mmctx.types import ModalityInput, MultimodalBatch

    image = batch.inputs["image"]
    data = F.interpolate(image.data, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    inputs = dict(batch.inputs, image=ModalityInput(data, image.mask))  # (B, C, size, size)
    return MultimodalBatch(inputs=inputs, targets=batch.targets, ids=batch.ids, meta=batch.meta)


if __name__ == "__main__":
    main()
