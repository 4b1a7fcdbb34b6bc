"""Decode time per token against a long context: cross-attention keys/values cached vs recomputed.

A :class:`TextDecoder` generates from one long document (a random context of ``M`` tokens,
its last 5 % padding). With the KV cache the context's cross-attention keys/values are
projected once per ``generate`` call (the "context K/V" column) and every new token only
attends them; without it, every step recomputes them from the context — the cost a decoder
without a cross-attention cache pays. Times are medians of ``--repeats`` runs, the two modes
interleaved; the generated tokens of both must be equal.

    python benchmarks/decode_long_context.py                       # 1K, 4K, 16K, 64K context tokens
    python benchmarks/decode_long_context.py --contexts 1024 4096 --new-tokens 32
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contexts", type=int, nargs="+", default=[1024, 4096, 16384, 65536])
    parser.add_argument("--batch", type=int, default=1, help="documents decoded together")
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=1000)
    parser.add_argument("--new-tokens", type=int, default=16, help="tokens generated with the cache")
    parser.add_argument("--uncached-tokens", type=int, default=4, help="tokens generated without it (slow)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    decoder = TextDecoder(
        vocab_size=args.vocab, dim=args.dim, num_layers=args.layers, num_heads=args.heads,
        max_seq_len=max(args.new_tokens, args.uncached_tokens) + 1, pad_id=0, bos_id=1, eos_id=None,
    ).eval()

    load = f", load avg {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
    print(f"# greedy decoding from a long context: batch {args.batch}, dim {args.dim}, {args.layers} layers, "
          f"{args.heads} heads, vocab {args.vocab}; {args.new_tokens} new tokens cached, "
          f"{args.uncached_tokens} recomputed")
    print(f"# torch {torch.__version__}, {platform.processor() or 'cpu'}, {torch.get_num_threads()} threads{load}; "
          f"median of {args.repeats}\n")
    columns = ("context tokens", "context K/V ms", "cached ms/token", "recomputed ms/token", "speed-up", "same tokens")
    widths = (14, 14, 15, 19, 8, 11)
    print("| " + " | ".join(f"{c:>{w}}" for c, w in zip(columns, widths)) + " |")
    print("|" + "|".join("-" * (w + 1) + ":" for w in widths) + "|")
    with torch.inference_mode():
        for M in args.contexts:
            x = torch.randn(args.batch, M, args.dim)
            mask = torch.ones(args.batch, M, dtype=torch.bool)
            mask[:, M - M // 20 :] = False  # the document ends before the padded length
            context = ExtendedContext(x, mask, torch.zeros(args.batch, M, dtype=torch.long), ("text",))
            decoder.generate(context, 2)  # warm-up at this size
            init, cached, recomputed = [], [], []
            out = {}
            for _ in range(args.repeats):
                start = time.perf_counter()
                cache = decoder.init_cache(context, capacity=args.new_tokens + 1)
                init.append(time.perf_counter() - start)
                del cache
                start = time.perf_counter()
                out[True] = decoder.generate(context, args.new_tokens)
                cached.append(time.perf_counter() - start)
                start = time.perf_counter()
                out[False] = decoder.generate(context, args.uncached_tokens, use_cache=False)
                recomputed.append(time.perf_counter() - start)
            init_ms = statistics.median(init) * 1e3
            # per token: the generate call minus its one-off context K/V projection
            cached_ms = (statistics.median(cached) * 1e3 - init_ms) / args.new_tokens
            recomputed_ms = statistics.median(recomputed) * 1e3 / args.uncached_tokens
            same = torch.equal(out[True][:, : args.uncached_tokens], out[False])
            cells = (f"{M:,}", f"{init_ms:,.1f}", f"{cached_ms:,.2f}", f"{recomputed_ms:,.1f}",
                     f"{recomputed_ms / cached_ms:,.0f}x", "yes" if same else "NO")
            print("| " + " | ".join(f"{c:>{w}}" for c, w in zip(cells, widths)) + " |", flush=True)


if __name__ == "__main__":
    main()
