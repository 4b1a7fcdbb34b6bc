"""Build a ``transformers`` backbone from a hub id, a local folder or a config dict (private)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from mmctx.encoders._hub import hub_unavailable, is_network_error, looks_like_path

__all__ = ["load_backbone", "load_processor", "enable_gradient_checkpointing"]


def _source(owner: str, model: str) -> tuple[str, bool]:
    """``(reference, local)``: an existing folder is local; a path-like string that is not one is an error."""
    folder = Path(model).expanduser()
    if folder.is_dir():
        return str(folder), True
    if looks_like_path(model):
        raise ValueError(f"{owner}: model={model!r} is not a local folder (nor a hub id)")
    return model, False


def load_backbone(
    owner: str, model: str | None, config: dict[str, Any] | None, revision: str | None, vision: bool = False
) -> nn.Module:
    """The backbone from exactly one of ``model`` (hub id or local folder) or ``config`` (random init).

    A hub id goes through ``from_pretrained`` as usual (the Hugging Face cache,
    ``HF_HUB_OFFLINE``); a local folder loads with ``local_files_only=True``. Weights are
    float32. With ``vision=True`` a dual-tower checkpoint (CLIP, SigLIP: a config with a
    ``vision_config``) gives its vision tower only; an encoder-decoder (Whisper) gives its
    encoder only.

    Raises:
        ValueError: for a bad combination of arguments or a path that is not a folder.
        OSError: for a hub id that is neither cached nor reachable, with how to fix it.
    """
    from transformers import AutoConfig, AutoModel

    if (model is None) == (config is None):
        raise ValueError(
            f"{owner}: pass exactly one of model (a hub id or local folder) or config (a dict), got "
            f"model={model!r} and config={'None' if config is None else 'a dict'}"
        )
    if config is not None:
        fields = dict(config)
        model_type = fields.pop("model_type", None)
        if not isinstance(model_type, str):
            raise ValueError(f"{owner}: config needs a 'model_type' string, got keys {sorted(config)}")
        hf_config = AutoConfig.for_model(model_type, **fields)
        if vision and getattr(hf_config, "vision_config", None) is not None:
            hf_config = hf_config.vision_config
        return _encoder_only(AutoModel.from_config(hf_config))
    assert model is not None
    ref, local = _source(owner, model)
    options: dict[str, Any] = {"revision": revision} if revision is not None else {}
    if local:
        options["local_files_only"] = True
    try:
        hf_config = AutoConfig.from_pretrained(ref, **options)
        if vision and getattr(hf_config, "vision_config", None) is not None:
            options["config"] = hf_config.vision_config  # e.g. CLIPVisionModel from a CLIP checkpoint
        backbone = AutoModel.from_pretrained(ref, dtype=torch.float32, **options)
    except Exception as err:
        if not local and is_network_error(err):
            raise hub_unavailable(owner, ref, err) from err
        raise
    return _encoder_only(backbone)


def _encoder_only(backbone: nn.Module) -> nn.Module:
    """The encoder of an encoder-decoder model (Whisper's), else the model itself."""
    if getattr(backbone.config, "is_encoder_decoder", False) and hasattr(backbone, "get_encoder"):
        return backbone.get_encoder()
    return backbone


def load_processor(model: str | None, revision: str | None, kind: str) -> Any | None:
    """The model's own ``AutoImageProcessor`` / ``AutoFeatureExtractor`` (``kind``), or None if it has none."""
    if model is None:
        return None
    import transformers

    ref = str(Path(model).expanduser()) if Path(model).expanduser().is_dir() else model
    options: dict[str, Any] = {"revision": revision} if revision is not None else {}
    if Path(ref).is_dir():
        options["local_files_only"] = True
    try:
        return getattr(transformers, kind).from_pretrained(ref, **options)
    except (OSError, ValueError, KeyError):  # no preprocessor_config.json (e.g. a bare save_pretrained folder)
        return None


def enable_gradient_checkpointing(owner: str, backbone: nn.Module) -> None:
    """Turn on ``transformers``' gradient checkpointing (non-reentrant, so frozen inputs still work)."""
    if not getattr(backbone, "supports_gradient_checkpointing", False):
        raise ValueError(f"{owner}: {type(backbone).__name__} does not support gradient checkpointing")
    if hasattr(backbone, "activation_checkpointing_enable"):  # transformers >= 5
        backbone.activation_checkpointing_enable({"use_reentrant": False})
    else:
        backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
