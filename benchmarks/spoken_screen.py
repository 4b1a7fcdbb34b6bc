"""Screening the spoken long-context task: where does learning the key word stop?

Short training runs (minutes, one thread) that take the spoken task apart, cheapest first:

* ``clip-encoder``: the audio encoder alone (``RNNAudioEncoder`` of the config → max over its
  tokens → LayerNorm → Linear) on 1-s clips holding one key word (random voice, random
  offset, silence around it): can the front end learn the 4 key words at all?
* ``clip-full``: the whole model of ``configs/long_context/spoken_memory.yaml`` on the same clips
  (one segment: the memory and readout in the path, no distractor);
* ``short``: the whole model on streams of ``--seconds`` (default 2-4 s: one or two segments)
  of :class:`~mmctx.data.builtin.spoken_long.SpokenLongDataset`.

Each stage prints the mean training loss per 25 steps and the accuracy on held-out items
(clips at fresh offsets / the ``val`` streams).

    python benchmarks/spoken_screen.py --stages clip-encoder clip-full short --steps 150
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time


def clip_batch(rng: random.Random, batch: int, seconds: float = 1.0):  # noqa: ANN201 - (data, mask, labels)
    """``batch`` clips of ``seconds`` of silence with one key word at a random offset."""
    import torch

    from mmctx.data.builtin.spoken_long import (
        KEY_WORDS,
        SPOKEN_SAMPLE_RATE,
        _recordings,
    )

    audio, voices, _ = _recordings()
    n = int(seconds * SPOKEN_SAMPLE_RATE)
    data = torch.zeros(batch, n)
    labels = torch.zeros(batch, dtype=torch.long)
    for b in range(batch):
        label = rng.randrange(len(KEY_WORDS))
        wav = audio[(rng.choice(voices), KEY_WORDS[label])]
        start = rng.randrange(n - len(wav) + 1)
        data[b, start : start + len(wav)] = torch.from_numpy(wav)
        labels[b] = label
    return data, torch.ones_like(data, dtype=torch.bool), labels


class EncoderProbe:
    """The config's audio encoder → max over its tokens → LayerNorm → Linear(4)."""

    def __new__(cls):  # noqa: ANN204 - returns an nn.Module
        import torch
        from torch import nn

        from mmctx.encoders import RNNAudioEncoder

        class Probe(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.encoder = RNNAudioEncoder(16000, 32, 400, 160, conv_channels=32, hidden_dim=32, num_layers=1, out_dim=32)
                self.norm = nn.LayerNorm(32)
                self.out = nn.Linear(32, 4)

            def forward(self, data: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
                tok = self.encoder(data, mask)
                pooled = tok.x.masked_fill(~tok.mask[..., None], float("-inf")).amax(dim=1)  # (B, D)
                return self.out(self.norm(pooled))

        return Probe()


def full_model(config: str):  # noqa: ANN201 - FusionModel
    """The model of a spoken config (its ``model.init_args.model``), random weights."""
    import yaml
    from jsonargparse import ArgumentParser

    from mmctx.models import FusionModel

    with open(config) as f:
        spec = yaml.safe_load(f)["model"]["init_args"]["model"]
    spec["init_args"]["head"]["init_args"]["num_classes"] = 4
    parser = ArgumentParser()
    parser.add_argument("--model", type=FusionModel)
    cfg = parser.parse_object({"model": spec})
    return parser.instantiate_classes(cfg).model


def run_stage(name: str, args: argparse.Namespace) -> dict:
    import torch

    from mmctx.data.builtin.spoken_long import SpokenLongDataset, collate_spoken
    from mmctx.types import ModalityInput

    torch.manual_seed(args.seed)
    rng = random.Random(f"screen-{args.seed}")
    if name == "clip-encoder":
        model = EncoderProbe()
        fwd = lambda d, m: model(d, m)  # noqa: E731
    else:
        model = full_model(args.config)
        fwd = lambda d, m: model({"audio": ModalityInput(d, m)})  # noqa: E731
    if name == "short":
        lo, hi = args.seconds
        train = SpokenLongDataset("train", args.steps * args.batch, lo, hi, seed=0)
        val = SpokenLongDataset("val", args.eval_items, lo, hi, seed=0)

        def train_batch(step: int):  # noqa: ANN202
            b = collate_spoken([train[step * args.batch + i] for i in range(args.batch)])
            return b.inputs["audio"].data, b.inputs["audio"].mask, b.targets["label"]

        def eval_batches():  # noqa: ANN202
            for i in range(0, args.eval_items, 32):
                b = collate_spoken([val[j] for j in range(i, min(i + 32, args.eval_items))])
                yield b.inputs["audio"].data, b.inputs["audio"].mask, b.targets["label"]
    else:
        eval_rng = random.Random(f"screen-eval-{args.seed}")
        held = [clip_batch(eval_rng, 32) for _ in range(-(-args.eval_items // 32))]
        train_batch = lambda step: clip_batch(rng, args.batch)  # noqa: E731
        eval_batches = lambda: iter(held)  # noqa: E731

    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    warm = min(30, args.steps // 5)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warm if s < warm else 0.5 * (1 + math.cos(math.pi * (s - warm) / max(args.steps - warm, 1)))
    )
    start, losses, curve = time.perf_counter(), [], []
    model.train()
    for step in range(args.steps):
        data, mask, labels = train_batch(step)
        loss = torch.nn.functional.cross_entropy(fwd(data, mask), labels)
        opt.zero_grad()
        loss.backward()
        if step == 0:
            norms = {n: float(p.grad.norm()) for n, p in model.named_parameters() if p.grad is not None}
            top = sorted(norms.items(), key=lambda kv: -kv[1])[:4]
            low = sorted(norms.items(), key=lambda kv: kv[1])[:4]
            print(f"[{name}] step-0 grad norms, largest {top}, smallest {low}", flush=True)
        opt.step()
        sched.step()
        losses.append(float(loss))
        if (step + 1) % 25 == 0:
            curve.append(sum(losses[-25:]) / 25)
            print(f"[{name}] step {step + 1}: train loss {curve[-1]:.3f} ({time.perf_counter() - start:.0f} s)", flush=True)
    model.eval()
    right = total = 0
    with torch.no_grad():
        for data, mask, labels in eval_batches():
            right += int((fwd(data, mask).argmax(-1) == labels).sum())
            total += len(labels)
    out = {"stage": name, "steps": args.steps, "seconds": time.perf_counter() - start,
           "train_loss_last": curve[-1] if curve else float("nan"), "eval_acc": right / total, "eval_items": total}
    print(f"[{name}] RESULT {out}", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stages", nargs="+", default=["clip-encoder", "clip-full", "short"])
    parser.add_argument("--config", default="configs/long_context/spoken_memory.yaml")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seconds", type=float, nargs=2, default=[2.0, 4.0])
    parser.add_argument("--eval-items", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    results = [run_stage(s, args) for s in args.stages]

    print("| stage | steps | time s | train loss (last 25) | eval acc |", file=sys.stderr)
    for r in results:
        print(f"| {r['stage']} | {r['steps']} | {r['seconds']:.0f} | {r['train_loss_last']:.3f} | {r['eval_acc']:.3f} |",
              file=sys.stderr)


if __name__ == "__main__":
    main()
