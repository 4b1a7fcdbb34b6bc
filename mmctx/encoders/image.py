"""A timm CNN backbone whose feature map becomes a grid of image tokens."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from mmctx.encoders._checks import check_bool_mask
from mmctx.encoders._finetune import check_finetune_args, configure_trainable, eval_frozen_parts
from mmctx.encoders._hub import hub_unavailable, is_network_error, looks_like_path
from mmctx.encoders.key_map import KEY_MAPS, map_state_dict_by_order
from mmctx.encoders.preprocessing import timm_preprocessing
from mmctx.layers import sincos_2d
from mmctx.types import Tokens, check_shape

__all__ = ["TimmImageEncoder"]


class TimmImageEncoder(nn.Module):
    """Feature map of a timm backbone → ``h*w`` grid tokens with fixed 2-D sincos positions.

    The backbone is built with ``features_only=True, out_indices=(stage,)``; timm then
    keeps only the modules up to that stage, so an early stage is both a finer grid and
    a cheaper network (e.g. resnet18 at 64×64: stage -1 gives a 2×2 grid from 11.2 M
    parameters, stage 2 an 8×8 grid from 0.7 M).

    Only the images that are present are run through the backbone, so missing images cost
    nothing and never touch BatchNorm statistics; their token rows are zeros with an
    all-False mask. Under ``torch.compile`` the backbone runs on every row instead (static
    shapes, no graph break; see :meth:`_forward_every_row`). A batch with no image at all returns such rows directly, with the grid
    size the backbone would give for this input size (probed once per size, in eval mode,
    and cached).

    Weights (``pretrained``) are random (False); timm's default pretrained weights for the
    backbone (True: through timm's own loading and cache, so ``HF_HUB_OFFLINE`` and the
    Hugging Face cache apply); a local state-dict file (``.pth``/``.bin``/``.safetensors``,
    read with ``weights_only=True`` or safetensors: no code is unpickled); or a hub reference
    timm accepts (``"timm/resnet18.a1_in1k"``, ``"hf-hub:org/name"``). The backbone name may
    itself carry a pretrained tag (``"resnet18.a1_in1k"``) or a hub source
    (``"hf-hub:timm/resnet18.a1_in1k"``). Weights load into the full model before the feature
    wrapper is applied; timm adapts ``in_chans`` and drops the classifier. A hub reference
    that is neither cached nor reachable fails with a message that says how to make it work.

    A state dict of another implementation of the same architecture loads with
    ``key_map="by_order"``: its tensors pair with timm's in order, every pair must agree in
    shape (else an error lists the keys and shapes), and :attr:`key_map_report` lists the
    pairs, e.g. EfficientNet-Lite0's original ``_conv_stem.weight`` → timm's
    ``conv_stem.weight``.

    Inputs are used as given: :attr:`preprocessing` says how the pretrained weights expect
    images (size, mean/std, interpolation, crop), from timm's pretrained config of the
    backbone (``timm.data.resolve_model_data_config``).

    Args:
        backbone: a timm model name, e.g. ``"resnet18"``, ``"resnet10t"``,
            ``"efficientnet_lite0"``, optionally with a pretrained tag or a hub source.
        out_dim: token width D (divisible by 4 for the 2-D positions).
        stage: index into the backbone's ``feature_info`` (negative counts from the end).
        pretrained: False, True, a local weights file or a hub reference (see above).
        key_map: None (the file's names are timm's) or ``"by_order"`` (pair by order and
            shape); only with a local file.
        in_chans: number of image channels C.
        freeze: freeze the backbone (``requires_grad=False``) and keep it in eval mode
            (BatchNorm uses its running statistics); the projection stays trainable.
        train_last_layers: train only the last K blocks of the backbone's block stack
            (e.g. EfficientNet's ``blocks``); the rest is frozen and in eval mode.
        trainable: train only the backbone parameters matching these ``fnmatch`` patterns,
            e.g. ``["layer4.*"]``; the rest is frozen and in eval mode.
        gradient_checkpointing: recompute activations in the backward pass (timm's
            ``set_grad_checkpointing``) to save memory.
        norm_layer: the backbone's normalisation, a timm norm-layer name (None: the model's
            own, BatchNorm for ResNets). ``"groupnorm1"`` (one group: per-sample statistics)
            makes every sample's tokens independent of the rest of the batch — training
            under DDP then equals one process exactly without SyncBatchNorm (which needs
            GPUs), and tiny per-device batches stop hurting. Pretrained BatchNorm weights do
            not fit another norm layer.
        pretrained_path: the former name of a local weights file, same as
            ``pretrained=<path>`` (kept so older configs and checkpoints still build).
        channels_last: keep the backbone's weights and inputs in NHWC memory layout
            (``torch.channels_last``); same results, and oneDNN's CPU convolutions (and
            cuDNN's tensor-core ones) run faster in it (about 1.2× fwd+bwd for resnet10t here).
        backbone_args: keyword arguments of the timm model's constructor, passed through
            ``timm.create_model``: e.g. ``{"channels": [32, 64, 128, 256], "stem_width":
            16}`` builds a half-width ResNet (a small student for distillation). An argument
            the model does not take is an error naming it. Pretrained weights must fit the
            changed shapes.

    Attributes:
        out_dim: the token width D.
        num_features: channels of the chosen feature map.
        reduction: the feature map's stride relative to the input.
        preprocessing: the image preprocessing the weights expect (see
            :mod:`mmctx.encoders.preprocessing`).
        key_map_report: with ``key_map="by_order"``, the ``(file name, timm name, shape)``
            pairs that were loaded; else empty.
    """

    def __init__(
        self,
        backbone: str = "resnet18",
        out_dim: int = 128,
        stage: int = -1,
        pretrained: bool | str = False,
        key_map: str | None = None,
        in_chans: int = 3,
        freeze: bool = False,
        train_last_layers: int | None = None,
        trainable: list[str] | None = None,
        gradient_checkpointing: bool = False,
        norm_layer: str | None = None,
        pretrained_path: str | None = None,
        channels_last: bool = False,
        backbone_args: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        import timm  # imported here so that `import mmctx.encoders` does not pay for timm
        from timm.data import resolve_model_data_config

        owner = "TimmImageEncoder"
        if out_dim % 4 != 0:
            raise ValueError(f"{owner}: out_dim must be divisible by 4 (2-D sincos positions), got {out_dim}")
        check_finetune_args(owner, freeze, train_last_layers, trainable)
        if pretrained_path is not None:
            if pretrained not in (False, None):
                raise ValueError(f"{owner}: pass pretrained or its old name pretrained_path, not both")
            if not Path(pretrained_path).expanduser().is_file():
                raise ValueError(f"{owner}: pretrained_path={pretrained_path!r} is not a local file")
            pretrained = pretrained_path
        if key_map is not None and key_map not in KEY_MAPS:
            raise ValueError(f"{owner}: key_map must be None or one of {KEY_MAPS}, got {key_map!r}")
        if norm_layer is not None:
            from timm.layers.create_norm import _NORM_MAP  # the names timm's get_norm_layer accepts

            if norm_layer.replace("_", "").lower() not in _NORM_MAP:
                raise ValueError(f"{owner}: norm_layer={norm_layer!r} is not a timm norm layer; one of {sorted(_NORM_MAP)}")
        norm = {} if norm_layer is None else {"norm_layer": norm_layer}
        reserved = {"pretrained", "pretrained_cfg_overlay", "features_only", "out_indices", "in_chans", "norm_layer"}
        model_args = {k: tuple(v) if isinstance(v, list) else v for k, v in (backbone_args or {}).items()}
        if reserved & set(model_args):
            raise ValueError(f"{owner}: backbone_args may not set {sorted(reserved & set(model_args))}; use the encoder's own arguments")

        overlay: dict | None = None
        hub_ref: str | None = backbone if backbone.startswith("hf-hub:") else None
        self.key_map_report: list[tuple[str, str, tuple[int, ...]]] = []
        if isinstance(pretrained, str):
            local = Path(pretrained).expanduser()
            if local.is_file():
                state_dict, self.key_map_report = _local_state_dict(owner, backbone, str(local), key_map, norm)
                # timm's own pretrained path (in_chans adaptation, head removal); `source=None` keeps it off the hub
                overlay = dict(state_dict=state_dict, file=None, source=None)
            elif looks_like_path(pretrained):
                raise ValueError(f"{owner}: pretrained={pretrained!r} is not a local file")
            else:
                repo = pretrained.removeprefix("hf-hub:")
                hub_ref = f"hf-hub:{repo}"
                overlay = dict(hf_hub_id=repo, source="hf-hub")
        elif pretrained is True and hub_ref is None:
            hub_ref = f"timm's default weights for {backbone!r}"
        if key_map is not None and (overlay is None or "state_dict" not in overlay):
            raise ValueError(f"{owner}: key_map={key_map!r} needs pretrained=<a local weights file>")
        try:
            self.backbone = timm.create_model(
                backbone,
                pretrained=pretrained is not False and pretrained is not None,
                pretrained_cfg_overlay=overlay,
                features_only=True,
                out_indices=(stage,),
                in_chans=in_chans,
                **norm,
                **model_args,
            )
        except (AssertionError, IndexError) as err:
            raise ValueError(f"{owner}: stage={stage} is not a feature stage of {backbone!r}: {err}") from err
        except TypeError as err:
            if not model_args:
                raise
            raise ValueError(f"{owner}: backbone_args={backbone_args!r} do not fit timm's {backbone!r}: {err}") from err
        except Exception as err:
            if hub_ref is not None and is_network_error(err):
                raise hub_unavailable(owner, hub_ref, err) from err
            raise
        if isinstance(getattr(self.backbone, "pretrained_cfg", None), dict):
            self.backbone.pretrained_cfg.pop("state_dict", None)  # do not keep a second copy of the weights
        info = self.backbone.feature_info
        self.backbone_name = backbone
        self.stage = stage
        self.in_chans = in_chans
        self.num_features: int = info.channels()[-1]
        self.reduction: int = info.reduction()[-1]
        self.out_dim = out_dim
        self.preprocessing: dict = timm_preprocessing(resolve_model_data_config(self.backbone))
        self.freeze = freeze
        configure_trainable(owner, self.backbone, freeze, train_last_layers, trainable)
        if gradient_checkpointing:
            if not hasattr(self.backbone, "set_grad_checkpointing"):
                raise ValueError(f"{owner}: {backbone!r} has no gradient checkpointing in timm")
            self.backbone.set_grad_checkpointing(True)
        eval_frozen_parts(self.backbone)
        self.channels_last = channels_last
        if channels_last:
            self.backbone.to(memory_format=torch.channels_last)
        self.proj = nn.Linear(self.num_features, out_dim)
        self._grid_cache: dict[tuple[int, int], tuple[int, int]] = {}

    def train(self, mode: bool = True) -> TimmImageEncoder:
        """Set training mode; frozen parts of the backbone always stay in eval mode."""
        super().train(mode)
        eval_frozen_parts(self.backbone)
        return self

    def grid_size(self, height: int, width: int) -> tuple[int, int]:
        """The feature-map size ``(h, w)`` the backbone gives for ``height × width`` inputs.

        Learned from real forwards, or probed once with one blank image in eval mode (so no
        BatchNorm statistic moves) and cached.
        """
        key = (height, width)
        if key not in self._grid_cache:
            param = next(self.backbone.parameters())
            probe = torch.zeros(1, self.in_chans, height, width, device=param.device, dtype=param.dtype)
            modes = [(m, m.training) for m in self.backbone.modules()]
            try:
                self.backbone.eval()
                with torch.no_grad():
                    feat = self.backbone(probe)[-1]  # (1, C, h, w)
            finally:
                for module, training in modes:
                    module.training = training
            self._grid_cache[key] = (feat.shape[-2], feat.shape[-1])
        return self._grid_cache[key]

    def forward(self, data: Tensor, mask: Tensor) -> Tokens:
        """Encode the present images of a batch into grid tokens.

        Shapes:
            data: (B, C, H, W) float images; rows of missing images are ignored
            mask: (B,) bool, True if the sample has an image
            returns: Tokens with x (B, h*w, D) (row-major grid) and mask (B, h*w), True on
                every token of a present image; rows of missing images are zeros
        """
        check_shape("image data", data, ("B", self.in_chans, "H", "W"))
        check_shape("image mask", mask, (data.shape[0],))
        check_bool_mask("image mask", mask)
        if not data.is_floating_point():
            raise ValueError(f"image data: expected a floating-point tensor, got dtype {data.dtype}")
        B, _, H, W = data.shape
        if torch.compiler.is_compiling():
            return self._forward_every_row(data, mask)
        present = mask.nonzero().squeeze(1)  # (P,) indices of present images
        if present.numel() == 0:
            h, w = self.grid_size(H, W)
            x = data.new_zeros(B, h * w, self.out_dim)
            return Tokens(x, mask[:, None].expand(B, h * w).contiguous())
        tokens, h, w = self._grid_tokens(data.index_select(0, present))  # (P, h*w, D)
        self._grid_cache[(H, W)] = (h, w)
        x = tokens.new_zeros(B, h * w, self.out_dim).index_copy(0, present, tokens)  # (B, h*w, D)
        return Tokens(x, mask[:, None].expand(B, h * w).contiguous())

    def _grid_tokens(self, images: Tensor) -> tuple[Tensor, int, int]:
        """The backbone's last feature map as projected grid tokens with 2-D positions.

        Shapes: images (P, C, H, W) → tokens (P, h*w, D), h, w
        """
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)  # (P, C, H, W), NHWC in memory
        feat = self.backbone(images)[-1]  # (P, C_f, h, w)
        h, w = feat.shape[-2:]
        tokens = self.proj(feat.flatten(2).transpose(1, 2))  # (P, h*w, D)
        return tokens + sincos_2d(h, w, self.out_dim, device=tokens.device).to(tokens.dtype), h, w

    def _forward_every_row(self, data: Tensor, mask: Tensor) -> Tokens:
        """The forward of :meth:`forward` with static shapes, for ``torch.compile``.

        Selecting the present images (``mask.nonzero()``) has a data-dependent size, which
        breaks Dynamo's graph; here the backbone runs on every row instead, the missing rows'
        pixels set to zero first (their padding is never read) and their tokens zeroed after.
        The tokens of present images are the same as :meth:`forward`'s, except that a
        backbone with BatchNorm in training mode then also counts the missing rows' blank
        images in its batch statistics (identical when every image is present, in eval mode,
        or with ``norm_layer="groupnorm1"``). The grid-size cache is not touched (a dict
        mutated inside the graph would make Dynamo guard on it and recompile).

        Shapes:
            data: (B, C, H, W); mask: (B,) bool
            returns: Tokens with x (B, h*w, D) and mask (B, h*w)
        """
        B = data.shape[0]
        images = torch.where(mask[:, None, None, None], data, torch.zeros((), dtype=data.dtype, device=data.device))
        tokens, h, w = self._grid_tokens(images)  # (B, h*w, D)
        x = torch.where(mask[:, None, None], tokens, torch.zeros((), dtype=tokens.dtype, device=tokens.device))
        return Tokens(x, mask[:, None].expand(B, h * w).contiguous())

    def extra_repr(self) -> str:
        return (
            f"backbone={self.backbone_name!r}, stage={self.stage}, out_dim={self.out_dim}, "
            f"reduction={self.reduction}, freeze={self.freeze}"
        )


def _local_state_dict(
    owner: str, backbone: str, path: str, key_map: str | None, norm: dict
) -> tuple[dict[str, Tensor], list[tuple[str, str, tuple[int, ...]]]]:
    """Read a local weights file (no code unpickled) and check it against the full timm model.

    timm itself loads weights into a feature extractor non-strictly (a file of the wrong
    architecture would leave the model silently random), so the names and shapes are checked
    here: every tensor of the model but its classifier must be in the file, with its shape,
    and nothing else. With ``key_map="by_order"`` the file's tensors are renamed first.

    Returns:
        The state dict in timm's names, and the ``by_order`` report (empty without a key map).
    """
    import timm
    from timm.models import load_state_dict

    source = load_state_dict(path, weights_only=True)  # safetensors, or torch.load(weights_only=True)
    with torch.device("meta"):  # names and shapes only, no memory
        reference_model = timm.create_model(backbone, pretrained=False, **norm)
    reference = reference_model.state_dict()
    if key_map == "by_order":
        return map_state_dict_by_order(source, reference, f"{owner}: key_map='by_order' ({path})")
    heads = reference_model.pretrained_cfg.get("classifier") or ()
    heads = (heads,) if isinstance(heads, str) else tuple(heads)
    is_head = lambda key: any(key.startswith(h + ".") for h in heads)  # noqa: E731
    missing = [k for k in reference if k not in source and not is_head(k)]
    unexpected = [k for k in source if k not in reference]
    shapes = [
        f"{k}: file {tuple(source[k].shape)}, model {tuple(reference[k].shape)}"
        for k in reference
        if k in source and tuple(source[k].shape) != tuple(reference[k].shape)
    ]
    if missing or unexpected or shapes:
        lines = [f"{owner}: the weights in {path} do not fit timm's {backbone!r}:"]
        for title, items in (("missing in the file", missing), ("not in the model", unexpected), ("shape differs", shapes)):
            if items:
                lines.append(f"  {len(items)} {title}: " + ", ".join(items[:8]) + (" ..." if len(items) > 8 else ""))
        lines.append("  (a state dict of another implementation of the same architecture may load with key_map='by_order')")
        raise ValueError("\n".join(lines))
    return dict(source), []
