"""GPU suite: the speed checks that only mean something on a CUDA GPU, in one run, one table.

Four parts, each timed with CUDA events after warm-up (medians of ``--repeats``):

1. **training step, fp32 vs bf16-mixed**: the image-caption model of
   ``configs/caption_image.yaml`` (timm resnet10t stage-2 grid → concat fusion → 2-layer
   text decoder), built directly from :mod:`mmctx` on random 64×64 images and random
   captions, one AdamW step (forward, loss, backward, step); bf16-mixed is
   ``torch.autocast("cuda", torch.bfloat16)`` with fp32 weights, as Lightning's
   ``precision="bf16-mixed"`` runs it.
2. **SDPA backends**: ``F.scaled_dot_product_attention`` forward+backward in bf16 at
   N = 1K / 4K / 16K tokens (batch 1, 8 heads × 64), forced to the math, memory-efficient
   and flash kernels in turn (``torch.nn.attention.sdpa_kernel``); a backend that refuses the
   input is reported as such, not silently replaced.
3. **sliding-window attention fwd+bwd**: :func:`mmctx.layers.banded_attention` with the
   ``"blocked"`` backend (block-local SDPA) against the ``"flex"`` backend
   (``torch.compile(flex_attention)`` + a band ``BlockMask``; its one-off compile time is a
   separate row), ±256 window, N = 4K / 16K / 64K, bf16, 4 heads × 64; both outputs are
   checked to agree.
4. **decode throughput**: :meth:`mmctx.heads.TextDecoder.generate`, greedy with the KV
   cache, batch 8, 64 and 256 new tokens (EOS disabled), tokens per second.

Every row also reports the peak GPU memory of that measurement
(``torch.cuda.max_memory_allocated`` after a reset).

On a machine without CUDA it prints why and exits with status 0 (nothing to measure), so CI
and CPU-only machines can run it safely; ``--require-gpu`` turns that into status 2.

    python benchmarks/gpu_suite.py                 # about 2-4 minutes on one GPU, most of it compiling
    python benchmarks/gpu_suite.py --quick         # smaller sizes, for a smoke test
    python benchmarks/gpu_suite.py --parts sdpa flex
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from typing import Callable

PARTS = ("train", "sdpa", "flex", "decode")


DEVICE = "cuda"  # --device cpu: a dry run of the script's code paths on the CPU (no GPU numbers)


def cuda_timer(fn: Callable[[], object], repeats: int, warmup: int = 2) -> tuple[float, int]:
    """Median milliseconds of ``fn`` over ``repeats`` runs and the peak bytes of one run."""
    import torch

    for _ in range(warmup):
        fn()
    if DEVICE == "cpu":
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append((time.perf_counter() - start) * 1e3)
        return statistics.median(times), 0
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times), torch.cuda.max_memory_allocated()


def part_train(args: argparse.Namespace, rows: list[list[str]]) -> None:
    """fp32 vs bf16-mixed optimisation step of the caption_image model."""
    import torch
    import torch.nn.functional as F

    from mmctx.encoders import TimmImageEncoder
    from mmctx.fusion import ConcatFusion
    from mmctx.heads import TextDecoder
    from mmctx.models import EncoderDecoderModel
    from mmctx.types import ModalityInput

    device = torch.device(DEVICE)
    B, T, V = (16 if args.quick else 64), 24, 64
    torch.manual_seed(0)
    model = EncoderDecoderModel(
        {"image": TimmImageEncoder("resnet10t", stage=2, out_dim=64)},
        ConcatFusion({"image": 64}, dim=64),
        TextDecoder(vocab_size=V, dim=64, num_layers=2, num_heads=4, dropout=0.1, max_seq_len=T, pad_id=0, bos_id=1, eos_id=2),
    ).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    images = ModalityInput(torch.rand(B, 3, 64, 64, device=device), torch.ones(B, dtype=torch.bool, device=device))
    tokens = torch.randint(3, V, (B, T), device=device)
    tokens[:, 0] = 1

    def step(bf16: bool) -> None:
        with torch.autocast(device.type, torch.bfloat16, enabled=bf16):
            logits = model({"image": images}, tokens[:, :-1])  # (B, T-1, V)
            loss = F.cross_entropy(logits.float().flatten(0, 1), tokens[:, 1:].flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    results = {}
    for name, bf16 in (("fp32", False), ("bf16-mixed", True)):
        ms, peak = cuda_timer(lambda: step(bf16), args.repeats)
        results[name] = ms
        rows.append(["train step (caption_image, batch %d)" % B, name, f"{ms:.2f} ms", f"{peak / 2**20:,.0f}", ""])
    rows[-1][4] = f"{results['fp32'] / results['bf16-mixed']:.2f}× vs fp32"


def part_sdpa(args: argparse.Namespace, rows: list[list[str]]) -> None:
    """SDPA forward+backward under each forced backend."""
    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    lengths = (1024, 4096) if args.quick else (1024, 4096, 16384)
    backends = (("math", SDPBackend.MATH), ("efficient", SDPBackend.EFFICIENT_ATTENTION), ("flash", SDPBackend.FLASH_ATTENTION))
    for n in lengths:
        q, k, v = (torch.randn(1, 8, n, 64, device=DEVICE, dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
        grad = torch.randn_like(q)
        base = None
        for name, backend in backends:
            if name == "math" and n > 8192:
                rows.append([f"SDPA fwd+bwd N={n:,}", name, "skipped (N² memory)", "", ""])
                continue

            def run() -> None:
                with sdpa_kernel([backend]):
                    out = F.scaled_dot_product_attention(q, k, v)
                out.backward(grad)

            try:
                ms, peak = cuda_timer(run, args.repeats)
            except RuntimeError as err:  # the backend refuses these inputs on this GPU
                rows.append([f"SDPA fwd+bwd N={n:,}", name, f"unavailable ({str(err).splitlines()[0][:60]})", "", ""])
                continue
            base = base or ms
            rows.append([f"SDPA fwd+bwd N={n:,}", name, f"{ms:.2f} ms", f"{peak / 2**20:,.0f}", f"{base / ms:.2f}× vs first"])


def part_flex(args: argparse.Namespace, rows: list[list[str]]) -> None:
    """Sliding-window attention: block-local SDPA vs compiled flex_attention, fwd+bwd."""
    import torch

    from mmctx.layers.banded_attention import banded_attention

    window = 256
    lengths = (4096,) if args.quick else (4096, 16384, 65536)
    compiled_once = False
    for n in lengths:
        torch.manual_seed(0)
        q, k, v = (torch.randn(1, 4, n, 64, device=DEVICE, dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
        grad = torch.randn_like(q)
        outs = {}
        times = {}
        for backend in ("blocked", "flex"):
            if backend == "flex" and DEVICE == "cpu":
                continue  # compiled flex_attention has no CPU backward (torch 2.9)
            if backend == "flex" and not compiled_once:
                start = time.perf_counter()
                banded_attention(q, k, v, None, window, backend="flex").backward(grad)
                if DEVICE == "cuda":
                    torch.cuda.synchronize()
                rows.append(["flex_attention compile (first call)", "flex", f"{time.perf_counter() - start:.1f} s", "", ""])
                compiled_once = True

            def run(backend: str = backend) -> None:
                out = banded_attention(q, k, v, None, window, backend=backend)
                out.backward(grad)
                outs[backend] = out.detach()

            ms, peak = cuda_timer(run, args.repeats)
            times[backend] = ms
            ratio = "" if backend == "blocked" else f"{times['blocked'] / ms:.2f}× vs blocked"
            rows.append([f"sliding ±{window} fwd+bwd N={n:,}", backend, f"{ms:.2f} ms", f"{peak / 2**20:,.0f}", ratio])
        if "flex" in outs:
            diff = (outs["blocked"].float() - outs["flex"].float()).abs().max().item()
            rows[-1][4] += f", max |Δout| {diff:.1e}"


def part_decode(args: argparse.Namespace, rows: list[list[str]]) -> None:
    """Greedy decode throughput with the KV cache."""
    import torch

    from mmctx.heads import TextDecoder
    from mmctx.types import ExtendedContext

    batch, ctx_len, dim = 8, 64, 256
    lengths = (64,) if args.quick else (64, 256)
    torch.manual_seed(0)
    decoder = TextDecoder(
        vocab_size=1000, dim=dim, num_layers=4, num_heads=4, max_seq_len=max(lengths) + 1, pad_id=0, bos_id=1, eos_id=None
    ).to(DEVICE).eval()
    x = torch.randn(batch, ctx_len, dim, device=DEVICE)
    mask = torch.ones(batch, ctx_len, dtype=torch.bool, device=DEVICE)
    context = ExtendedContext(x, mask, torch.zeros(batch, ctx_len, dtype=torch.long, device=DEVICE), ("text",))
    for n in lengths:
        with torch.inference_mode():
            ms, peak = cuda_timer(lambda: decoder.generate(context, n), max(1, args.repeats // 2), warmup=1)
        rows.append([f"greedy decode, batch {batch}, {n} new tokens", "KV cache", f"{ms:.1f} ms",
                     f"{peak / 2**20:,.0f}", f"{batch * n / ms * 1e3:,.0f} tok/s"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="smaller sizes (a smoke test)")
    parser.add_argument("--require-gpu", action="store_true", help="exit with status 2 (not 0) when CUDA is missing")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"],
                        help="cpu: dry-run the code paths on the CPU (to check the script, not to measure)")
    args = parser.parse_args()

    import torch

    global DEVICE
    DEVICE = args.device
    if DEVICE == "cuda" and not torch.cuda.is_available():
        reason = "this torch build has no CUDA" if torch.version.cuda is None else "no CUDA device is visible"
        print(f"gpu_suite: no CUDA GPU here ({reason}; torch {torch.__version__}, {platform.machine()}); "
              "nothing measured. Run it on a machine with an NVIDIA GPU.")
        return 2 if args.require_gpu else 0

    where = torch.cuda.get_device_name() if DEVICE == "cuda" else "CPU DRY RUN (not GPU numbers)"
    print(f"# GPU suite: {where}, torch {torch.__version__}, CUDA {torch.version.cuda}; medians of {args.repeats}")
    rows: list[list[str]] = []
    funcs = {"train": part_train, "sdpa": part_sdpa, "flex": part_flex, "decode": part_decode}
    for part in args.parts:
        try:
            funcs[part](args, rows)
        except Exception as err:  # one broken part must not hide the others' numbers
            rows.append([part, "FAILED", f"{type(err).__name__}: {str(err).splitlines()[0][:80] if str(err) else ''}", "", ""])
        if DEVICE == "cuda":
            torch.cuda.empty_cache()
    header = ["measurement", "variant", "time", "peak MiB", "ratio / note"]
    widths = [max(len(header[i]), *(len(r[i]) for r in rows)) for i in range(len(header))]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |")
    return 1 if any(r[1] == "FAILED" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
