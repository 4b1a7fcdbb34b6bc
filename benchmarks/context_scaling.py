"""Context-encoder scaling: sliding-window attention (blocked backend) vs full attention.

For N = 1K, 4K, 16K, 64K tokens (batch 1, D=256, 4 heads, window ±256, 2 layers by default)
it measures one forward + backward pass of :class:`mmctx.context.ContextEncoder` with a
window (``window=256``, blocked backend) and without one (full attention), then doubles N for
the sliding-window encoder until one training step no longer fits the memory budget (default
20 GiB).

What is measured, honestly:

* every measurement runs in a fresh subprocess (``python context_scaling.py --child ...``);
* time: wall-clock of ``forward`` + ``backward`` (a loss on the output), after one warm-up
  step at a small N; the best of up to 3 repeats (fewer when they take over 10 s) — the
  minimum, because other processes on a shared machine only ever add time;
* memory: the child's peak resident set size (``ru_maxrss``): ``peak`` is the whole
  process (Python, torch, model, input, activations, gradients, allocator slack);
  ``Δpeak`` is the peak minus the peak reached before the timed steps (after building the
  model and input and a warm-up at a small N), i.e. what the training step itself added.
  bytes/N = Δpeak / N. RSS counts pages touched, so it is an upper bound on live tensors;
* the parent watches each child's RSS and kills it above the budget ("over budget"); full
  attention is not started where its time or Δpeak, extrapolated as N² from the previous
  full-attention row, would exceed ``--max-seconds`` or the budget ("skipped");
* the machine may be shared: other processes inflate times (never memory), most at small N.

    python benchmarks/context_scaling.py                 # about 10 minutes on a 2-core CPU
    python benchmarks/context_scaling.py --layers 1 --no-largest

``--vs-local-attention``: the sliding-window encoder against lucidrains' ``local-attention``
(``pip install local-attention``) at equal size — each layer ``LocalMHA`` (pre-norm, fused
QKV, rotary, ``exact_windowsize=True``: the same ±window band) + the same pre-norm MLP as
mmctx's block, and a final LayerNorm; by default D=256, 4 heads, 2 layers, ±128,
N = 4K / 16K / 64K. Time: fwd+bwd of both in ONE process, interleaved, medians of
``--repeats`` after a warm-up at each N. Memory: each (side, N) once more in a fresh child,
peak RSS (VmHWM) minus the RSS before the step (CPU has no allocator statistics; glibc is told to
mmap every allocation above 64 KiB and unmap it on free, so RSS follows the live tensors).

    python benchmarks/context_scaling.py --vs-local-attention
    python benchmarks/context_scaling.py --vs-local-attention --block-size 128   # other block length
    python benchmarks/context_scaling.py --vs-local-attention --profile          # + where the time goes
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
DEFAULT_LENGTHS = [1024, 4096, 16384, 65536]


def child(args: argparse.Namespace) -> None:
    """Measure one (method, N) in this process and print a JSON line."""
    import torch

    from mmctx.context import ContextEncoder
    from mmctx.types import ExtendedContext

    torch.manual_seed(0)
    window = args.window if args.method == "sliding" else None  # None: full attention
    model = ContextEncoder(args.dim, args.layers, args.heads, window=window, backend="blocked")

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
    for _ in range(3):
        times.append(step(args.n))
        if sum(times) > 10:
            break
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"time": min(times), "repeats": len(times), "peak": peak, "base": base}))


def _peer_encoder(dim: int, layers: int, heads: int, window: int):
    """lucidrains' local-attention at mmctx's block layout (pre-norm attention + MLP, final norm)."""
    from local_attention import LocalMHA
    from torch import nn

    from mmctx.layers.block import FeedForward

    class LocalAttentionEncoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attn = nn.ModuleList(
                LocalMHA(dim=dim, window_size=window, dim_head=dim // heads, heads=heads, causal=False, prenorm=True,
                         exact_windowsize=True, look_backward=1, look_forward=1)
                for _ in range(layers)
            )
            self.ff = nn.ModuleList(nn.Sequential(nn.LayerNorm(dim), FeedForward(dim, 4 * dim)) for _ in range(layers))
            self.norm = nn.LayerNorm(dim)

        def forward(self, x, mask):
            for attn, ff in zip(self.attn, self.ff):
                x = x + attn(x, mask=mask)
                x = x + ff(x)
            return self.norm(x)

    return LocalAttentionEncoder()


def _vs_sides(args: argparse.Namespace):
    """{side: fn(x, mask) -> output} for the mmctx encoder and the local-attention one."""
    import functools

    import torch

    from mmctx.context import ContextEncoder
    from mmctx.layers import banded_attention as ba
    from mmctx.types import ExtendedContext

    torch.manual_seed(0)
    ours = ContextEncoder(args.dim, args.layers, args.heads, window=args.window, backend="blocked")
    if args.block_size:
        # the benchmark's knob for the query-block length (the layers use the default)
        ba.default_block_size = lambda window: args.block_size  # type: ignore[assignment]
    peer = _peer_encoder(args.dim, args.layers, args.heads, args.window)
    if args.compile:
        start = time.perf_counter()
        ours = torch.compile(ours)
        x = torch.randn(1, 1024, args.dim)
        m = torch.ones(1, 1024, dtype=torch.bool)
        ours(ExtendedContext(x, m, torch.zeros_like(m, dtype=torch.long), ("text",))).x.sum().backward()
        print(f"# torch.compile of the mmctx encoder: first fwd+bwd (N=1,024) {time.perf_counter() - start:.1f} s")

    def run_ours(x, mask):
        return ours(ExtendedContext(x, mask, torch.zeros_like(mask, dtype=torch.long), ("text",))).x

    return {"mmctx": run_ours, "local-attention": functools.partial(peer)}


def _vs_step(fn, n: int, dim: int) -> float:
    import torch

    x = torch.randn(1, n, dim)
    mask = torch.ones(1, n, dtype=torch.bool)
    start = time.perf_counter()
    fn(x, mask).pow(2).mean().backward()
    return time.perf_counter() - start


#: operator → part of the step, for ``--profile``. The linear layers (QKV, output, MLP) are
#: ``mm``/``addmm`` on both sides (local-attention's einsums are ``bmm``).
_PARTS = {
    "aten::mm": "linear layers (mm/addmm, fwd+bwd)",
    "aten::addmm": "linear layers (mm/addmm, fwd+bwd)",
    "aten::_scaled_dot_product_flash_attention_for_cpu": "attention products (SDPA / bmm)",
    "aten::_scaled_dot_product_flash_attention_for_cpu_backward": "attention products (SDPA / bmm)",
    "aten::bmm": "attention products (SDPA / bmm)",
    "aten::gelu": "GELU + LayerNorm (MLP, norms)",
    "aten::gelu_backward": "GELU + LayerNorm (MLP, norms)",
    "aten::native_layer_norm": "GELU + LayerNorm (MLP, norms)",
    "aten::native_layer_norm_backward": "GELU + LayerNorm (MLP, norms)",
}


def _profile_split(fn, n: int, dim: int) -> tuple[float, dict[str, float], list[tuple[str, float]]]:
    """One profiled fwd+bwd: (step seconds, seconds per part of the step, top operators)."""
    from torch.profiler import profile

    with profile() as prof:
        seconds = _vs_step(fn, n, dim)
    parts: dict[str, float] = {}
    ops = []
    for e in prof.key_averages():
        t = e.self_cpu_time_total / 1e6
        parts[_PARTS.get(e.key, "everything else")] = parts.get(_PARTS.get(e.key, "everything else"), 0.0) + t
        ops.append((e.key, t))
    return seconds, parts, sorted(ops, key=lambda o: -o[1])[:8]


def _print_profiles(sides: dict, lengths: list[int], dim: int) -> None:
    """``--profile``: where each side's step goes (torch.profiler, one fwd+bwd after the timed ones)."""
    print("\n# --profile: one fwd+bwd per side and N under torch.profiler (operator self time)")
    for fn in sides.values():
        _profile_split(fn, 256, dim)  # the profiler's own start-up, not counted
    keys = list(dict.fromkeys(_PARTS.values())) + ["everything else"]
    for n in lengths:
        split = {name: _profile_split(fn, n, dim) for name, fn in sides.items()}
        names = list(split)
        print(f"\n| N={n:,} | " + " | ".join(f"{k} ms | share" for k in names) + " |")
        print("|---|" + "---:|---:|" * len(names))
        for k in keys:
            cells = []
            for name in names:
                _, parts, _ = split[name]
                total = sum(parts.values())
                cells += [f"{parts.get(k, 0) * 1e3:,.0f}", f"{parts.get(k, 0) / total:.0%}"]
            print(f"| {k} | " + " | ".join(cells) + " |")
        print("| profiled step (wall) | " + " | ".join(f"{split[k][0] * 1e3:,.0f} | 100%" for k in names) + " |")
        for name in names:
            print(f"# {name} N={n:,} top operators: " + ", ".join(f"{k} {t * 1e3:.0f} ms" for k, t in split[name][2]))


