"""The README's plain-PyTorch example runs, trains, and never imports Lightning."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_example_trains_without_lightning(default_root):
    result = subprocess.run(
        [sys.executable, str(REPO / "examples" / "fusion_in_plain_pytorch.py"), "--root", str(default_root),
         "--num-train", "40", "--num-val", "10", "--num-test", "10", "--steps", "6", "--batch-size", "8"],
        capture_output=True, text=True, check=True, timeout=300,
    )
    assert "step    6" in result.stdout
    assert "lightning imported: False" in result.stdout
