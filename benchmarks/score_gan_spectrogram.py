"""Score a text → spectrogram GAN checkpoint on the default data: does a spectrogram generated
for "what food" sound like someone saying "what food"?

1. A small CNN (plain PyTorch) learns, from the *real* recordings' log-mel spectrograms (the
   checkpoint's own :class:`~mmctx.heads.LogMelCodec`, so the generator's resolution and
   value range), which of the condition texts was spoken (the default data's four questions
   "what animals" / "what food" / "what vehicles" / "what plants"; chance 25 %). Rows of all
   three splits (at most ``--max-real``, seeded) are pooled and split 80/20: the 20 % are
   its held-out real test spectrograms.
2. For every distinct condition text the GAN generates ``--samples-per-condition``
   spectrograms (the EMA generator unless ``--raw-generator``).
3. The table: the word accuracy — how often the classifier recognises the conditioned text
   in the generated spectrograms — next to its accuracy on held-out real spectrograms (the
   ceiling) and on uniform noise given the same conditions (the floor); and the diversity,
   the mean pairwise RMS distance between spectrograms of one text (values in [-1, 1]),
   generated vs real (a generator that ignores its noise has a ratio near 0).

    python benchmarks/score_gan_spectrogram.py --ckpt runs/gan_spectrogram/version_0/checkpoints/last.ckpt
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmctx.data import DefaultDataModule
from mmctx.metrics import group_diversity
from mmctx.trainers import GANTask


class SpectrogramCNN(nn.Module):
    """Log-mel (B, 1, F, M) in [-1, 1] → word logits (B, K), features (B, 64).

    A 2×2 average pool first (the words are longer than a frame), then three
    conv-BN-ReLU-maxpool blocks and a global average."""

    def __init__(self, num_words: int) -> None:
        super().__init__()

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(), nn.MaxPool2d(2))

        self.features = nn.Sequential(nn.AvgPool2d(2), block(1, 16), block(16, 32), block(32, 64),
                                      nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.word = nn.Linear(64, num_words)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.features(x)  # (B, 64)
        return self.word(h), h


def load_rows(dm: DefaultDataModule, text_field: str, max_rows: int, seed: int) -> list[dict]:
    """Manifest rows of every split (+ split, index in its data set), a seeded subset of at
    most ``max_rows``."""
    rows = []
    for split in ("train", "val", "test"):
        manifest = dm.manifests[split]
        if manifest is None:
            continue
        dataset = dm._dataset(split)
        index = {sample_id: i for i, sample_id in enumerate(dataset.ids)}
        for line in manifest.read_text().splitlines():
            row = json.loads(line)
            rows.append({"text": row[text_field], "split": split, "index": index[row["id"]]})
    if len(rows) > max_rows:
        keep = torch.randperm(len(rows), generator=torch.Generator().manual_seed(seed))[:max_rows]
        rows = [rows[i] for i in sorted(keep.tolist())]
    return rows


def batch_of(dm: DefaultDataModule, rows: list[dict]):
    return dm._collate()([dm._dataset(r["split"])[r["index"]] for r in rows])


@torch.no_grad()
def real_spectrograms(task: GANTask, dm: DefaultDataModule, rows: list[dict], chunk: int = 256) -> Tensor:
    """Shapes: → (R, 1, F, M) in [-1, 1], through the checkpoint's codec."""
    return torch.cat([task.real_samples(batch_of(dm, rows[i : i + chunk])) for i in range(0, len(rows), chunk)])


