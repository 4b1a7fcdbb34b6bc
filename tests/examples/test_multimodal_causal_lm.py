"""The causal-LM example runs: text-only LM steps, injection, frozen-LM training, beam-search
captions, a saved injection file — and never imports Lightning."""

from __future__ import annotations

import importlib.util
import math
import subprocess
import sys
from pathlib import Path

import pytest

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
    out = subprocess.run([*args, "--self-attention", "--trainable-lm-layers", "1", "--eval", "4",
                          "--schedule", "cosine", "--warmup", "2", "--dropout", "0.1", "--seed", "1"],
                         capture_output=True, text=True, check=True, timeout=300).stdout
    assert "text-only LM loaded from" in out and "text-only step" not in out
    assert "lm (trainable) 0," not in out
    assert '"bleu4":' in out and '"exact_match":' in out


def _example():
    spec = importlib.util.spec_from_file_location("multimodal_causal_lm", REPO / "examples" / "multimodal_causal_lm.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_lr_factor_warms_up_then_decays_to_zero():
    lr_factor = _example().lr_factor
    f = lr_factor("cosine", warmup=4, total=12)
    assert [f(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert f(4) == 1.0 and math.isclose(f(8), 0.5) and math.isclose(f(12), 0.0, abs_tol=1e-12)
    assert all(f(s) > f(s + 1) for s in range(4, 12))
    assert f(20) == f(12)  # past the end it stays at 0
    assert {lr_factor("constant", 4, 12)(s) for s in range(15)} == {1.0}
    with pytest.raises(ValueError, match="linear"):
        lr_factor("linear", 4, 12)
