"""Map a state dict of another implementation of the same architecture onto a model's names.

Two implementations of one network (e.g. the original EfficientNet-Lite0 code and timm's
``efficientnet_lite0``) often hold the same tensors in the same order under other names
(``_blocks.0._depthwise_conv.weight`` vs ``blocks.0.0.conv_dw.weight``). Mapping them by
order is only safe when every pair agrees in shape, so anything else is an error that lists
the keys and shapes where the two disagree.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor

__all__ = ["KEY_MAPS", "map_state_dict_by_order"]

#: the accepted values of an encoder's ``key_map`` argument (None: the names must already match)
KEY_MAPS = ("by_order",)


def map_state_dict_by_order(
    source: Mapping[str, Tensor], target: Mapping[str, Tensor], owner: str = "key_map='by_order'"
) -> tuple[dict[str, Tensor], list[tuple[str, str, tuple[int, ...]]]]:
    """Rename ``source``'s tensors to ``target``'s names, pairing them by position.

    Args:
        source: the state dict to load (its order is the file's order).
        target: the model's state dict (only names and shapes are read; meta tensors work).
        owner: names the caller in error messages.

    Returns:
        The renamed state dict (``target``'s names, ``source``'s tensors) and the report:
        one ``(source name, target name, shape)`` per pair, in order.

    Raises:
        ValueError: when the two differ in length or in any pair's shape; the message lists
            the first mismatching pairs with their shapes.
    """
    src = [(k, v) for k, v in source.items() if isinstance(v, Tensor)]
    dst = [(k, tuple(v.shape)) for k, v in target.items()]
    report = [(s, d, tuple(v.shape)) for (s, v), (d, _) in zip(src, dst)]
    bad = [
        f"  #{i}: {s} {tuple(v.shape)} -> {d} {shape}"
        for i, ((s, v), (d, shape)) in enumerate(zip(src, dst))
        if tuple(v.shape) != shape
    ]
    if len(src) != len(dst) or bad:
        lines = [f"{owner}: the state dict does not map onto the model by order and shape:"]
        if len(src) != len(dst):
            lines.append(f"  {len(src)} tensors in the file, {len(dst)} in the model")
            extra = src[len(dst) :] if len(src) > len(dst) else [(d, s) for d, s in dst[len(src) :]]
            side = "file" if len(src) > len(dst) else "model"
            lines += [f"  only in the {side}: {k} {tuple(v.shape) if isinstance(v, Tensor) else v}" for k, v in extra[:5]]
        if bad:
            lines.append(f"  {len(bad)} pairs differ in shape (file name shape -> model name shape):")
            lines += bad[:10]
            if len(bad) > 10:
                lines.append(f"  ... and {len(bad) - 10} more")
        raise ValueError("\n".join(lines))
    mapped = {d: v for (_, v), (d, _) in zip(src, dst)}
    return mapped, report

