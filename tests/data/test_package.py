"""The layout of ``mmctx.data``: its exports, a light import, and the direction of the imports
(the built-in data sets build on the generic code, never the reverse; only the data modules
import Lightning)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import mmctx.data

DATA = Path(mmctx.data.__file__).parent
#: The generic modules of mmctx.data: everything but the built-ins and the data modules.
GENERIC = sorted(p for p in DATA.glob("*.py") if p.stem != "datamodules")
#: The built-in data sets.
BUILTIN = sorted((DATA / "builtin").glob("*.py"))


def imported_by(module: str) -> set[str]:
    """The modules a fresh interpreter has loaded after ``import module``."""
    code = f"import sys, {module}; print('\\n'.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    return set(out.split())


def test_package_exports_resolve() -> None:
    for name in mmctx.data.__all__:
        assert getattr(mmctx.data, name) is not None, name
    assert len(set(mmctx.data.__all__)) == len(mmctx.data.__all__)
    assert set(mmctx.data.__all__) <= set(dir(mmctx.data))
    with pytest.raises(AttributeError):
        mmctx.data.NotAName  # noqa: B018


def test_configs_class_paths_resolve() -> None:
    for name in ("MultimodalDataModule", "CocoCaptionDataModule", "DefaultDataModule", "LongRangeDataModule"):
        cls = getattr(mmctx.data, name)
        assert cls.__module__ == "mmctx.data.datamodules", name


def imports_of(path: Path) -> set[str]:
    """Every module an ``import`` statement of the file names (also inside functions)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_import_is_light() -> None:
    loaded = imported_by("mmctx.data")
    assert not {m for m in loaded if m.split(".")[0] in ("lightning", "pytorch_lightning")}
    assert not {m for m in loaded if m.startswith(("mmctx.data.builtin", "mmctx.data.datamodules"))}


@pytest.mark.parametrize("path", GENERIC, ids=lambda p: p.name)
def test_generic_code_imports_neither_builtin_nor_lightning(path: Path) -> None:
    bad = {m for m in imports_of(path) if m.startswith("mmctx.data.builtin") or m.split(".")[0] == "lightning"}
    assert not bad, f"{path.name} imports {sorted(bad)}"


@pytest.mark.parametrize("path", BUILTIN, ids=lambda p: p.name)
def test_builtin_data_sets_do_not_import_lightning_or_data_modules(path: Path) -> None:
    bad = {m for m in imports_of(path) if m.startswith("mmctx.data.datamodules") or m.split(".")[0] == "lightning"}
    assert not bad, f"{path.name} imports {sorted(bad)}"