def train_classifier(x: Tensor, y: Tensor, num_words: int, epochs: int, seed: int) -> SpectrogramCNN:
    torch.manual_seed(seed)
    net = SpectrogramCNN(num_words)
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=1e-4)
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        net.train()
        for idx in torch.randperm(len(x), generator=g).split(64):
            if len(idx) < 2:  # batch norm needs two
                continue
            logits, _ = net(x[idx])
            loss = F.cross_entropy(logits, y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return net.eval()


@torch.no_grad()
def classify(net: SpectrogramCNN, x: Tensor) -> tuple[Tensor, Tensor]:
    outs = [net(chunk) for chunk in x.split(256)]
    return torch.cat([o[0] for o in outs]).argmax(-1), torch.cat([o[1] for o in outs])


def main(argv: list[str] | None = None) -> dict[str, dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", required=True, help="spectrogram GAN checkpoint (trained with mmctx fit)")
    parser.add_argument("--root", default=None, help="default data folder (default: the checkpoint's)")
    parser.add_argument("--epochs", type=int, default=8, help="classifier epochs")
    parser.add_argument("--max-real", type=int, default=2000, help="real recordings used (seeded subset)")
    parser.add_argument("--samples-per-condition", type=int, default=64)
    parser.add_argument("--raw-generator", action="store_true", help="sample the generator, not its EMA")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args(argv)
    start = time.perf_counter()

    task = GANTask.load_from_checkpoint(args.ckpt, map_location="cpu").eval()
    if task.target != "audio":
        raise SystemExit(f"score_gan_spectrogram: {args.ckpt} generates {task.target!r}, not spectrograms")
    ckpt = torch.load(args.ckpt, map_location="cpu", weights_only=True)
    saved = ckpt.get("datamodule_hyper_parameters", {})
    dm_args = {k: v for k, v in saved.items() if not k.startswith("_")}  # LightningCLI adds _class_path etc.
    if args.root is not None:
        dm_args["root"] = args.root
    dm_args.update(num_workers=0)
    dm = DefaultDataModule(**dm_args)
    dm.prepare_data()
    text_field = dm_args.get("text_field") or "text"

    rows = load_rows(dm, text_field, args.max_real, args.seed)
    words = sorted({r["text"] for r in rows})
    word_index = {w: i for i, w in enumerate(words)}
    x_real = real_spectrograms(task, dm, rows)  # (R, 1, F, M)
    y = torch.tensor([word_index[r["text"]] for r in rows])
    perm = torch.randperm(len(rows), generator=torch.Generator().manual_seed(args.seed))
    n_test = max(1, len(rows) // 5)
    test_idx, train_idx = perm[:n_test], perm[n_test:]
    net = train_classifier(x_real[train_idx], y[train_idx], len(words), args.epochs, args.seed)

    # one condition per distinct text: its first row
    first: dict[str, dict] = {}
    for r in rows:
        first.setdefault(r["text"], r)
    k = args.samples_per_condition
    inputs = task.condition_inputs(batch_of(dm, [first[w] for w in words]))
    z = torch.randn(len(words) * k, task.generator.z_dim, generator=torch.Generator().manual_seed(args.seed))
    x_gen = task.generate(inputs, k, z=z, use_ema=not args.raw_generator)  # (K·k, 1, F, M)
    gen_y = torch.arange(len(words)).repeat_interleave(k)
    x_noise = torch.rand(x_gen.shape, generator=torch.Generator().manual_seed(args.seed + 1)) * 2 - 1

    results: dict[str, dict] = {}
    for name, x, target in (("real", x_real[test_idx], y[test_idx]), ("generated", x_gen, gen_y),
                            ("noise", x_noise, gen_y)):
        pred, feats = classify(net, x)
        per_word = {w: (pred[target == i] == i).float().mean().item() for i, w in enumerate(words)
                    if bool((target == i).any())}
        results[name] = {
            "n": len(x),
            "word_acc": (pred == target).float().mean().item(),
            "per_word_acc": per_word,
            "diversity": group_diversity(x, target.tolist()),
            "feature_diversity": group_diversity(feats, target.tolist()),
        }
    _, real_feats = classify(net, x_real)  # the real diversity over all the real rows
    results["real"]["diversity"] = group_diversity(x_real, y.tolist())
    results["real"]["feature_diversity"] = group_diversity(real_feats, y.tolist())

    generator = "raw generator" if args.raw_generator else "EMA generator"
    print(f"\nspectrogram GAN score: {args.ckpt} ({generator}, {len(words)} condition texts x {k} samples; "
          f"classifier on {len(train_idx)} real log-mels of {tuple(x_real.shape[-2:])} (frames, mels), "
          f"{args.epochs} epochs)\n")
    head = ("spectrograms", "n", "word acc", "diversity", "feature diversity")
    labels = {"real": "real (held-out)", "generated": "generated", "noise": "uniform noise"}
    body = [(labels[name], str(r["n"]), f"{r['word_acc']:.1%}", f"{r['diversity']:.3f}",
             f"{r['feature_diversity']:.3f}") for name, r in results.items()]
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(head)]
    for cells in (head, tuple("-" * w for w in widths), *body):
        print("| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |")
    ratio = results["generated"]["diversity"] / results["real"]["diversity"]
    per_word = ", ".join(f"{w!r} {a:.0%}" for w, a in results["generated"]["per_word_acc"].items())
    print(f"\nchance: {1 / len(words):.1%}; generated per text: {per_word}; diversity generated/real "
          f"{ratio:.2f}; {time.perf_counter() - start:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
