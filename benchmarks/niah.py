"""Needle-in-a-haystack heatmap of a trained long-range checkpoint (length × depth).

Same as ``python -m mmctx.inference.niah`` (see there): loads the checkpoint with
``mmctx.load``, evaluates fresh NIAH documents (default: 1K, 4K, 16K, 64K tokens × depths 0,
10, ..., 100 %, 16 samples per cell) and writes PREFIX.md (table), PREFIX.json (every
number, colour and category accuracy too) and PREFIX.png (heatmap; needs matplotlib, in the
``dev`` extra):

    python benchmarks/niah.py runs/long_context_windowed/version_0/checkpoints/best.ckpt \\
        --name windowed --out docs/niah/windowed
    python benchmarks/niah.py runs/long_context_truncate/version_0/checkpoints/best.ckpt \\
        --name truncate --truncate 512 --out docs/niah/truncate

On 2 shared CPU cores (one thread) the 64K row of a windowed or sliding model takes a few
minutes; run it through the machine's CPU queue.
"""

from __future__ import annotations

from mmctx.inference.niah import main

if __name__ == "__main__":
    main()
