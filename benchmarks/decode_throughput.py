"""Decode throughput of TextDecoder.generate with and without the KV cache.

Greedy decoding of a batch of random contexts by a random decoder, EOS disabled so every
run generates exactly the requested number of tokens. For each length both modes are
timed side by side (one warm-up, then the median of ``--repeats`` runs) and their outputs
are checked to be identical.

    python benchmarks/decode_throughput.py            # batch 8, dim 256, 4 layers, context 64
    python benchmarks/decode_throughput.py --device cuda --lengths 16 64 256 1024
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch

from mmctx.heads import TextDecoder
from mmctx.types import ExtendedContext


def build(args: argparse.Namespace, device: torch.device) -> tuple[TextDecoder, ExtendedContext]:
    torch.manual_seed(0)
    decoder = TextDecoder(
        vocab_size=args.vocab,
        dim=args.dim,
        num_layers=args.layers,
        num_heads=args.heads,
        max_seq_len=max(args.lengths) + 1,
        pad_id=0,
        bos_id=1,
        eos_id=None,  # exact lengths: nothing stops early
    ).to(device).eval()
    x = torch.randn(args.batch, args.context, args.dim, device=device)
    mask = torch.ones(args.batch, args.context, dtype=torch.bool, device=device)
    mask[::2, args.context // 2 :] = False  # half the samples have half-length contexts
    modality = torch.zeros(args.batch, args.context, dtype=torch.long, device=device)
    return decoder, ExtendedContext(x, mask, modality, ("image",))


def timed(
    decoder: TextDecoder, context: ExtendedContext, new_tokens: int, use_cache: bool
) -> tuple[float, torch.Tensor]:
    if context.x.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = decoder.generate(context, new_tokens, strategy="greedy", use_cache=use_cache)
    if context.x.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=1000)
    parser.add_argument("--context", type=int, default=64, help="context tokens per sample")
    parser.add_argument("--lengths", type=int, nargs="+", default=[16, 64, 256], help="new tokens to generate")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per cell (median)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    decoder, context = build(args, device)

    print(
        f"# decode throughput: greedy, batch {args.batch}, dim {args.dim}, {args.layers} layers, {args.heads} heads, "
        f"vocab {args.vocab}, context {args.context} tokens, EOS off"
    )
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{platform.processor() or 'cpu'}"
    load = f", load avg {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
    print(f"# torch {torch.__version__}, {where}, {torch.get_num_threads()} threads{load}; median of {args.repeats}\n")
    columns = ("new tokens", "no cache tok/s", "KV cache tok/s", "speed-up", "same output")
    widths = (10, 14, 14, 8, 11)
    header = " | ".join(f"{c:>{w}}" for c, w in zip(columns, widths))
    print(header)
    print("-" * len(header))
    with torch.inference_mode():
        for use_cache in (False, True):  # warm-up: allocator, kernels, lazy init
            timed(decoder, context, min(args.lengths), use_cache)
        for n in args.lengths:
            times: dict[bool, list[float]] = {False: [], True: []}
            outputs: dict[bool, torch.Tensor] = {}
            for _ in range(args.repeats):
                for use_cache in (False, True):  # interleaved, so drifting load hits both alike
                    seconds, outputs[use_cache] = timed(decoder, context, n, use_cache)
                    times[use_cache].append(seconds)
            rate = {k: args.batch * n / statistics.median(v) for k, v in times.items()}
            same = "yes" if torch.equal(outputs[False], outputs[True]) else "NO"
            cells = (f"{n}", f"{rate[False]:,.0f}", f"{rate[True]:,.0f}", f"{rate[True] / rate[False]:.1f}x", same)
            print(" | ".join(f"{c:>{w}}" for c, w in zip(cells, widths)))


if __name__ == "__main__":
    main()
