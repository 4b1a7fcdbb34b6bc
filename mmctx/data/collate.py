"""Collation of :class:`~mmctx.data.manifest.ManifestDataset` items into a MultimodalBatch."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from mmctx.types import ModalityInput, MultimodalBatch

__all__ = ["MultimodalCollate", "collate_multimodal"]


def _pad_sequences(
    rows: Sequence[Tensor | None], pad_value: float | int, dtype: torch.dtype
) -> tuple[Tensor, Tensor]:
    """Right-pad 1-D tensors (``None`` = missing) to the longest: (B, L) data, (B, L) mask."""
    length = max((r.shape[0] for r in rows if r is not None), default=0)
    data = torch.full((len(rows), length), pad_value, dtype=dtype)
    mask = torch.zeros((len(rows), length), dtype=torch.bool)
    for b, row in enumerate(rows):
        if row is not None:
            data[b, : row.shape[0]] = row
            mask[b, : row.shape[0]] = True
    return data, mask


def collate_multimodal(items: Sequence[dict[str, Any]], pad_id: int) -> MultimodalBatch:
    """Collate data set items (dicts) into a :class:`~mmctx.types.MultimodalBatch`.

    A modality absent from every item is an absent key of ``inputs``; a modality absent
    from some items gives those rows an all-False mask (their data rows are padding).

    Shapes:
        - ``inputs["text"]``: data (B, T) long, padded with ``pad_id``; mask (B, T), True at
          real tokens.
        - ``inputs["image"]``: data (B, 3, H, W) float, zeros for missing images; mask (B,),
          True where the sample has an image.
        - ``inputs["audio"]``: data (B, S) float, zero-padded; mask (B, S), True at real
          samples.
        - ``targets["label"]``: (B,) long class indices, when the items carry labels.
        - ``targets["caption"]``: (B, T) long ``[bos] ... [eos]`` ids padded with ``pad_id``
          and ``targets["caption_mask"]`` (B, T) bool, when the items carry captions.
        - ``targets["key_span"]`` (B, 2) long ``[start, stop)`` and ``targets["key_label"]``
          (B,) long, when the items carry them (a key event's span and class, for a
          token-level auxiliary loss: ``CaptioningTask``'s ``key_loss_weight``).
        - ``ids``: the items' ids; ``meta["source"]``: their ``"manifest:line"``;
          ``meta["caption_text"]``: the raw captions, when present.

    Args:
        items: dicts as returned by :class:`~mmctx.data.manifest.ManifestDataset`.
        pad_id: the tokenizer's padding id.

    Raises:
        ValueError: for an empty batch, images of different sizes, or a target present on
            some items only (naming the offending ids).
    """
    if not items:
        raise ValueError("cannot collate an empty batch")
    ids = [str(item.get("id", i)) for i, item in enumerate(items)]
    inputs: dict[str, ModalityInput] = {}

    texts = [item.get("text") for item in items]
    if any(t is not None for t in texts):
        data, mask = _pad_sequences(texts, pad_id, torch.long)
        inputs["text"] = ModalityInput(data, mask)

    images = [item.get("image") for item in items]
    present = [im for im in images if im is not None]
    if present:
        shape = present[0].shape
        odd = [ids[b] for b, im in enumerate(images) if im is not None and im.shape != shape]
        if odd:
            raise ValueError(
                f"images of different shapes in one batch: {tuple(shape)} vs "
                f"{[tuple(im.shape) for im in present if im.shape != shape][0]} (ids {odd[:5]})"
            )
        data = torch.zeros((len(items), *shape), dtype=present[0].dtype)
        mask = torch.zeros(len(items), dtype=torch.bool)
        for b, image in enumerate(images):
            if image is not None:
                data[b] = image
                mask[b] = True
        inputs["image"] = ModalityInput(data, mask)

    waves = [item.get("audio") for item in items]
    if any(w is not None for w in waves):
        dtype = next(w for w in waves if w is not None).dtype
        data, mask = _pad_sequences(waves, 0.0, dtype)
        inputs["audio"] = ModalityInput(data, mask)

    targets: dict[str, Tensor] = {}
    meta: dict[str, list] = {
        "source": [str(item.get("source", ids[b])) for b, item in enumerate(items)]
    }
    labels = [item.get("label") for item in items]
    if any(label is not None for label in labels):
        _require_all(labels, "label", ids)
        targets["label"] = torch.tensor(labels, dtype=torch.long)
    for name in ("key_span", "key_label"):
        values = [item.get(name) for item in items]
        if any(v is not None for v in values):
            _require_all(values, name, ids)
            targets[name] = torch.tensor(values, dtype=torch.long)  # (B, 2) spans, (B,) labels
    captions = [item.get("caption") for item in items]
    if any(c is not None for c in captions):
        _require_all(captions, "caption", ids)
        targets["caption"], targets["caption_mask"] = _pad_sequences(captions, pad_id, torch.long)
        meta["caption_text"] = [item.get("caption_text") for item in items]
    return MultimodalBatch(inputs=inputs, targets=targets, ids=ids, meta=meta)


def _require_all(values: list[Any], name: str, ids: list[str]) -> None:
    missing = [ids[b] for b, v in enumerate(values) if v is None]
    if missing:
        raise ValueError(
            f"target {name!r} present on some items of the batch but missing on {missing[:5]}"
        )


class MultimodalCollate:
    """Picklable collate function (DataLoader workers): ``collate_multimodal(items, pad_id)``.

    Args:
        pad_id: the tokenizer's padding id.
    """

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, items: Sequence[dict[str, Any]]) -> MultimodalBatch:
        return collate_multimodal(items, self.pad_id)

    def __repr__(self) -> str:
        return f"MultimodalCollate(pad_id={self.pad_id})"
