"""mmctx layers in a plain PyTorch training loop — no Lightning anywhere.

Builds an image encoder, an audio encoder, a cross-attention fusion and a classifier head,
and trains them for a few steps on the embedded default data ("what animals?": picture +
spoken question naming a category → the object of that category in the picture).

    python examples/fusion_in_plain_pytorch.py --steps 30
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from mmctx.data import (
    DEFAULT_CLASSES,
    ManifestDataset,
    MultimodalCollate,
    default_data_root,
    default_tokenizer_path,
    ensure_default_dataset,
    load_tokenizer,
)
from mmctx.encoders import RNNAudioEncoder, TimmImageEncoder
from mmctx.fusion import CrossAttentionFusion
from mmctx.heads import ClassifierHead
from mmctx.models import FusionModel


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=None, help="default data folder (default: ~/.cache/mmctx/default-v1)")
    parser.add_argument("--num-train", type=int, default=3000)
    parser.add_argument("--num-val", type=int, default=500)
    parser.add_argument("--num-test", type=int, default=500)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3)
    args = parser.parse_args(argv)
    torch.manual_seed(0)

    # data: the same manifest reader the Lightning data modules use
    root = ensure_default_dataset(
        args.root or default_data_root(), num_train=args.num_train, num_val=args.num_val, num_test=args.num_test
    )
    tokenizer = load_tokenizer(default_tokenizer_path())
    train = ManifestDataset(root / "train.jsonl", ["image", "audio"], tokenizer, classes=list(DEFAULT_CLASSES))
    loader = DataLoader(
        train, batch_size=args.batch_size, shuffle=True, collate_fn=MultimodalCollate(tokenizer.pad_id),
        generator=torch.Generator().manual_seed(0),
    )

    # model: plain nn.Modules composed by hand
    dim = 64
    model = FusionModel(
        encoders={
            "image": TimmImageEncoder("resnet10t", out_dim=dim, stage=2),
            "audio": RNNAudioEncoder(n_mels=40, conv_channels=64, hidden_dim=64, num_layers=1, out_dim=dim),
        },
        # the spoken question's frames query the picture's grid
        fusion=CrossAttentionFusion({"audio": dim, "image": dim}, dim, query_modality="audio", num_layers=2, gated=False),
        head=ClassifierHead(dim, num_classes=len(DEFAULT_CLASSES), pooling="attention"),
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)

    step, start, losses = 0, time.time(), []
    while step < args.steps:
        for batch in loader:
            logits = model(batch)  # (B, K)
            loss = F.cross_entropy(logits, batch.targets["label"])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            step += 1
            if step % 10 == 0 or step == args.steps:
                print(f"step {step:4d}  loss {sum(losses[-10:]) / len(losses[-10:]):.3f}  ({time.time() - start:.0f} s)")
            if step == args.steps:
                break
    print("lightning imported:", any(m.split(".")[0] in ("lightning", "pytorch_lightning") for m in sys.modules))
    return losses[-1]


if __name__ == "__main__":
    main()
