"""Training step time of the image-caption model (configs/caption_image.yaml), eager vs compiled.

Builds the task and data module from a config exactly as ``mmctx fit`` does (sizes filled in
from the data), loads a few real training batches of the default data into memory, and times
full optimisation steps (teacher-forced loss, backward, AdamW step) side by side:

* eager PyTorch;
* the same model compiled by the task's ``compile`` switch, one variant per ``--variants``
  scope: ``model`` (``compile: true``, ``nn.Module.compile`` of the whole model's forward),
  ``decoder`` (``compile: decoder``: only the text decoder, the CNN stays eager), or any dotted
  submodule name(s) joined by ``+`` (``fusion+decoder``, ``encoders``), optionally with a
  tweak of the Inductor options (``decoder:inductor-rng``, see ``TWEAKS``); each one-off
  compile time is reported apart (the first compile in a process also pays Inductor's set-up).

For the compiled variant it also reports the graphs Dynamo compiled during the first calls
and how many frames it (re)compiled during the timed steps (0: no recompiles).

Both start from the same weights; their losses on the first batch in eval mode (no dropout)
are compared so the compiled
model is known to compute the same thing (``--no-check`` skips it, and with it the compile of
the evaluation graphs). One warm-up step each, then the median of ``--steps`` steps,
interleaved so that drifting machine load hits all alike, split into forward (loss),
backward and optimizer step. ``--profile`` adds, per variant and phase, the time of each
kind of operator (torch.profiler, Inductor's kernels included): where a compiled step wins
or loses against eager.

    python benchmarks/caption_step_time.py                      # CPU, the config's batch size
    python benchmarks/caption_step_time.py --batch-size 16 --steps 5
    python benchmarks/caption_step_time.py --variants model decoder --steps 5 --profile
    python benchmarks/caption_step_time.py --device cuda --no-compile
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def build(config: Path, batch_size: int | None):
    """The task and data module of ``config``, as the CLI builds them (no training)."""
    from mmctx.cli import MMCtxCLI
    import lightning as L

    args = [f"--config={config}", "--data.num_workers=0"]
    if batch_size:
        args.append(f"--data.batch_size={batch_size}")
    cli = MMCtxCLI(
        L.LightningModule, L.LightningDataModule, subclass_mode_model=True, subclass_mode_data=True,
        auto_configure_optimizers=False, run=False, args=args,
    )
    return cli.model, cli.datamodule


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


#: operator kinds of the profile table, first match wins (names lower-cased)
KINDS = (
    ("inductor kernels", ("cpp_fused", "cpp_kernel", "kernel_cpp")),
    ("conv backward", ("convolution_backward",)),
    ("conv forward", ("convolution",)),
    ("batch norm", ("batch_norm",)),
    ("max pool", ("max_pool",)),
    ("matmul", ("addmm", "aten::mm", "bmm", "matmul", "aten::linear")),
    ("attention", ("scaled_dot_product", "flash_attention", "efficient_attention")),
    ("optimizer (foreach)", ("_foreach", "adamw")),
    ("copies / layout", ("copy_", "clone", "contiguous", "_to_copy", "as_strided_scatter")),
    ("softmax / loss", ("softmax", "nll_loss", "cross_entropy")),
)


def kind(name: str) -> str:
    low = name.lower()
    for label, keys in KINDS:
        if any(k in low for k in keys):
            return label
    return "other (element-wise, glue)"


#: ``--variants`` suffixes (``decoder:inductor-rng``): Inductor settings of that variant's compile
TWEAKS = {
    "inductor-rng": "Inductor's own random numbers for dropout (fallback_random=False, torch's default) "
                    "instead of the switch's ATen generator",
}


def scope_of(variant: str) -> tuple[bool | str | list[str], set[str]]:
    """The ``compile`` switch's value for a variant name (``model`` → True, ``a+b`` → [a, b])
    and its tweaks (``name:tweak,tweak``)."""
    variant, _, tweaks = variant.partition(":")
    unknown = set(filter(None, tweaks.split(","))) - set(TWEAKS)
    if unknown:
        raise SystemExit(f"--variants: unknown tweak(s) {sorted(unknown)}; known: {sorted(TWEAKS)}")
    names = variant.split("+")
    scope = True if variant == "model" else names[0] if len(names) == 1 else names
    return scope, set(filter(None, tweaks.split(",")))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "caption_image.yaml")
    parser.add_argument("--batch-size", type=int, default=0, help="0: the config's")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per variant (median)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--variants", nargs="*", default=["model"],
                        help="compile scopes beside eager: model (the whole model), decoder, a+b, ...")
    parser.add_argument("--no-compile", action="store_true", help="time eager only")
    parser.add_argument("--no-check", action="store_true", help="skip the eval-mode loss comparison")
    parser.add_argument("--profile", action="store_true", help="per variant and phase, time per operator kind")
    parser.add_argument("--profile-steps", type=int, default=2)
    parser.add_argument("--no-cache", action="store_true",
                        help="no Inductor/AOTAutograd on-disk caches (cold compile times)")
    args = parser.parse_args()
    if args.no_cache:
        import torch._functorch.config as functorch_config
        import torch._inductor.config as inductor_config

        inductor_config.fx_graph_cache = False
        functorch_config.enable_autograd_cache = False
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.profile:
        import torch._inductor.config as inductor_config

        inductor_config.cpp.enable_kernel_profile = True  # Inductor's C++ kernels as profiler events

    task, dm = build(args.config, args.batch_size or None)
    dm.prepare_data()
    dm.setup("fit")
    loader = dm.train_dataloader()
    batches = []
    for batch in loader:
        batches.append(batch.to(device))
        if len(batches) == 4:
            break
    task = task.to(device).train()

    variants = {"eager": task}
    tweaks: dict[str, set[str]] = {"eager": set()}
    for name in [] if args.no_compile else args.variants:
        compiled = copy.deepcopy(task)
        compiled.compile_model, tweaks[name] = scope_of(name)  # the task's ``compile`` switch
        if "inductor-rng" in tweaks[name]:
            compiled.compile_options = {**compiled.compile_options, "fallback_random": False}
        compiled.configure_model()  # as the Trainer applies it
        variants[name] = compiled
    for tweak in set().union(*tweaks.values()):
        print(f"# tweak {tweak}: {TWEAKS[tweak]}")
    frames = torch._dynamo.utils.counters["frames"]
    optimizers = {name: torch.optim.AdamW(t.parameters(), lr=1e-3) for name, t in variants.items()}
    PHASES = ("forward", "backward", "optimizer")

    def step(name: str, i: int, hook=None) -> dict[str, float]:
        t, opt = variants[name], optimizers[name]
        batch = batches[i % len(batches)]
        out, phase_times = {}, {}

        def forward():
            out["loss"] = t.loss(batch)

        def backward():
            opt.zero_grad(set_to_none=True)
            out["loss"].backward()

        for phase, fn in zip(PHASES, (forward, backward, opt.step)):
            sync(device)
            start = time.perf_counter()
            if hook is None:
                fn()
            else:
                with hook(phase):
                    fn()
            sync(device)
            phase_times[phase] = time.perf_counter() - start
        phase_times["step"] = sum(phase_times.values())
        return phase_times

    first: dict[str, float] = {}
    compile_s: dict[str, float] = {}
    for name, t in variants.items():  # first calls (compilation: eval graph, then train graph)
        start = time.perf_counter()
        if not args.no_check:
            with torch.no_grad():
                t.eval()
                first[name] = t.loss(batches[0]).item()
                t.train()
        compile_s[name] = time.perf_counter() - start + step(name, 0)["step"]
        print(f"# {name}: first calls {compile_s[name]:.1f} s", flush=True)
    graphs = frames["ok"]
    times: dict[str, dict[str, list[float]]] = {name: {p: [] for p in (*PHASES, "step")} for name in variants}
    for i in range(1, args.steps + 1):
        for name in variants:
            for phase, s in step(name, i).items():
                times[name][phase].append(s)
    recompiled = frames["ok"] - graphs

    n_params = sum(p.numel() for p in task.parameters() if p.requires_grad)
    bs = batches[0].targets["caption"].shape[0]
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    load = f", load avg {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
    print(f"# training step of {args.config.name}: batch {bs}, {n_params / 1e6:.2f} M trainable parameters")
    print(f"# torch {torch.__version__}, {where}, {torch.get_num_threads()} threads{load}; median of {args.steps}\n")
    columns = ("variant", "first calls s", "ms/step", "fwd ms", "bwd ms", "opt ms", "samples/s", "vs eager",
               "eval loss")
    widths = (16, 12, 8, 7, 7, 7, 9, 8, 10)
    header = " | ".join(f"{c:>{w}}" for c, w in zip(columns, widths))
    print(header)
    print("-" * len(header))

    def med(name: str, phase: str) -> float:
        return statistics.median(times[name][phase]) * 1e3

    eager_ms = med("eager", "step")
    for name in variants:
        ms = med(name, "step")
        cells = (name, f"{compile_s[name]:.1f}", f"{ms:.0f}", *(f"{med(name, p):.0f}" for p in PHASES),
                 f"{bs / ms * 1e3:.0f}", f"{eager_ms / ms:.2f}x", f"{first[name]:.4f}" if first else "-")
        print(" | ".join(f"{c:>{w}}" for c, w in zip(cells, widths)))
    if len(first) >= 2:
        for name in list(first)[1:]:
            diff = abs(first["eager"] - first[name])
            print(f"\neval-mode loss on the first batch, eager vs {name}: difference {diff:.2e}")
    if len(variants) >= 2:
        print(f"compiled frames (graphs) in the first calls: {graphs}; (re)compiled during the timed steps: "
              f"{recompiled}")
    if args.profile and device.type == "cpu":
        profile_table(variants, step, args.profile_steps, PHASES)


def profile_table(variants, step, n: int, phases) -> None:
    """Per variant, phase and operator kind: self CPU time per step (ms), then each variant's top operators."""
    from contextlib import contextmanager

    from torch.profiler import ProfilerActivity, profile

    table: dict[str, dict[tuple[str, str], float]] = {name: {} for name in variants}
    tops: dict[str, dict[str, float]] = {name: {} for name in variants}

    def hook_of(name: str):
        sums, ops = table[name], tops[name]

        @contextmanager
        def hook(phase):
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                yield
            for e in prof.key_averages():
                us = e.self_cpu_time_total / n
                sums[(phase, kind(e.key))] = sums.get((phase, kind(e.key)), 0.0) + us
                ops[f"{phase}: {e.key}"] = ops.get(f"{phase}: {e.key}", 0.0) + us

        return hook

    for i in range(n):  # interleaved, as the timed steps
        for name in variants:
            step(name, 100 + i, hook_of(name))
    names = list(variants)
    labels = [label for label, _ in KINDS] + ["other (element-wise, glue)"]
    print(f"\n## profile: self CPU ms per step by operator kind (mean of {n} profiled steps)\n")
    print("| phase | operator kind | " + " | ".join(names) + " |")
    print("|---|---|" + "---:|" * len(names))
    for phase in phases:
        for label in labels:
            row = [table[v].get((phase, label), 0.0) / 1e3 for v in names]
            if max(row) >= 0.5:
                print(f"| {phase} | {label} | " + " | ".join(f"{x:.1f}" for x in row) + " |")
        total = [sum(ms for (p, _), ms in table[v].items() if p == phase) / 1e3 for v in names]
        print(f"| {phase} | **total** | " + " | ".join(f"**{x:.1f}**" for x in total) + " |")
    for name in names:
        print(f"\n### {name}: top operators (self CPU ms per step)")
        for key, us in sorted(tops[name].items(), key=lambda kv: -kv[1])[:18]:
            print(f"  {us / 1e3:8.2f}  {key[:150]}")


if __name__ == "__main__":
    main()
