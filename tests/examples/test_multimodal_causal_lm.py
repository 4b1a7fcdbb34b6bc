"""The causal-LM example runs: text-only LM steps, injection, frozen-LM training, beam-search
captions, a saved injection file — and never imports Lightning."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_example_injects_into_a_causal_lm_and_trains(default_root, tmp_path):
    args = [sys.executable, str(REPO / "examples" / "multimodal_causal_lm.py"), "--root", str(default_root),
            "--num-train", "40", "--num-val", "10", "--num-test", "10", "--lm-steps", "3", "--steps", "4",
            "--batch-size", "8", "--every", "2", "--lm-dir", str(tmp_path / "lm")]
    out = subprocess.run(args, capture_output=True, text=True, check=True, timeout=300).stdout
    assert "text-only step    3" in out
    assert "step    4" in out
    assert out.count("generated:") == 2
    assert "injected weights:" in out
    assert "lightning imported: False" in out
    assert "lm (trainable) 0," in out
    # the saved text-only LM is reused; self-attention blocks, a partly trainable LM, test scores
    out = subprocess.run([*args, "--self-attention", "--trainable-lm-layers", "1", "--eval", "4"],
                         capture_output=True, text=True, check=True, timeout=300).stdout
    assert "text-only LM loaded from" in out and "text-only step" not in out
    assert "lm (trainable) 0," not in out
    assert '"bleu4":' in out and '"exact_match":' in out
