"""Generated data sets cached on disk: a stamp file, a lock, and an atomic swap into place.

Both generated data sets (:mod:`mmctx.data.builtin.scenes`, :mod:`mmctx.data.builtin.long_range`)
follow one protocol:

- ``root/manifest_info.json`` (the *stamp*) records the data set's name, its generator
  version, the generation parameters and the asset pack's fingerprint; it is written last, so
  a folder with a matching stamp is complete and up to date (:func:`stamp_matches`).
- Generation writes into a temporary folder beside ``root`` and renames it into place
  (:func:`build_atomically`): a killed run never leaves a half-written data set under
  ``root``, only a ``.<name>.tmp-*`` folder that the next run removes.
- Concurrent runs take an exclusive ``flock`` beside ``root`` (:func:`lock`) and re-check the
  stamp once they hold it (:func:`ensure`), so the data is generated once.
- A non-empty folder that is not this data set (no stamp of it, and entries other than the
  data set's own) is never replaced.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from typing import Any

__all__ = ["STAMP", "build_atomically", "ensure", "lock", "read_stamp", "stamp_matches"]

#: The stamp file of a generated data set, written last.
STAMP = "manifest_info.json"


def read_stamp(root: Path) -> dict[str, Any] | None:
    """The stamp of ``root``, or None when it is missing or unreadable."""
    try:
        return json.loads((root / STAMP).read_text())
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError, UnicodeDecodeError):
        return None


def stamp_matches(root: Path, version: int, params: dict[str, Any], assets: str, files: Collection[str]) -> bool:
    """Whether ``root`` holds a complete data set of this generator ``version``, generated with
    ``params`` from the asset pack of fingerprint ``assets`` (and its ``files`` exist)."""
    stamp = read_stamp(root)
    return (
        stamp is not None
        and stamp.get("version") == version
        and stamp.get("params") == params
        and stamp.get("assets") == assets
        and all((root / name).is_file() for name in files)
    )


@contextlib.contextmanager
def lock(root: Path) -> Iterator[None]:
    """An exclusive lock beside ``root`` (POSIX ``flock``), so concurrent runs don't race."""
    root.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # Windows: no cross-process lock, generation is still atomic
        yield
        return
    with open(root.parent / f".{root.name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure(root: Path, up_to_date: Callable[[], bool], generate: Callable[[], Path]) -> Path:
    """``root`` if ``up_to_date()``, else ``generate()`` under :func:`lock` (checking again
    once the lock is held: another process may have generated it meanwhile)."""
    if up_to_date():  # fast path, no lock
        return root
    with lock(root):
        if up_to_date():
            return root
        return generate()


@contextlib.contextmanager
def build_atomically(root: Path, dataset: str, own_entries: Collection[str]) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``root`` to write a data set into; when the
    block ends normally it replaces ``root`` (the old folder, if any, is removed), when it
    raises it is removed and ``root`` is untouched. Call it holding :func:`lock`.

    Args:
        root: the data set's folder.
        dataset: the data set's name in its stamp (``"dataset"``); a folder stamped with
            another name is refused.
        own_entries: the names this data set writes into ``root``; a non-empty unstamped
            folder with any other entry is refused.

    Raises:
        FileExistsError: ``root`` is a file, or a folder of something else.
    """
    if root.exists():
        if not root.is_dir():
            raise FileExistsError(f"{root} exists and is not a folder")
        entries = {p.name for p in root.iterdir()}
        stamp = read_stamp(root)
        ours = stamp is not None and stamp.get("dataset") == dataset
        if entries and not ours and not entries <= set(own_entries):
            raise FileExistsError(
                f"{root} is not empty and is not an mmctx {dataset} data set (no {STAMP} of one); refusing to "
                f"replace it (unexpected entries: {sorted(entries - set(own_entries))[:5]})"
            )
    for stale in root.parent.glob(f".{root.name}.tmp-*"):  # left by killed runs
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
    try:
        yield tmp
        old = None
        if root.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-old-", dir=root.parent))
            root.rename(old / "data")
        tmp.rename(root)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
