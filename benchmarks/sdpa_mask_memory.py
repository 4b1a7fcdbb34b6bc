"""Memory of one full-attention ``F.scaled_dot_product_attention`` call with a key-padding mask
expanded to (B, 1, N, M) (what ``mmctx.layers.attention_mask`` returned before) against the
same mask kept (B, 1, 1, M) (what it returns now for key padding alone).

SDPA turns a bool mask into a float mask of the mask's own shape before its fused kernel, so
the expanded one costs 4·N·M bytes per sample; the kept one 4·M. Each setting runs in a fresh
subprocess (peak RSS, ``MALLOC_MMAP_THRESHOLD_=131072`` as in ``training_memory.py``), one
document of N tokens, 2 heads of 16 channels (the long-context configs' ``full.yaml``):

    python benchmarks/sdpa_mask_memory.py --n 8192
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

MIB = 1024**2


def child(n: int, how: str) -> None:
    import resource
    import time

    import torch
    import torch.nn.functional as F

    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 2, n, 16) for _ in range(3))
    mask = torch.ones(1, n, dtype=torch.bool)[:, None, None, :]  # (B, 1, 1, M)
    if how == "expanded":
        mask = mask.expand(1, 1, n, n)  # (B, 1, N, M), a view
    warm = mask[:, :, :64] if how == "expanded" else mask
    F.scaled_dot_product_attention(q[:, :, :64], k, v, attn_mask=warm)  # warm-up: kernels, thread pool
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    start = time.perf_counter()
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"delta_peak": peak - base, "seconds": seconds, "sum": float(out.double().sum())}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=8192, help="tokens of the document (queries = keys)")
    parser.add_argument("--child", choices=("expanded", "kept"), default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.n, args.child)
        return
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_=os.environ.get("MALLOC_MMAP_THRESHOLD_", "131072"))
    results = {}
    for how in ("expanded", "kept"):
        out = subprocess.run([sys.executable, os.path.abspath(__file__), "--n", str(args.n), "--child", how],
                             capture_output=True, text=True, env=env, check=True).stdout
        results[how] = json.loads(out.strip().splitlines()[-1])
    n = args.n
    print(f"| mask (N = {n:,}) | Δpeak RSS MiB | 4·N·M MiB | SDPA s |")
    print("|---|---|---|---|")
    for how, r in results.items():
        print(f"| {how} | {r['delta_peak'] / MIB:,.0f} | {4 * n * n / MIB:,.0f} | {r['seconds']:.2f} |")
    same = abs(results["expanded"]["sum"] - results["kept"]["sum"]) <= 1e-6 * max(1.0, abs(results["kept"]["sum"]))
    print(f"same output: {'yes' if same else 'NO'}")


if __name__ == "__main__":
    main()
