"""Your causal LM, our fusion: a Hugging Face decoder learns to caption pictures through
gated cross-attention injected into it (Flamingo-style), in a plain PyTorch loop.

1. A tiny Llama-style LM (random init here; any ``AutoModelForCausalLM`` in practice) is
   first trained on the caption text alone, as a stand-in for a pretrained LM.
2. It is frozen, and ``MultimodalCausalLM`` inserts gated cross-attention blocks (gates at
   0: the logits are the LM's own) that read the mmctx context — an image encoder and a
   perceiver resampler here, any fusion in general.
3. Only the image encoder, the fusion and the injected blocks train; the LM's own
   ``generate`` (greedy, beams, sampling) captions a picture inside ``mm.attend(context)``.

This tiny LM, trained on the caption text alone, needs ``--train-lm-head`` (its output
embeddings train; text alone never tells the objects apart, docs/causal_lm.md), and
``--dropout 0.1`` in the injected blocks to caption unseen object combinations (test exact
match 0.986 after 1,800 steps, against 0.586 without). Also:
``--self-attention`` (each injected block gets its own gated causal self-attention),
``--trainable-lm-layers k`` (the LM's last k layers train). ``--eval N`` scores greedy
captions of N test pictures (BLEU-4, exact match); docs/causal_lm.md has the measured table.

    python examples/multimodal_causal_lm.py --lm-steps 100 --steps 200
    python examples/multimodal_causal_lm.py --lm-steps 300 --steps 1800 --train-lm-head --dropout 0.1 \
        --eval 500 --lm-dir runs/caption_text_lm      # the text-only LM is saved there and reused
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader
from transformers import LlamaConfig, LlamaForCausalLM

from mmctx.data import (
    ManifestDataset,
    MultimodalCollate,
    default_data_root,
    default_tokenizer_path,
    ensure_default_dataset,
    load_tokenizer,
)
from mmctx.encoders import TimmImageEncoder
from mmctx.fusion import ConcatFusion, CrossAttendingDecoderLayer, MultimodalCausalLM, PerceiverResampler
from mmctx.metrics import caption_metrics
from mmctx.models import FusionModel


def _batches(loader: DataLoader):
    while True:
        yield from loader


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=None, help="default data folder (default: the built-in data's cache)")
    parser.add_argument("--num-train", type=int, default=3000)
    parser.add_argument("--num-val", type=int, default=500)
    parser.add_argument("--num-test", type=int, default=500)
    parser.add_argument("--lm-steps", type=int, default=100, help="text-only steps before the LM is frozen")
    parser.add_argument("--steps", type=int, default=200, help="multimodal steps (LM frozen)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--schedule", choices=["constant", "cosine"], default="constant",
                        help="multimodal learning rate: constant, or linear warm-up then cosine decay to 0")
    parser.add_argument("--warmup", type=int, default=100, help="warm-up steps of --schedule cosine")
    parser.add_argument("--dropout", type=float, default=0.0, help="dropout in the injected blocks")
    parser.add_argument("--seed", type=int, default=0, help="seed of the multimodal stage (init, data order)")
    parser.add_argument("--every", type=int, default=1, help="inject before every k-th decoder layer")
    parser.add_argument("--self-attention", action="store_true", help="injected blocks with their own causal self-attention")
    parser.add_argument("--trainable-lm-layers", type=int, default=0, help="unfreeze the LM's last k layers (+ final norm)")
    parser.add_argument("--train-lm-head", action="store_true", help="keep the LM's output embeddings trainable")
    parser.add_argument("--train-lm", action="store_true", help="train the whole LM too (no freezing), for comparison")
    parser.add_argument("--lm-dim", type=int, default=64, help="hidden size of the small LM")
    parser.add_argument("--lm-layers", type=int, default=2, help="decoder layers of the small LM")
    parser.add_argument("--lm-dir", default=None, help="load the text-only LM from this folder, or train and save it there")
    parser.add_argument("--fusion", choices=["concat", "perceiver"], default="concat",
                        help="the 8x8 CNN grid as the context, or 16 perceiver latents over it")
    parser.add_argument("--eval", type=int, default=0, help="score greedy captions of this many test pictures")
    args = parser.parse_args(argv)
    torch.manual_seed(0)

    root = ensure_default_dataset(
        args.root or default_data_root(), num_train=args.num_train, num_val=args.num_val, num_test=args.num_test
    )
    tokenizer = load_tokenizer(default_tokenizer_path())
    train = ManifestDataset(root / "train.jsonl", ["image"], tokenizer, label_field=None, caption_field="caption")
    loader = DataLoader(
        train, batch_size=args.batch_size, shuffle=True, collate_fn=MultimodalCollate(tokenizer.pad_id),
        generator=torch.Generator().manual_seed(0),
    )
    batches = _batches(loader)

    def lm_inputs(batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        ids, mask = batch.targets["caption"], batch.targets["caption_mask"]  # (B, T) [bos] ... [eos]
        return ids, mask.long(), ids.masked_fill(~mask, -100)

    # 1. "your" LM, on the caption text alone; the LM's tokenizer is the data's tokenizer
    lm_dir = Path(args.lm_dir) if args.lm_dir else None
    if lm_dir is not None and (lm_dir / "config.json").exists():
        lm = LlamaForCausalLM.from_pretrained(lm_dir)
        print(f"text-only LM loaded from {lm_dir}")
    else:
        lm = LlamaForCausalLM(LlamaConfig(
            vocab_size=tokenizer.vocab_size, hidden_size=args.lm_dim, intermediate_size=2 * args.lm_dim,
            num_hidden_layers=args.lm_layers, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
            bos_token_id=tokenizer.bos_id, eos_token_id=tokenizer.eos_id, pad_token_id=tokenizer.pad_id,
        ))
        optimizer = torch.optim.AdamW(lm.parameters(), lr=args.lr)
        for step in range(1, args.lm_steps + 1):
            ids, mask, labels = lm_inputs(next(batches))
            loss = lm(input_ids=ids, attention_mask=mask, labels=labels).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if step % 20 == 0 or step == args.lm_steps:
                print(f"text-only step {step:4d}  loss {loss.item():.3f}")
        if lm_dir is not None:
            lm.save_pretrained(lm_dir)

    # 2. freeze it and inject gated cross-attention into an mmctx context
    torch.manual_seed(args.seed)  # the multimodal stage's own seed (the text-only LM above stays the same)
    dim = 64
    if args.fusion == "concat":
        fusion: nn.Module = ConcatFusion({"image": dim}, dim)  # the 8x8 grid, 64 context tokens
    else:
        fusion = PerceiverResampler({"image": dim}, dim, num_latents=16, num_layers=1)
    vision = FusionModel(
        encoders={"image": TimmImageEncoder("resnet10t", out_dim=dim, stage=2)},
        fusion=fusion,
        head=nn.Identity(),  # unused: encode() stops at the context
    )
    mm = MultimodalCausalLM(lm, context_dim=dim, every=args.every, freeze_lm=not args.train_lm, dropout=args.dropout,
                            self_attention=args.self_attention, trainable_lm_layers=args.trainable_lm_layers,
                            train_lm_head=args.train_lm_head)
    trainable = [p for p in (*vision.parameters(), *mm.parameters()) if p.requires_grad]
    injected = {id(p) for p in mm.injected_parameters()}
    own = [p for p in lm.parameters() if id(p) not in injected]  # the LM's own weights (blocks sit inside it)
    counts = {
        "lm (frozen)": sum(p.numel() for p in own if not p.requires_grad),
        "lm (trainable)": sum(p.numel() for p in own if p.requires_grad),
        "injected": sum(p.numel() for p in mm.injected_parameters()),
        "encoder + fusion": sum(p.numel() for p in vision.parameters()),
    }
    print("parameters:", ", ".join(f"{k} {v:,}" for k, v in counts.items()), f"| trainable {sum(p.numel() for p in trainable):,}")

    # 3. train encoder + fusion + injected blocks in a plain loop
    lm.eval()  # the frozen LM keeps its dropout off (this Llama has none); the new modules train
    for layer in lm.modules():  # the injected blocks sit inside lm: back to training mode (their dropout)
        if isinstance(layer, CrossAttendingDecoderLayer):
            layer.xattn.train()
            if layer.causal_attn is not None:
                layer.causal_attn.train()
    optimizer = torch.optim.AdamW(trainable, lr=args.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(args.schedule, args.warmup, args.steps))
    start, losses = time.time(), []
    for step in range(1, args.steps + 1):
        batch = next(batches)
        ids, mask, labels = lm_inputs(batch)
        context = vision.encode(batch)  # ExtendedContext (B, 16, D)
        loss = mm(ids, context, attention_mask=mask, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
        if step % 10 == 0 or step == args.steps:
            print(f"step {step:4d}  loss {sum(losses[-10:]) / len(losses[-10:]):.3f}  ({time.time() - start:.0f} s)")

    # caption two pictures with the LM's own generate (beam search), then save the new weights alone
    train_minutes = (time.time() - start) / 60
    print(f"multimodal training: {args.steps} steps in {train_minutes:.1f} min")
    vision.eval()
    mm.eval()  # the injected blocks' dropout off
    scores = evaluate(vision, mm, tokenizer, root, args.eval, args.batch_size) if args.eval else {}
    if scores:
        print("test:", json.dumps(scores))
    batch = next(batches)
    with torch.no_grad():
        context = vision.encode(batch)
        prompt = torch.full((len(batch), 1), tokenizer.bos_id, dtype=torch.long)
        out = mm.generate(prompt, context, num_beams=3, max_new_tokens=16, pad_token_id=tokenizer.pad_id)
    for row, ref in list(zip(out, batch.meta["caption_text"]))[:2]:
        ids = [int(i) for i in row[1:] if int(i) not in (tokenizer.pad_id, tokenizer.eos_id)]
        print(f"  generated: {tokenizer.decode(ids)!r}  reference: {ref!r}")
    with tempfile.TemporaryDirectory() as tmp:
        path = mm.save_injected(Path(tmp) / "xattn.safetensors")
        print(f"injected weights: {path.stat().st_size / 1e6:.2f} MB (the frozen LM weights are not saved)")
    print("lightning imported:", any(m.split(".")[0] in ("lightning", "pytorch_lightning") for m in sys.modules))
    return {"loss": losses[-1] if losses else float("nan"), **counts, **scores}


def lr_factor(schedule: str, warmup: int, total: int):
    """The learning-rate multiplier of optimizer step ``step`` (0-based): 1 for ``constant``;
    for ``cosine`` a linear warm-up over ``warmup`` steps, then cosine decay to 0 at ``total``."""
    if schedule == "constant":
        return lambda step: 1.0
    if schedule != "cosine":
        raise ValueError(f"lr_factor: schedule must be 'constant' or 'cosine', got {schedule!r}")

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def evaluate(vision: FusionModel, mm: MultimodalCausalLM, tokenizer, root: Path, num: int, batch_size: int) -> dict[str, float]:
    """Greedy captions of the first ``num`` test pictures: BLEU-4, exact match, CIDEr-D."""
    test = ManifestDataset(root / "test.jsonl", ["image"], tokenizer, label_field=None, caption_field="caption")
    test = torch.utils.data.Subset(test, range(min(num, len(test))))
    candidates, references = [], []
    with torch.no_grad():
        for batch in DataLoader(test, batch_size=batch_size, collate_fn=MultimodalCollate(tokenizer.pad_id)):
            prompt = torch.full((len(batch), 1), tokenizer.bos_id, dtype=torch.long)
            out = mm.generate(prompt, vision.encode(batch), max_new_tokens=16, do_sample=False,
                              pad_token_id=tokenizer.pad_id, eos_token_id=tokenizer.eos_id)
            for row, ref in zip(out[:, 1:].tolist(), batch.meta["caption_text"]):
                ids = row[: row.index(tokenizer.eos_id)] if tokenizer.eos_id in row else row
                candidates.append(tokenizer.decode([i for i in ids if i != tokenizer.pad_id]))
                references.append([ref])
    m = caption_metrics(candidates, references)
    return {"bleu4": round(m["bleu4"], 4), "exact_match": round(m["exact_match"], 4), "cider": round(m["cider"], 4)}


if __name__ == "__main__":
    main()
