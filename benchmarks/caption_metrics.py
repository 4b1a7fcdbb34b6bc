"""Caption metrics: mmctx.metrics against pycocoevalcap's pure-Python scorers.

Both sides score the same synthetic split (``--samples`` long captions, five references
each, drawn from a Zipf vocabulary; every candidate is a perturbed reference so n-grams of
all orders match), already normalised, so pycocoevalcap needs no (Java) tokenizer; mmctx
still normalises its input, inside the timed region. Per metric and for the full set, the two
sides run interleaved in one process (one warm-up each, then the median of ``--repeats``),
1 thread; wall-clock and CPU-time medians are both printed (on a shared machine the CPU
time is the steadier of the two). The values are compared first: BLEU-1..4 and CIDEr-D must agree to 1e-6 and
ROUGE-L (with coco's beta = 1.2) too.

    pip install --no-deps pycocoevalcap        # only its bleu/, rouge/, cider/ scorers are used
    python benchmarks/caption_metrics.py       # 1,000 samples, 7 repeats
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable

os.environ.setdefault("OMP_NUM_THREADS", "1")

from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.rouge.rouge import Rouge

from mmctx.metrics import bleu, caption_metrics, cider_d, rouge_l


def make_split(num: int, seed: int) -> tuple[list[str], list[list[str]]]:
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(2000)]
    weights = [1.0 / (i + 1) for i in range(len(vocab))]

    def caption(length: int) -> list[str]:
        return rng.choices(vocab, weights, k=length)

    cands, refs = [], []
    for _ in range(num):
        sample_refs = [caption(rng.randint(18, 40)) for _ in range(5)]
        cand = list(rng.choice(sample_refs))
        for _ in range(rng.randint(2, 10)):  # substitutions, deletions, insertions
            op, pos = rng.random(), rng.randrange(len(cand))
            if op < 0.5:
                cand[pos] = rng.choices(vocab, weights)[0]
            elif op < 0.75 and len(cand) > 5:
                del cand[pos]
            else:
                cand.insert(pos, rng.choices(vocab, weights)[0])
        cands.append(" ".join(cand))
        refs.append([" ".join(r) for r in sample_refs])
    return cands, refs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass

    cands, refs = make_split(args.samples, args.seed)
    gts = {i: r for i, r in enumerate(refs)}
    res = {i: [c] for i, c in enumerate(cands)}

    def coco_bleu() -> list[float]:
        return list(Bleu(4).compute_score(gts, res, verbose=0)[0])

    def coco_rouge() -> float:
        return float(Rouge().compute_score(gts, res)[0])

    def coco_cider() -> float:
        return float(Cider().compute_score(gts, res)[0])

    def coco_all() -> list[float]:
        return coco_bleu() + [coco_rouge(), coco_cider()]

    def ours_bleu() -> list[float]:
        return list(bleu(cands, refs).values())

    def ours_rouge() -> float:
        return rouge_l(cands, refs, beta=1.2)

    def ours_cider() -> float:
        return cider_d(cands, refs)[0]

    def ours_all() -> list[float]:
        m = caption_metrics(cands, refs, rouge_beta=1.2)
        return [m["bleu1"], m["bleu2"], m["bleu3"], m["bleu4"], m["rougeL"], m["cider"]]

    # parity first
    ours, coco = ours_all(), coco_all()
    names = ["BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "ROUGE-L", "CIDEr-D"]
    worst = 0.0
    for name, a, b in zip(names, ours, coco):
        worst = max(worst, abs(a - b))
        print(f"{name:8s} mmctx {a:.10f}  pycocoevalcap {b:.10f}  |diff| {abs(a - b):.1e}")
    if worst > 1e-6:
        sys.exit(f"values differ by {worst:.1e} > 1e-6")

    rows: list[tuple[str, Callable, Callable]] = [
        ("BLEU-1..4", ours_bleu, coco_bleu),
        ("ROUGE-L", ours_rouge, coco_rouge),
        ("CIDEr-D", ours_cider, coco_cider),
        ("full set", ours_all, coco_all),
    ]
    print(f"\n{args.samples} samples x 5 references, median of {args.repeats}, 1 thread, "
          f"Python {platform.python_version()}, {platform.processor() or platform.machine()}\n")
    print("| metric | mmctx (s) | pycocoevalcap (s) | mmctx speed / pycocoevalcap | same, CPU time: mmctx / coco (s), ratio |")
    print("|---|---|---|---|---|")
    for name, ours_fn, coco_fn in rows:
        wall: dict[str, list[float]] = {"ours": [], "coco": []}
        cpu: dict[str, list[float]] = {"ours": [], "coco": []}
        ours_fn(), coco_fn()  # warm-up
        for _ in range(args.repeats):
            for key, fn in (("ours", ours_fn), ("coco", coco_fn)):
                start, start_cpu = time.perf_counter(), time.process_time()
                fn()
                wall[key].append(time.perf_counter() - start)
                cpu[key].append(time.process_time() - start_cpu)
        w_ours, w_coco = statistics.median(wall["ours"]), statistics.median(wall["coco"])
        c_ours, c_coco = statistics.median(cpu["ours"]), statistics.median(cpu["coco"])
        print(
            f"| {name} | {w_ours:.3f} | {w_coco:.3f} | {w_coco / w_ours:.2f} "
            f"| {c_ours:.3f} / {c_coco:.3f}, {c_coco / c_ours:.2f} |"
        )

if __name__ == "__main__":
    main()
