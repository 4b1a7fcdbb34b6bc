"""Training-data throughput: the default data read from local shards (StreamingDataModule,
litdata chunks) against the file-based manifest path (DefaultDataModule: one PNG and one FLAC
file per sample), in samples/s of whole training batches (decode, preprocess, collate).

Both sides load the same samples with the same preprocessing (image + audio + text, the
default data's), in one process: each round runs one pass of each side, alternating which goes
first, and the table shows the median over the rounds. The shards are made from the default
data first (generated too, if needed) unless up to date.

    python benchmarks/streaming_throughput.py                       # 3,000 samples, 5 rounds
    python benchmarks/streaming_throughput.py --num-workers 2 --rounds 3
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch

from mmctx.data import DefaultDataModule, DefaultStreamingDataModule


def one_pass(module, limit: int) -> tuple[float, int]:
    """Seconds and samples of one pass over the training loader (at most ``limit`` samples)."""
    loader = module.train_dataloader()
    start = time.perf_counter()
    count = 0
    for batch in loader:
        count += len(batch.ids)
        if count >= limit:
            break
    return time.perf_counter() - start, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=None, help="default data folder (default: the cache)")
    parser.add_argument("--samples", type=int, default=3000, help="samples per pass (at most the training split)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--modalities", nargs="+", default=["image", "audio", "text"])
    args = parser.parse_args()
    torch.set_num_threads(1)
    common = dict(root=args.root, modalities=args.modalities, batch_size=args.batch_size,
                  num_workers=args.num_workers, seed=0)
    sides = {
        "manifest (files)": DefaultDataModule(**common),
        "shards (litdata, local)": DefaultStreamingDataModule(**common),
    }
    prepared: dict[str, float] = {}
    for name, module in sides.items():
        start = time.perf_counter()
        module.prepare_data()  # generates the default data / converts it to shards unless up to date
        prepared[name] = time.perf_counter() - start
        module.setup("fit")
        one_pass(module, args.batch_size * 2)  # warm-up: page cache, lazy imports, readers

    times: dict[str, list[float]] = {name: [] for name in sides}
    counts: dict[str, int] = {}
    names = list(sides)
    for r in range(args.rounds):
        for name in names if r % 2 == 0 else names[::-1]:  # alternate who goes first
            seconds, counts[name] = one_pass(sides[name], args.samples)
            times[name].append(seconds)

    load = f", load avg {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
    print(f"# training-data throughput, default data ({', '.join(args.modalities)}), batch {args.batch_size}, "
          f"{args.num_workers} workers; median of {args.rounds} passes of {max(counts.values())} samples")
    print(f"# torch {torch.__version__}, {platform.processor() or 'cpu'}, 1 thread{load}")
    print("# prepare_data (generation / conversion when not up to date): "
          + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in prepared.items()) + "\n")
    base = statistics.median(times[names[0]]) / counts[names[0]]
    print("| data path | samples/s | ms/sample | vs manifest |")
    print("|---|---:|---:|---:|")
    for name in names:
        per = statistics.median(times[name]) / counts[name]
        print(f"| {name} | {1 / per:,.0f} | {1000 * per:.2f} | {base / per:.2f}x |")


if __name__ == "__main__":
    main()
