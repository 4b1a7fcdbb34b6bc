"""Greedy decode throughput of TextDecoder.generate against Hugging Face GPT-2 ``generate``.

Both sides are random models of equal size (width, layers, heads, feed-forward width,
vocabulary) with cross-attention into the same context: mmctx's :class:`TextDecoder` (KV
cache: preallocated self-attention buffer, context keys/values and mask computed once per
call, see ``docs/benchmarks.md``) and ``transformers``' ``GPT2LMHeadModel`` with
``add_cross_attention=True`` fed the context as ``encoder_hidden_states``. Greedy, EOS
disabled, so every run generates exactly the requested number of tokens. mmctx without the
cache (the whole prefix recomputed every step) is timed too, and its output must equal the
cached one token for token. ``--static`` adds the compiled static step
(``generate(compile_step=True)``: one ``torch.compile``'d graph with fixed shapes per step,
the whole preallocated buffer attended under a position mask, the greedy arg-max inside
the graph); its compile time per length is printed apart (a warm-up call per length), and
its tokens must equal the KV cache's. ``--hf`` chooses the HF modes timed: ``sdpa``
(``generate`` as shipped), ``eager`` (``attn_implementation="eager"``), ``static``
(``cache_implementation="static"``); the ratios are given against ``sdpa`` and against
the fastest HF mode of each row.

Every cell: one warm-up, then the median of ``--repeats`` runs, the sides interleaved so
drifting machine load hits them alike. ``--profile`` adds the per-step time of the top
operators of each side (torch.profiler), to see where the time goes.

    python benchmarks/decode_throughput.py            # batch 8, dim 256, 4 layers, context 64
    python benchmarks/decode_throughput.py --lengths 64 256 --profile
    python benchmarks/decode_throughput.py --lengths 64 256 --static --repeats 3
    python benchmarks/decode_throughput.py --lengths 64 256 --static --hf sdpa eager static
    python benchmarks/decode_throughput.py --device cuda --lengths 16 64 256 1024
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable

import torch

from mmctx.heads import TextDecoder
from mmctx.types import ExtendedContext


def build(args: argparse.Namespace, device: torch.device) -> tuple[TextDecoder, torch.nn.Module, ExtendedContext]:
    from transformers import GPT2Config, GPT2LMHeadModel

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
    config = GPT2Config(
        vocab_size=args.vocab, n_embd=args.dim, n_layer=args.layers, n_head=args.heads,
        n_positions=max(args.lengths) + 1, add_cross_attention=True, bos_token_id=1, eos_token_id=None, pad_token_id=0,
    )
    hf = GPT2LMHeadModel(config).to(device).eval()
    x = torch.randn(args.batch, args.context, args.dim, device=device)
    mask = torch.ones(args.batch, args.context, dtype=torch.bool, device=device)
    mask[::2, args.context // 2 :] = False  # half the samples have half-length contexts
    modality = torch.zeros(args.batch, args.context, dtype=torch.long, device=device)
    return decoder, hf, ExtendedContext(x, mask, modality, ("image",))


HF_MODES = ("sdpa", "eager", "static")


def hf_variant(hf: torch.nn.Module, mode: str) -> tuple[torch.nn.Module, dict]:
    """The HF model and ``generate`` arguments of one HF mode (same weights):

    * ``sdpa``: ``generate`` as shipped (SDPA attention, ``DynamicCache``);
    * ``eager``: ``attn_implementation="eager"`` (HF's own matmul-softmax attention);
    * ``static``: SDPA with ``cache_implementation="static"`` (HF's preallocated cache).
    """
    import copy

    if mode == "sdpa":
        return hf, {}
    if mode == "static":
        return hf, {"cache_implementation": "static"}
    if mode == "eager":
        config = copy.deepcopy(hf.config)
        config._attn_implementation = "eager"
        model = type(hf)(config).to(next(hf.parameters()).device).eval()
        model.load_state_dict(hf.state_dict())
        return model, {}
    raise ValueError(f"unknown HF mode {mode!r}; expected one of {HF_MODES}")


def runners(
    decoder: TextDecoder, hf: torch.nn.Module, context: ExtendedContext, hf_modes: tuple[str, ...] = ("sdpa",)
) -> dict[str, Callable[[int], torch.Tensor]]:
    """name → ``run(new_tokens) -> ids (B, new_tokens)``; HF sides are named ``hf-<mode>``."""
    bos = torch.full((context.x.shape[0], 1), 1, dtype=torch.long, device=context.x.device)

    def hf_generate(model: torch.nn.Module, extra: dict, n: int) -> torch.Tensor:
        out = model.generate(
            input_ids=bos, attention_mask=torch.ones_like(bos), encoder_hidden_states=context.x,
            encoder_attention_mask=context.mask.long(), max_new_tokens=n, min_new_tokens=n, do_sample=False,
            eos_token_id=None, pad_token_id=0, **extra,
        )
        return out[:, 1:]

    sides: dict[str, Callable[[int], torch.Tensor]] = {}
    for mode in hf_modes:
        model, extra = hf_variant(hf, mode)
        sides[f"hf-{mode}"] = lambda n, model=model, extra=extra: hf_generate(model, extra, n)
    sides.update({
        "nocache": lambda n: decoder.generate(context, n, strategy="greedy", use_cache=False),
        "cache": lambda n: decoder.generate(context, n, strategy="greedy", use_cache=True),
        "static": lambda n: decoder.generate(context, n, strategy="greedy", compile_step=True),
    })
    return sides


def timed(run: Callable[[int], torch.Tensor], n: int, device: torch.device) -> tuple[float, torch.Tensor]:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = run(n)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, out


def profile(run: Callable[[int], torch.Tensor], n: int, rows: int = 8) -> str:
    """The ``rows`` operators with the most self time, per decoding step."""
    from torch.profiler import profile as torch_profile

    with torch_profile() as prof:
        run(n)
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    lines = [f"    {'operator':<52} {'us/step':>8} {'share':>6}"]
    for e in events[:rows]:
        lines.append(f"    {e.key[:52]:<52} {e.self_cpu_time_total / n:>8.0f} {e.self_cpu_time_total / total:>6.1%}")
    lines.append(f"    {'all operators':<52} {total / n:>8.0f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=1000)
    parser.add_argument("--context", type=int, default=64, help="context tokens per sample")
    parser.add_argument("--lengths", type=int, nargs="+", default=[16, 64, 256], help="new tokens to generate")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per cell (median)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--profile", action="store_true", help="also print each side's top operators per step")
    parser.add_argument("--static", action="store_true", help="also time the compiled static step")
    parser.add_argument("--hf", nargs="+", default=["sdpa"], choices=HF_MODES,
                        help="HF generate modes to time (sdpa: as shipped; eager: eager attention; static: static cache)")
    parser.add_argument("--no-cache-max", type=int, default=64,
                        help="time mmctx without the cache (quadratic) only up to this many new tokens")
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    decoder, hf, context = build(args, device)
    run = runners(decoder, hf, context, tuple(args.hf))
    if not args.static:
        del run["static"]
    hf_sides = [name for name in run if name.startswith("hf-")]
    n_mmctx = sum(p.numel() for p in decoder.parameters())
    n_hf = sum(p.numel() for p in hf.parameters())

    print(
        f"# greedy decoding, batch {args.batch}, dim {args.dim}, {args.layers} layers, {args.heads} heads, "
        f"vocab {args.vocab}, context {args.context} tokens (half the samples half-length), EOS off"
    )
    print(f"# parameters: mmctx TextDecoder {n_mmctx / 1e6:.2f} M, HF GPT-2 + cross-attention {n_hf / 1e6:.2f} M")
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{platform.processor() or 'cpu'}"
    load = f", load avg {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
    print(f"# torch {torch.__version__}, {where}, {torch.get_num_threads()} threads{load}; median of {args.repeats}")
    print("# HF modes: " + ", ".join(hf_sides) + " (sdpa: generate as shipped; eager: attn_implementation='eager'; "
          "static: cache_implementation='static'); 'best HF' is the fastest of them in each row\n")
    columns = ["new tokens"] + [f"{h} tok/s" for h in hf_sides] + ["mmctx no cache", "mmctx KV cache"]
    if args.static:
        columns.append("mmctx compiled static")
    columns += ["KV cache / hf-sdpa", "KV cache / best HF"]
    if args.static:
        columns += ["**static / hf-sdpa**", "**static / best HF**", "static = KV cache"]
    columns.append("cache = no cache")
    print("| " + " | ".join(columns) + " |")
    print("|" + "---:|" * len(columns))
    profiles, compile_times = [], []
    with torch.inference_mode():
        for name in run:  # warm-up: allocator, kernels, lazy init (short: no-cache is quadratic)
            if name != "static":
                timed(run[name], min(8, *args.lengths), device)
        for n in args.lengths:
            if "static" in run:  # one graph per length (the buffer's capacity is 1 + n): compile it here
                seconds, _ = timed(run["static"], n, device)
                compile_times.append(f"# compiled static step, {n} new tokens: first call {seconds:.1f} s (compilation)")
            if "hf-static" in run:  # HF's static cache: its first call per length allocates it
                timed(run["hf-static"], n, device)
            times: dict[str, list[float]] = {name: [] for name in run}
            outputs: dict[str, torch.Tensor] = {}
            sides = [name for name in run if name != "nocache" or n <= args.no_cache_max]
            for _ in range(args.repeats):
                for name in sides:  # interleaved, so drifting load hits every side alike
                    seconds, outputs[name] = timed(run[name], n, device)
                    times[name].append(seconds)
            rate = {k: args.batch * n / statistics.median(v) for k, v in times.items() if v}
            best_hf = max(rate[h] for h in hf_sides)
            if "nocache" not in rate:
                rate["nocache"], same = float("nan"), "(not run)"
            else:
                same = "yes" if torch.equal(outputs["nocache"], outputs["cache"]) else "NO"
            cells = [f"{n}"] + [f"{rate[h]:,.0f}" for h in hf_sides] + [f"{rate['nocache']:,.0f}", f"{rate['cache']:,.0f}"]
            if args.static:
                cells.append(f"{rate['static']:,.0f}")
            ref = rate.get("hf-sdpa", best_hf)
            cells += [f"{rate['cache'] / ref:.2f}", f"{rate['cache'] / best_hf:.2f}"]
            if args.static:
                cells += [f"**{rate['static'] / ref:.2f}**", f"**{rate['static'] / best_hf:.2f}**",
                          "yes" if torch.equal(outputs["static"], outputs["cache"]) else "NO"]
            cells.append(same)
            print("| " + " | ".join(cells) + " |", flush=True)
            if args.profile and device.type == "cpu":
                profiles.append(f"\n{n} new tokens, mmctx KV cache:\n{profile(run['cache'], n)}")
                if "static" in run:
                    profiles.append(f"{n} new tokens, mmctx compiled static:\n{profile(run['static'], n)}")
                for h in hf_sides:
                    profiles.append(f"{n} new tokens, {h}:\n{profile(run[h], n)}")
    for line in compile_times:
        print(line)
    for p in profiles:
        print(p)


if __name__ == "__main__":
    main()
