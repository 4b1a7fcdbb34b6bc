"""Telling a local path from a hub reference, and a short message when the hub is out of reach.

Private helpers of the pretrained encoders: weights come from a local file or folder, or
from the Hugging Face hub through the libraries' own loading and cache (timm,
transformers), which honour ``HF_HUB_OFFLINE`` and ``HF_HOME``/``HF_HUB_CACHE``.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["looks_like_path", "is_network_error", "hub_unavailable"]

_WEIGHT_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors", ".ckpt")


def looks_like_path(ref: str) -> bool:
    """True if ``ref`` is meant as a local path (absolute, ``./``, ``~``, or a weights file name).

    A hub id (``org/name``) and a relative folder look alike; an existing folder is checked
    for before this is asked, so ``org/name`` is a hub id unless such a folder exists.
    """
    return ref.startswith(("/", "./", "../", "~", "\\")) or ref.endswith(_WEIGHT_SUFFIXES) or Path(ref).is_absolute()


def is_network_error(err: BaseException) -> bool:
    """True for the errors a hub download raises when the hub is unreachable or offline mode is on."""
    root = type(err).__module__.split(".", 1)[0]
    return isinstance(err, OSError) or root in {"httpx", "httpx2", "requests", "urllib3", "huggingface_hub"}


def hub_unavailable(owner: str, ref: str, err: BaseException) -> OSError:
    """An ``OSError`` saying that ``ref`` could not be had from the hub or its cache, and how to fix it."""
    first = str(err).strip().splitlines()[0][:200] if str(err).strip() else ""
    return OSError(
        f"{owner}: cannot load {ref!r}: not in the local Hugging Face cache and the hub is unreachable "
        "(or HF_HUB_OFFLINE=1). To make it work: load it once on a machine with network (it is cached "
        "under HF_HOME, ~/.cache/huggingface; copy the cache here and set HF_HUB_OFFLINE=1), or pass a "
        f"local path instead (a weights file or a save_pretrained folder). [{type(err).__name__}: {first}]"
    )
