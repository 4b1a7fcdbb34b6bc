"""The library must be importable without Lightning (plain PyTorch projects).

Every package and module of mmctx is found with ``pkgutil``, so a new one is covered the day it
is added; only the ones in ``LIGHTNING`` may import Lightning. Each check runs in a fresh
interpreter, since this test session has Lightning loaded already.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import pkgutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

import mmctx

#: The only places that may import Lightning: the trainers, the console script, and the data
#: modules (``import mmctx.data`` itself stays light: its names load lazily).
LIGHTNING = {
    "mmctx.trainers": "LightningModules and callbacks",
    "mmctx.cli": "the LightningCLI console script",
    "mmctx.data.datamodules": "the Lightning data modules",
}

#: Modules that still import Lightning where they should not (none; a stale entry fails the test).
NOT_YET_CLEAN: dict[str, str] = {}

# Imports each named module in order and reports the first one after which Lightning is loaded.
_PROBE = """
import importlib, sys
def lightning():
    return sorted(m for m in sys.modules if m.split(".")[0] in ("lightning", "pytorch_lightning"))
for name in sys.argv[1:]:
    importlib.import_module(name)
    if lightning():
        print(f"{name} imports {lightning()[:3]}")
        sys.exit(1)
"""


def _allowed(name: str) -> bool:
    return any(name == a or name.startswith(a + ".") for a in (*LIGHTNING, *NOT_YET_CLEAN))


def _walk(package: str) -> list[str]:
    """``package`` and every module below it that is not allowed to import Lightning."""
    root = importlib.import_module(package)
    names = [package]
    if hasattr(root, "__path__"):
        names += [m.name for m in pkgutil.walk_packages(root.__path__, prefix=f"{package}.", onerror=lambda _: None)]
    return [n for n in names if not _allowed(n)]


def _probe(names: list[str], **kwargs) -> tuple[int, str]:
    """Import ``names`` in order in a fresh interpreter: (exit code, output)."""
    run = subprocess.run(
        [sys.executable, "-c", _PROBE, *names], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs
    )
    return run.returncode, run.stdout


TOP_LEVEL = sorted(f"mmctx.{m.name}" for m in pkgutil.iter_modules(mmctx.__path__))
#: Every top-level package and module that must not import Lightning, ``mmctx.data`` included
#: (its walk imports the lazy package first, then each generic module).
LIBRARY = [name for name in TOP_LEVEL if not _allowed(name)]


@pytest.fixture(scope="module")
def probe_results() -> dict[str, tuple[int, str]]:
    """Each library package with all its modules, each in a fresh interpreter, a few at a time."""
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        return dict(zip(LIBRARY, pool.map(lambda package: _probe(_walk(package)), LIBRARY)))


def test_the_library_covers_every_package_the_design_names():
    design = ["mmctx.types", "mmctx.layers", "mmctx.encoders", "mmctx.fusion", "mmctx.context", "mmctx.heads",
              "mmctx.models", "mmctx.losses", "mmctx.metrics", "mmctx.data"]
    assert set(design) <= set(LIBRARY), sorted(set(design) - set(LIBRARY))


def test_allow_lists_name_real_modules():
    stale = [n for n in (*LIGHTNING, *NOT_YET_CLEAN) if importlib.util.find_spec(n) is None]
    assert not stale, f"allow-list entries that are no module (update the lists above): {stale}"


@pytest.mark.parametrize("package", LIBRARY)
def test_library_does_not_import_lightning(package, probe_results):
    code, output = probe_results[package]
    assert code == 0, output[-3000:]


def test_the_probe_sees_lightning_where_it_is(tmp_path):
    # a stand-in that registers a "lightning" module, so the check runs without loading Lightning
    (tmp_path / "pulls_lightning.py").write_text("import sys, types\nsys.modules['lightning'] = types.ModuleType('lightning')\n")
    (tmp_path / "clean.py").write_text("")
    code, output = _probe(["clean", "pulls_lightning"], cwd=tmp_path, env={"PYTHONPATH": str(tmp_path)})
    assert code == 1 and "pulls_lightning imports ['lightning']" in output, output


def test_readme_import_line_works():
    from mmctx.fusion import ConcatFusion, CrossAttentionFusion, Fusion

    assert issubclass(ConcatFusion, Fusion) and issubclass(CrossAttentionFusion, Fusion)
