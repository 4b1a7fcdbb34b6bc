"""The causal-LM example runs: text-only LM steps, injection, frozen-LM training, beam-search
captions, a saved injection file — and never imports Lightning."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_example_injects_into_a_causal_lm_and_trains(default_root):
    result = subprocess.run(
        [sys.executable, str(REPO / "examples" / "multimodal_causal_lm.py"), "--root", str(default_root),
         "--num-train", "40", "--num-val", "10", "--num-test", "10", "--lm-steps", "3", "--steps", "4",
         "--batch-size", "8", "--every", "2"],
        capture_output=True, text=True, check=True, timeout=300,
    )
    out = result.stdout
    assert "text-only step    3" in out
    assert "step    4" in out
    assert out.count("generated:") == 2
    assert "injected weights:" in out
    assert "lightning imported: False" in out