def _proc_status(field: str) -> int:
    """A ``/proc/self/status`` memory field (VmRSS, VmHWM) in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def vs_child(args: argparse.Namespace) -> None:
    """Memory of one side at one N, in this fresh process: print a JSON line.

    The peak is VmHWM (this process's own peak RSS; ``ru_maxrss`` would carry the forking
    parent's over exec), reset after the warm-up through ``/proc/self/clear_refs``.
    """
    fn = _vs_sides(args)[args.method]
    _vs_step(fn, 256, args.dim)  # warm-up at a small N: thread pools, kernels
    base = _proc_status("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current RSS
    _vs_step(fn, args.n, args.dim)
    peak = _proc_status("VmHWM")
    print(json.dumps({"base": base, "peak": peak}))


def vs_local_attention(args: argparse.Namespace) -> None:
    """Time both sides interleaved in this process, then memory in fresh children; print the table."""
    import statistics

    import torch

    lengths = args.lengths if args.lengths != DEFAULT_LENGTHS else [4096, 16384, 65536]
    print(
        f"# fwd+bwd, batch 1, D={args.dim}, {args.heads} heads, {args.layers} layers, window ±{args.window}, "
        f"block {args.block_size or 'default'}; torch {torch.__version__}, {torch.get_num_threads()} thread(s); "
        f"time: median of {args.repeats}, interleaved in one process; memory: peak RSS − RSS before, fresh child"
    )
    sides = _vs_sides(args)
    times: dict[tuple[str, int], float] = {}
    for n in lengths:
        for fn in sides.values():
            _vs_step(fn, n, args.dim)  # warm-up at this N
        samples: dict[str, list[float]] = {name: [] for name in sides}
        for _ in range(args.repeats):
            for name, fn in sides.items():
                samples[name].append(_vs_step(fn, n, args.dim))
        for name in sides:
            times[name, n] = statistics.median(samples[name])
        print(f"# N={n:,}: " + ", ".join(f"{k} {[round(t, 3) for t in v]}" for k, v in samples.items()), flush=True)
    if args.profile:
        _print_profiles(sides, lengths, args.dim)
    mem: dict[tuple[str, int], float] = {}
    for n in lengths:
        for name in sides:
            if args.no_memory:
                mem[name, n] = float("nan")
                continue
            cmd = [sys.executable, os.path.abspath(__file__), "--vs-child", "--method", name, "--n", str(n),
                   "--dim", str(args.dim), "--heads", str(args.heads), "--layers", str(args.layers),
                   "--window", str(args.window), "--block-size", str(args.block_size)]
            # glibc: serve every allocation above 64 KiB by mmap and return it on free, so
            # RSS follows the live tensors and its peak is the step's peak (not allocator reuse)
            env = dict(os.environ, PYTHONWARNINGS="ignore", MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0")
            res = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if res.returncode != 0:
                mem[name, n] = float("nan")
                continue
            r = json.loads(res.stdout.strip().splitlines()[-1])
            mem[name, n] = (r["peak"] - r["base"]) / MIB
    print("| N | mmctx ms | local-attention ms | speed-up | mmctx Δpeak MiB | local-attention Δpeak MiB | memory ratio |")
    print("|---|---|---|---|---|---|---|")
    for n in lengths:
        a, b = times["mmctx", n], times["local-attention", n]
        ma, mb = mem["mmctx", n], mem["local-attention", n]
        print(f"| {n:,} | {a * 1e3:,.0f} | {b * 1e3:,.0f} | {b / a:.2f}× | {ma:,.0f} | {mb:,.0f} | {ma / mb:.2f} |")


def measure(args: argparse.Namespace, method: str, n: int) -> dict:
    """Run one child; returns its JSON, or {"error": ...}."""
    cmd = [
        sys.executable, os.path.abspath(__file__), "--child", "--method", method, "--n", str(n),
        "--dim", str(args.dim), "--heads", str(args.heads), "--layers", str(args.layers), "--window", str(args.window),
    ]
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    limit = args.budget_gib * GIB
    over = False
    while proc.poll() is None:
        if rss(proc.pid) > limit:
            proc.kill()
            over = True
            break
        time.sleep(0.05)
    out, err = proc.communicate()
    if over:
        return {"error": "over budget"}
    if proc.returncode != 0:
        last = (err.strip().splitlines() or ["?"])[-1]
        return {"error": f"failed ({last[:80]})"}
    return json.loads(out.strip().splitlines()[-1])


def fmt_row(n: int, res: dict | None) -> list[str]:
    if res is None:
        return ["-"] * 5
    if "error" in res:
        return [res["error"], "", "", "", ""]
    delta = res["peak"] - res["base"]
    return [
        f"{res['time']:.3f}",
        f"{res['time'] / n * 1e6:.1f}",
        f"{res['peak'] / MIB:,.0f}",
        f"{delta / MIB:,.0f}",
        f"{delta / n / 1024:.1f}",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--method", default="sliding", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, default=1024, help=argparse.SUPPRESS)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--window", type=int, default=256)
    parser.add_argument("--lengths", type=int, nargs="+", default=DEFAULT_LENGTHS)
    parser.add_argument("--vs-local-attention", action="store_true", help="compare with lucidrains' local-attention")
    parser.add_argument("--vs-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, default=3, help="--vs-local-attention: timed steps per side and N")
    parser.add_argument("--block-size", type=int, default=0, help="--vs-local-attention: query-block length (0: default)")
    parser.add_argument("--compile", action="store_true", help="--vs-local-attention: torch.compile the mmctx encoder")
    parser.add_argument("--no-memory", action="store_true", help="--vs-local-attention: time only (no memory children)")
    parser.add_argument("--profile", action="store_true",
                        help="--vs-local-attention: also profile one step per side and N (where the time goes)")
    parser.add_argument("--max-seconds", type=float, default=120.0, help="skip a measurement predicted to take longer")
    parser.add_argument("--budget-gib", type=float, default=20.0, help="memory budget of one training step")
    parser.add_argument("--no-largest", action="store_true", help="skip the search for the largest N")
    parser.add_argument("--max-total-seconds", type=float, default=600.0, help="stop the largest-N search after this")
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    if args.vs_child:
        vs_child(args)
        return
    if args.vs_local_attention:
        if args.window == 256 and "--window" not in sys.argv:
            args.window = 128
        vs_local_attention(args)
        return

    import torch

    began = time.perf_counter()
    print(
        f"# context encoder fwd+bwd, batch 1, D={args.dim}, {args.heads} heads, {args.layers} layers, "
        f"window ±{args.window}; torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} threads; memory budget {args.budget_gib:g} GiB"
    )
    header = ["N", "method", "time s", "µs/token", "peak MiB", "Δpeak MiB", "KiB/token"]
    rows: list[list[str]] = []
    results: dict[int, dict] = {}
    last_full: tuple[int, float, float] | None = None
    for n in args.lengths:
        res = measure(args, "sliding", n)
        results[n] = res
        rows.append([f"{n:,}", "sliding"] + fmt_row(n, res))
        # full attention: extrapolate time and extra memory as N² from the previous full row
        if last_full is not None:
            scale = (n / last_full[0]) ** 2
            predicted, predicted_mem = last_full[1] * scale, last_full[2] * scale
        else:
            predicted, predicted_mem = 0.0, 0.0
        if predicted > args.max_seconds or predicted_mem > args.budget_gib * GIB:
            rows.append(
                [f"{n:,}", "full", f"skipped: est. {predicted:,.0f} s (limit {args.max_seconds:g} s), "
                 f"est. Δpeak {predicted_mem / GIB:,.0f} GiB (budget {args.budget_gib:g} GiB)", "", "", "", ""]
            )
            continue
        res = measure(args, "full", n)
        rows.append([f"{n:,}", "full"] + fmt_row(n, res))
        if "error" not in res:
            last_full = (n, res["time"], float(res["peak"] - res["base"]))
        else:
            last_full = (n, float("inf"), float("inf"))
    # column widths ignore the long "skipped: ..." notes, which simply overflow their cell
    widths = [max([len(header[i])] + [len(r[i]) for r in rows if len(r[i]) < 24]) for i in range(len(header))]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |")

    if args.no_largest:
        return
    print(f"\n# largest N for one sliding-window training step within {args.budget_gib:g} GiB (doubling N)")
    last_n = max(args.lengths)
    last = results[last_n]
    if "error" in last:
        print(f"the sliding encoder failed at N={last_n:,}; no search")
        return
    per_token = (last["peak"] - last["base"]) / last_n
    print(
        f"linear fit from N={last_n:,}: {per_token / 1024:.1f} KiB/token over a {last['base'] / GIB:.2f} GiB base → "
        f"about {int((args.budget_gib * GIB - last['base']) / per_token):,} tokens fit in {args.budget_gib:g} GiB"
    )
    n, best = last_n * 2, None
    while True:
        predicted_peak = last["base"] + per_token * n
        predicted_time = last["time"] * n / last_n * 1.3 + 15  # + warm-up, start-up
        if predicted_peak > args.budget_gib * GIB:
            print(f"N={n:,}: not run, predicted peak {predicted_peak / GIB:.1f} GiB > {args.budget_gib:g} GiB")
            break
        if time.perf_counter() - began + predicted_time > args.max_total_seconds:
            print(f"N={n:,}: not run, predicted {predicted_time:.0f} s would pass the {args.max_total_seconds:g} s budget")
            break
        res = measure(args, "sliding", n)
        if "error" in res:
            print(f"N={n:,}: {res['error']}")
            break
        print(
            f"N={n:,}: ok, {res['time']:.1f} s ({res['time'] / n * 1e6:.0f} µs/token), peak {res['peak'] / GIB:.2f} GiB, "
            f"{(res['peak'] - res['base']) / n / 1024:.1f} KiB/token"
        )
        best, last_n, last = n, n, res
        n *= 2
    if best is not None:
        # one more try between the last doubling and the linear-fit limit (multiples of 64K, 5% margin)
        fit = (args.budget_gib * GIB - last["base"]) / per_token
        n = int(0.95 * fit) // 65536 * 65536
        predicted_time = last["time"] * n / last_n * 1.3 + 15
        if n > best and time.perf_counter() - began + predicted_time <= args.max_total_seconds:
            res = measure(args, "sliding", n)
            if "error" in res:
                print(f"N={n:,}: {res['error']}")
            else:
                print(f"N={n:,}: ok, {res['time']:.1f} s ({res['time'] / n * 1e6:.0f} µs/token), "
                      f"peak {res['peak'] / GIB:.2f} GiB, {(res['peak'] - res['base']) / n / 1024:.1f} KiB/token")
                best = n
        elif n > best:
            print(f"N={n:,}: not run, predicted {predicted_time:.0f} s would pass the {args.max_total_seconds:g} s budget")
    print(f"largest N that trained one step here: {best:,}" if best else "no N above the table was run")
    print(f"total benchmark time {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
