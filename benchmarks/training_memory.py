"""Training memory with and without activation checkpointing (``checkpoint_blocks``).

For N = 1K, 4K, 16K, 64K tokens (batch 1; by default the sliding-window context encoder of
``benchmarks/context_scaling.py``: D=256, 4 heads, window ±256, 2 layers, blocked backend)
it measures one training step (forward + backward of a loss on the output) of
:class:`mmctx.context.ContextEncoder` with ``checkpoint_blocks=False`` and ``=True``, then
searches, for both, the largest N whose training step fits the memory budget (24 GiB).

What is measured, honestly:

* every point runs in a fresh subprocess (``python training_memory.py --child ...``), the two
  settings interleaved at each N;
* memory: torch's CPU allocator keeps no statistics (``torch.cuda.max_memory_allocated`` has
  no CPU twin) and tracemalloc does not see torch's allocations, so the child reports its
  peak resident set size (``ru_maxrss``). ``peak`` is the whole process (Python, torch,
  model, input, activations, gradients, allocator slack); ``Δpeak`` is the peak minus the
  peak reached before the timed steps (after building the model and input and a warm-up
  step at a small N): what the training step itself added. RSS counts touched pages, so it
  bounds live tensors from above. The children run with ``MALLOC_MMAP_THRESHOLD_=131072``
  (see :func:`measure`), so that freed activations leave the RSS;
* time: wall-clock of forward + backward, the best of up to 3 repeats (fewer when slow);
  other processes on a shared machine only ever add time;
* the largest N: both settings' Δpeak grow linearly in N (sliding-window attention), so a
  least-squares line through the measured points predicts the N at which ``base + Δpeak``
  reaches the budget. Points are *run* while their predicted peak stays under
  ``--run-cap-gib`` (the machine here has 23 GiB for five people, so a 24 GiB step cannot be
  run on it): the parent kills a child whose RSS passes the cap. The table says which
  largest-N figures were run and which are the line's prediction, and how far the line was
  off at the largest point that ran.

    python benchmarks/training_memory.py                      # ~15 minutes on a 2-core CPU
    python benchmarks/training_memory.py --layers 8 --lengths 1024 4096 16384
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

from _proc import rss  # benchmarks/_proc.py, beside this script

GIB = 1024**3
MIB = 1024**2
MODES = ("plain", "checkpoint")


def child(args: argparse.Namespace) -> None:
    """Measure one (mode, N) in this process and print a JSON line."""
    import torch

    from mmctx.context import ContextEncoder
    from mmctx.types import ExtendedContext

    torch.manual_seed(0)
    model = ContextEncoder(
        args.dim, args.layers, args.heads, window=args.window, backend="blocked",
        checkpoint_blocks=args.mode == "checkpoint",
    )
    model.train()

    def step(n: int) -> float:
        x = torch.randn(1, n, args.dim)
        ctx = ExtendedContext(x, torch.ones(1, n, dtype=torch.bool), torch.zeros(1, n, dtype=torch.long), ("text",))
        model.zero_grad(set_to_none=True)
        start = time.perf_counter()
        out = model(ctx)
        out.x.pow(2).mean().backward()
        return time.perf_counter() - start

    step(max(min(args.n // 8, 1024), 128))  # warm-up at a smaller N: thread pools, kernels
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    times = []
    for _ in range(args.repeats):
        times.append(step(args.n))
        if sum(times) > 10:
            break
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"time": min(times), "repeats": len(times), "peak": peak, "base": base}))


def measure(args: argparse.Namespace, mode: str, n: int) -> dict:
    """Run one child; returns its JSON, or {"error": ...}."""
    cmd = [
        sys.executable, os.path.abspath(__file__), "--child", "--mode", mode, "--n", str(n), "--dim", str(args.dim),
        "--heads", str(args.heads), "--layers", str(args.layers), "--window", str(args.window),
        "--repeats", str(args.repeats),
    ]
    # a fixed mmap threshold: glibc then serves every allocation over 128 KiB (all activations)
    # with mmap and returns it to the system when freed, so the RSS high-water mark follows
    # the live tensors. With glibc's default *dynamic* threshold, freed activations stay in the
    # heap and the recomputation's alloc/free churn fragments it: measured here (8 layers, 4K
    # tokens) that hid 5/6 of checkpointing's saving (Δpeak 563 vs 733 MiB, instead of 100 vs 598).
    env = dict(os.environ, PYTHONWARNINGS="ignore", MALLOC_MMAP_THRESHOLD_=os.environ.get("MALLOC_MMAP_THRESHOLD_", "131072"))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    limit = args.run_cap_gib * GIB
    over = False
    while proc.poll() is None:
        if rss(proc.pid) > limit:
            proc.kill()
            over = True
            break
        time.sleep(0.05)
    out, err = proc.communicate()
    if over:
        return {"error": f"over the {args.run_cap_gib:g} GiB run cap"}
    if proc.returncode != 0:
        last = (err.strip().splitlines() or ["?"])[-1]
        return {"error": f"failed ({last[:80]})"}
    return json.loads(out.strip().splitlines()[-1])


def fit_line(points: list[tuple[int, dict]]) -> tuple[float, float]:
    """Least-squares ``peak = a + b·N`` over the measured points; returns (a, b) in bytes."""
    ns = [float(n) for n, _ in points]
    ys = [float(r["peak"]) for _, r in points]
    if len(points) == 1:
        return float(points[0][1]["base"]), (ys[0] - points[0][1]["base"]) / ns[0]
    mn, my = sum(ns) / len(ns), sum(ys) / len(ys)
    b = sum((x - mn) * (y - my) for x, y in zip(ns, ys)) / sum((x - mn) ** 2 for x in ns)
    return my - b * mn, b


def table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(header[i]), *(len(r[i]) for r in rows)) for i in range(len(header))]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |"]
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |" for r in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="plain", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, default=1024, help=argparse.SUPPRESS)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--window", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 4096, 16384, 65536])
    parser.add_argument("--budget-gib", type=float, default=24.0, help="memory budget of one training step")
    parser.add_argument("--run-cap-gib", type=float, default=8.0, help="never run a point predicted (or seen) above this")
    parser.add_argument("--max-total-seconds", type=float, default=1200.0, help="stop the largest-N search after this")
    parser.add_argument("--no-largest", action="store_true", help="skip the search for the largest N")
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    import torch

    began = time.perf_counter()
    print(
        f"# ContextEncoder training step (fwd+bwd), batch 1, D={args.dim}, {args.heads} heads, {args.layers} layers, "
        f"window ±{args.window}, blocked; torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} threads; budget {args.budget_gib:g} GiB, run cap {args.run_cap_gib:g} GiB\n"
    )
    results: dict[str, list[tuple[int, dict]]] = {m: [] for m in MODES}
    rows = []
    for n in args.lengths:
        res = {m: measure(args, m, n) for m in MODES}  # interleaved: the two settings back to back
        for m in MODES:
            if "error" not in res[m]:
                results[m].append((n, res[m]))
        cells = [f"{n:,}"]
        for m in MODES:
            r = res[m]
            cells += [r["error"], "", ""] if "error" in r else [
                f"{r['time']:.2f}", f"{(r['peak'] - r['base']) / MIB:,.0f}", f"{(r['peak'] - r['base']) / n / 1024:.1f}"
            ]
        ok = all("error" not in res[m] for m in MODES)
        p, c = res["plain"], res["checkpoint"]
        cells += [
            f"{(c['peak'] - c['base']) / (p['peak'] - p['base']):.2f}" if ok else "",
            f"{c['time'] / p['time']:.2f}" if ok else "",
        ]
        rows.append(cells)
    header = [
        "N", "plain s", "plain Δpeak MiB", "plain KiB/tok", "ckpt s", "ckpt Δpeak MiB", "ckpt KiB/tok",
        "mem ckpt/plain", "time ckpt/plain",
    ]
    print(table(header, rows))
    if args.no_largest:
        return

    print(f"\n# largest N for one training step within {args.budget_gib:g} GiB (runs capped at {args.run_cap_gib:g} GiB)")
    summary = []
    for m in MODES:
        pts = results[m]
        if not pts:
            summary.append([m, "no point ran", "", "", "", ""])
            continue
        a, b = fit_line(pts[-2:])
        best_n, best = pts[-1]
        n = best_n * 2
        while True:  # doubling while the line predicts the step fits the run cap and the time budget
            predicted = a + b * n
            predicted_time = best["time"] * n / best_n * 1.3 + 15
            if predicted > min(args.run_cap_gib, args.budget_gib) * GIB:
                print(f"{m}: N={n:,} not run, predicted peak {predicted / GIB:.1f} GiB")
                break
            if time.perf_counter() - began + predicted_time > args.max_total_seconds:
                print(f"{m}: N={n:,} not run, predicted {predicted_time:.0f} s would pass --max-total-seconds")
                break
            res = measure(args, m, n)
            if "error" in res:
                print(f"{m}: N={n:,}: {res['error']}")
                break
            err = (a + b * n) / res["peak"] - 1
            print(
                f"{m}: N={n:,} ok, {res['time']:.1f} s, peak {res['peak'] / GIB:.2f} GiB "
                f"(line predicted {err:+.1%}), {(res['peak'] - res['base']) / n / 1024:.1f} KiB/token"
            )
            pts.append((n, res))
            a, b = fit_line(pts[-2:])
            best_n, best = n, res
            n *= 2
        a, b = fit_line(pts[-2:])
        fit_n = int((args.budget_gib * GIB - a) / b)
        summary.append([
            m, f"{best_n:,}", f"{best['peak'] / GIB:.2f}", f"{best['time']:.1f}", f"{b / 1024:.1f}",
            f"{fit_n:,}" + (" (ran)" if fit_n <= best_n else " (predicted)"),
        ])
    print()
    print(table(
        ["mode", "largest N run", "its peak GiB", "its step s", "KiB/token (line)", f"largest N in {args.budget_gib:g} GiB"],
        summary,
    ))
    print(f"\ntotal benchmark time {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
