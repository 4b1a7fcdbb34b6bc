"""Fusion into any causal language model: gated cross-attention injected into a Hugging Face
decoder (Flamingo-style), so a pretrained LM reads an mmctx :class:`~mmctx.types.ExtendedContext`.

::

    lm = AutoModelForCausalLM.from_pretrained("my-lm")          # GPT-2, Llama, Qwen, Mistral, ...
    mm = MultimodalCausalLM(lm, context_dim=fusion.dim, every=2)  # LM frozen, blocks at 0, 2, 4, ...
    out = mm(input_ids, context, attention_mask, labels=input_ids)  # out.loss, out.logits
    with mm.attend(context):                                    # the LM's own generate, untouched
        ids = lm.generate(prompt_ids, num_beams=3, max_new_tokens=20)
    mm.save_injected("xattn.safetensors")                       # the injected weights only

Each chosen decoder layer is wrapped by a :class:`CrossAttendingDecoderLayer`: it runs a
:class:`~mmctx.fusion.GatedCrossAttentionBlock` (tanh gates at 0 on the attention and the
feed-forward branch) on the hidden states, then the original layer with every argument and
output passed through unchanged. The context is set on the wrappers before the LM runs, so
the LM's KV cache, beam search and sampling work as they are; a hidden-state batch that is a
multiple of the context's (beams, ``num_return_sequences``) reads each sample's context
repeated, as ``generate`` repeats its inputs. With no context set the LM runs text-only.

``self_attention=True`` puts a gated causal self-attention (:class:`GatedCausalSelfAttention`,
its gate at 0 too) in front of each block's cross-attention: the block then sees the text
so far on its own, not only through the frozen LM's states (docs/causal_lm.md). Its keys and values live in the LM's own KV cache, as extra
cache layers, so ``generate`` (cache, beam reordering) works as before.
``trainable_lm_layers=k`` leaves the last k decoder layers and the final norm of a frozen
LM trainable, ``train_lm_head=True`` its output embeddings (partial unfreezing; a small LM
trained on narrow text needs the latter, docs/causal_lm.md).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from mmctx.fusion.cross_attention import GatedCrossAttentionBlock
from mmctx.layers import MultiHeadAttention
from mmctx.types import ExtendedContext

__all__ = ["MultimodalCausalLM", "CrossAttendingDecoderLayer", "GatedCausalSelfAttention", "find_decoder_layers"]

#: ``format`` entry of the metadata in a saved injection file.
INJECTED_FORMAT = "mmctx-injected-cross-attention-v1"


class _ContextSlot:
    """The context every wrapper of one model reads: projected x (B, M, D_lm), mask (B, M)."""

    def __init__(self) -> None:
        self.x: Tensor | None = None
        self.mask: Tensor | None = None
        self.text_mask: Tensor | None = None  # (B, T_past + T) the LM call's attention_mask

    def expanded(self, batch: int) -> tuple[Tensor, Tensor] | None:
        """The context for a hidden-state batch of ``batch`` rows, repeated per sample when
        ``batch`` is a multiple of the context's (``generate`` repeat-interleaves its inputs)."""
        if self.x is None or self.mask is None:
            return None
        b = self.x.shape[0]
        if batch == b:
            return self.x, self.mask
        if batch % b != 0:
            raise ValueError(
                f"MultimodalCausalLM: the LM runs a batch of {batch} rows but the context has {b}; "
                "the LM batch must equal the context batch or be a multiple of it (beams)"
            )
        k = batch // b
        return self.x.repeat_interleave(k, dim=0), self.mask.repeat_interleave(k, dim=0)


class GatedCausalSelfAttention(nn.Module):
    """Pre-norm causal self-attention with RoPE whose residual branch is scaled by ``tanh(α)``,
    α starting at 0 (the identity at initialisation), for the injected blocks.

    With a Hugging Face cache its keys/values are appended to the cache layer
    ``cache_index`` (added to the cache when missing), so they are reordered with the LM's
    own for beam search and grow token by token in ``generate``.

    Args:
        dim: width D of the hidden states.
        num_heads: attention heads.
        dropout: attention dropout.
    """

    def __init__(self, dim: int, num_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.attn = MultiHeadAttention(dim, num_heads, dropout=dropout, rope=True)
        self.gate = nn.Parameter(torch.zeros(1))

    def forward(self, x: Tensor, key_mask: Tensor | None = None, cache: Any = None, cache_index: int = 0) -> Tensor:
        """Shapes: x (B, T, D) new positions; key_mask (B, T_past + T) True at real tokens (or
        None: all real); cache: a ``transformers`` ``Cache`` holding T_past earlier positions
        (or None) → (B, T, D)."""
        B, T, _ = x.shape
        h = self.norm(x)
        past = 0
        if cache is not None:
            from transformers.cache_utils import DynamicLayer

            while len(cache.layers) <= cache_index:  # our own layer, after the LM's
                cache.layers.append(DynamicLayer())
            past = cache.layers[cache_index].get_seq_length()
        positions = torch.arange(past, past + T, device=x.device)  # (T,)
        k, v = self.attn.project_kv(h, positions)  # 2×(B, H, T, D/H)
        if cache is not None:
            k, v = cache.layers[cache_index].update(k, v)  # 2×(B, H, T_past + T, D/H)
        if key_mask is not None and key_mask.shape != (B, k.shape[2]):
            key_mask = None  # a mask that does not cover the keys (e.g. a static cache): causal only
        a = self.attn(h, kv=(k, v), key_mask=key_mask, is_causal=True, positions=positions, query_offset=past)
        return x + torch.tanh(self.gate) * a


class CrossAttendingDecoderLayer(nn.Module):
    """A decoder layer with a gated cross-attention block run on its input hidden states.

    ``forward(*args, **kwargs)`` takes the original layer's arguments: the hidden states
    (first positional argument or ``hidden_states=``) go through the block, then everything
    goes to the original layer, whose output is returned unchanged. Attributes the LM reads
    on its layers (``attention_type``, ``layer_idx``, ...) are forwarded to the original layer.

    Args:
        layer: the original decoder layer.
        block: the injected cross-attention block (width = the LM's hidden size).
        slot: the shared context holder.
        causal_attn: an optional gated causal self-attention run before ``block``.
        cache_index: the KV-cache layer of ``causal_attn`` (past the LM's own layers).
    """

    def __init__(
        self,
        layer: nn.Module,
        block: GatedCrossAttentionBlock,
        slot: _ContextSlot,
        causal_attn: GatedCausalSelfAttention | None = None,
        cache_index: int = 0,
    ) -> None:
        super().__init__()
        self.layer = layer
        self.xattn = block
        self.causal_attn = causal_attn
        self.cache_index = cache_index
        self._slot = slot

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name.startswith("_") or name in ("gradient_checkpointing", "layer", "xattn", "causal_attn"):
                raise
            return getattr(self._modules["layer"], name)

    def _cross_attend(self, hidden: Tensor, cache: Any) -> Tensor:
        """Shapes: hidden (B, T, D_lm) → (B, T, D_lm)."""
        ctx = self._slot.expanded(hidden.shape[0])
        if ctx is None:
            return hidden
        x, mask = ctx
        x, mask = x.to(hidden.device), mask.to(hidden.device)  # layers may sit on other devices (device_map)
        use_ckpt = getattr(self.layer, "gradient_checkpointing", False) and self.training and torch.is_grad_enabled()
        if self.causal_attn is not None:
            text_mask = self._slot.text_mask
            text_mask = None if text_mask is None else text_mask.to(device=hidden.device, dtype=torch.bool)
            if use_ckpt and cache is None:
                hidden = checkpoint(self.causal_attn, hidden, text_mask, use_reentrant=False)
            else:
                hidden = self.causal_attn(hidden, text_mask, cache, self.cache_index)
        if use_ckpt:
            return checkpoint(self.xattn, hidden, x, mask, use_reentrant=False)
        return self.xattn(hidden, x, mask)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Shapes: hidden states (B, T, D_lm) in, the original layer's outputs out."""
        cache = _find_cache(args[1:], kwargs) if self.causal_attn is not None else None
        if args:
            args = (self._cross_attend(args[0], cache), *args[1:])
        else:
            kwargs["hidden_states"] = self._cross_attend(kwargs["hidden_states"], cache)
        return self.layer(*args, **kwargs)


def _find_cache(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """The ``transformers`` KV cache among a decoder layer's arguments (Llama passes it as
    ``cache=``, GPT-2 positionally), or None."""
    from transformers.cache_utils import Cache

    return next((v for v in (*args, *kwargs.values()) if isinstance(v, Cache)), None)


def find_decoder_layers(model: nn.Module, path: str | None = None) -> tuple[str, nn.ModuleList]:
    """The decoder-layer list of a causal LM, and its dotted path inside ``model``.

    Found generically: among the ``nn.ModuleList``s whose items are all of one class, the one
    whose length is the config's ``num_hidden_layers`` (when the model has a config), largest
    by parameter count — ``model.layers`` for Llama/Qwen/Mistral, ``transformer.h`` for
    GPT-2. ``path`` names it explicitly instead (e.g. ``"model.layers"``).
    """
    if path is not None:
        layers = model.get_submodule(path)
        if not isinstance(layers, nn.ModuleList):
            raise ValueError(f"find_decoder_layers: {path!r} is a {type(layers).__name__}, not an nn.ModuleList")
        return path, layers
    config = getattr(model, "config", None)
    want = getattr(config, "num_hidden_layers", None) if config is not None else None
    candidates = []
    for name, module in model.named_modules():
        if not isinstance(module, nn.ModuleList) or len(module) == 0:
            continue
        if len({type(m.layer if isinstance(m, CrossAttendingDecoderLayer) else m) for m in module}) != 1:
            continue
        if want is not None and len(module) != want:
            continue
        size = sum(p.numel() for p in module.parameters())
        candidates.append((size, name, module))
    if not candidates:
        raise ValueError(
            f"find_decoder_layers: no list of {want if want is not None else 'identical'} decoder layers found in "
            f"{type(model).__name__}; pass the path of its decoder-layer nn.ModuleList (e.g. 'model.layers')"
        )
    size, name, module = max(candidates, key=lambda c: c[0])
    return name, module


class MultimodalCausalLM(nn.Module):
    """A causal LM with gated cross-attention into an mmctx context, injected in place.

    The LM's chosen decoder layers are replaced (inside ``lm``) by
    :class:`CrossAttendingDecoderLayer` wrappers; ``lm`` itself stays a working Hugging Face
    model (``lm.generate`` inside :meth:`attend`). The context is projected once to the LM's
    width by ``context_proj`` (its masked positions zeroed first, so padding can never leak);
    each block has its own norms, attention and feed-forward. At initialisation the gates are
    0 and the logits equal the original LM's exactly.

    Args:
        lm: a ``transformers`` causal LM (anything with a decoder-layer ``nn.ModuleList``
            whose layers take the hidden states first).
        context_dim: width D of the :class:`~mmctx.types.ExtendedContext` it will read.
        every: inject before every ``every``-th decoder layer.
        first: index of the first decoder layer that gets a block.
        num_heads: heads of the injected attention (default: the LM's
            ``num_attention_heads``).
        mlp_ratio: feed-forward width of the blocks as a multiple of the LM's hidden size.
        dropout: dropout in the blocks.
        freeze_lm: set ``requires_grad=False`` on every original LM parameter (only the
            injected blocks and ``context_proj`` train).
        layers_path: dotted path of the decoder-layer list when the generic search should
            not be used (e.g. ``"model.layers"``).
        self_attention: give each injected block its own gated causal self-attention in
            front of the cross-attention (gate at 0: still exact at initialisation).
        trainable_lm_layers: with ``freeze_lm``, keep the last k decoder layers and the
            norms outside the decoder layers (the final norm) trainable; 0 freezes all.
        train_lm_head: with ``freeze_lm``, keep the output embeddings (``lm_head``; the input
            embeddings too when the LM ties them) trainable.
    """

    def __init__(
        self,
        lm: nn.Module,
        context_dim: int,
        every: int = 1,
        first: int = 0,
        num_heads: int | None = None,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        freeze_lm: bool = True,
        layers_path: str | None = None,
        self_attention: bool = False,
        trainable_lm_layers: int = 0,
        train_lm_head: bool = False,
    ) -> None:
        super().__init__()
        if every < 1:
            raise ValueError(f"MultimodalCausalLM: every must be >= 1, got {every}")
        if trainable_lm_layers < 0:
            raise ValueError(f"MultimodalCausalLM: trainable_lm_layers must be >= 0, got {trainable_lm_layers}")
        if (trainable_lm_layers or train_lm_head) and not freeze_lm:
            raise ValueError("MultimodalCausalLM: trainable_lm_layers and train_lm_head apply to a frozen LM (freeze_lm=True)")
        path, layers = find_decoder_layers(lm, layers_path)
        if any(isinstance(m, CrossAttendingDecoderLayer) for m in layers):
            raise ValueError("MultimodalCausalLM: this LM already has injected cross-attention layers")
        if not 0 <= first < len(layers):
            raise ValueError(f"MultimodalCausalLM: first={first} is outside the {len(layers)} decoder layers")
        config = getattr(lm, "config", None)
        hidden = getattr(config, "hidden_size", None) if config is not None else None
        if hidden is None:
            raise ValueError("MultimodalCausalLM: the LM's config has no hidden_size")
        if num_heads is None:
            num_heads = getattr(config, "num_attention_heads", None)
            if num_heads is None:
                raise ValueError("MultimodalCausalLM: pass num_heads (the LM's config has no num_attention_heads)")
        if trainable_lm_layers > len(layers):
            raise ValueError(
                f"MultimodalCausalLM: trainable_lm_layers={trainable_lm_layers} but the LM has {len(layers)} decoder layers"
            )
        if freeze_lm:
            for p in lm.parameters():
                p.requires_grad_(False)
            if trainable_lm_layers:
                for layer in list(layers)[len(layers) - trainable_lm_layers :]:
                    layer.requires_grad_(True)
                in_layers = {id(m) for m in layers.modules()}
                for m in lm.modules():  # the final norm (Llama's model.norm, GPT-2's ln_f)
                    if id(m) not in in_layers and "norm" in type(m).__name__.lower():
                        m.requires_grad_(True)
            if train_lm_head:
                head = lm.get_output_embeddings() if hasattr(lm, "get_output_embeddings") else None
                if head is None:
                    raise ValueError(f"MultimodalCausalLM: train_lm_head but {type(lm).__name__} has no output embeddings")
                head.requires_grad_(True)
        self.lm = lm
        self.self_attention = self_attention
        self.trainable_lm_layers = trainable_lm_layers
        self.train_lm_head = train_lm_head
        self.layers_path = path
        self.num_lm_layers = len(layers)
        self.hidden_size = int(hidden)
        self.context_dim = context_dim
        self.num_heads = int(num_heads)
        self.mlp_ratio = mlp_ratio
        self.dropout = dropout
        self.injected_layers: tuple[int, ...] = tuple(range(first, len(layers), every))
        self.context_proj = nn.Linear(context_dim, self.hidden_size)
        self._slot = _ContextSlot()
        ref = next(iter(lm.parameters()))
        self.context_proj.to(device=ref.device, dtype=ref.dtype)
        for j, i in enumerate(self.injected_layers):
            block = GatedCrossAttentionBlock(self.hidden_size, self.num_heads, mlp_ratio, dropout, gated=True)
            sa = GatedCausalSelfAttention(self.hidden_size, self.num_heads, dropout) if self_attention else None
            here = next(iter(layers[i].parameters()), ref)  # each block beside its layer
            if sa is not None:
                sa.to(device=here.device, dtype=here.dtype)
            layers[i] = CrossAttendingDecoderLayer(
                layers[i], block.to(device=here.device, dtype=here.dtype), self._slot, sa,
                cache_index=self.num_lm_layers + j,  # its KV-cache layer, after the LM's own
            )
        self._mask_hook = lm.register_forward_pre_hook(self._capture_mask, with_kwargs=True) if self_attention else None
        # The LM's own weights that train in spite of freeze_lm (partial unfreezing): they are
        # part of what a saved injection must restore, so their names are fixed here.
        injected = {id(p) for p in self.injected_parameters()}
        self.trained_lm_names: tuple[str, ...] = tuple(
            n for n, p in lm.named_parameters() if freeze_lm and p.requires_grad and id(p) not in injected
        )

    def _capture_mask(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Keep the LM call's 2-D ``attention_mask`` (B, T_past + T) for the self-attention."""
        mask = kwargs.get("attention_mask")
        self._slot.text_mask = mask if isinstance(mask, Tensor) and mask.dim() == 2 else None

    def unwrap(self) -> nn.Module:
        """Put the original decoder layers back and return the LM (its own state-dict keys
        again, e.g. for ``save_pretrained``); this object is unusable afterwards."""
        layers = self.lm.get_submodule(self.layers_path)
        for i in self.injected_layers:
            if isinstance(layers[i], CrossAttendingDecoderLayer):
                layers[i] = layers[i].layer
        if self._mask_hook is not None:
            self._mask_hook.remove()
        self.set_context(None)
        return self.lm

    # -- the context ---------------------------------------------------------------------

    def set_context(self, context: ExtendedContext | None) -> None:
        """Project ``context`` for the injected blocks (None clears it: text-only LM).

        Shapes: context.x (B, M, D), context.mask (B, M)
        """
        if context is None:
            self._slot.x = self._slot.mask = None
            return
        if context.dim != self.context_dim:
            raise ValueError(
                f"MultimodalCausalLM: context width {context.dim} != context_dim {self.context_dim}"
            )
        w = self.context_proj.weight
        x = context.x.to(dtype=w.dtype).masked_fill(~context.mask[..., None], 0.0)  # (B, M, D)
        self._slot.x = self.context_proj(x)  # (B, M, D_lm)
        self._slot.mask = context.mask

    @contextlib.contextmanager
    def attend(self, context: ExtendedContext | None) -> Iterator[MultimodalCausalLM]:
        """``with model.attend(context): lm(...) / lm.generate(...)`` — the LM reads ``context``."""
        self.set_context(context)
        try:
            yield self
        finally:
            self.set_context(None)

    # -- running -------------------------------------------------------------------------

    def forward(
        self,
        input_ids: Tensor,
        context: ExtendedContext | None,
        attention_mask: Tensor | None = None,
        labels: Tensor | None = None,
    ) -> Any:
        """Run the LM on ``input_ids`` while it attends ``context``; returns the LM's output
        (``.logits`` (B, T, V), ``.loss`` when ``labels`` are given, HF-shifted).

        Shapes: input_ids (B, T), attention_mask (B, T) 1 at real tokens, labels (B, T)
            (-100 = ignored), context.x (B, M, D)
        """
        with self.attend(context):
            return self.lm(input_ids=input_ids, attention_mask=attention_mask, labels=labels)

    @torch.no_grad()
    def generate(self, input_ids: Tensor, context: ExtendedContext | None, **generate_kwargs: Any) -> Tensor:
        """``lm.generate`` (any of its options: ``num_beams``, ``do_sample``, ...) attending ``context``.

        Shapes: input_ids (B, T) prompt, context.x (B, M, D) → (B·num_return_sequences, T + new)
        """
        with self.attend(context):
            return self.lm.generate(input_ids=input_ids, **generate_kwargs)

    # -- the injected weights ------------------------------------------------------------

    def _wrappers(self) -> dict[int, CrossAttendingDecoderLayer]:
        layers = self.lm.get_submodule(self.layers_path)
        return {i: layers[i] for i in self.injected_layers}

    def injected_parameters(self) -> Iterator[nn.Parameter]:
        """The parameters added to the LM: ``context_proj`` and every block."""
        yield from self.context_proj.parameters()
        for wrapper in self._wrappers().values():
            yield from wrapper.xattn.parameters()
            if wrapper.causal_attn is not None:
                yield from wrapper.causal_attn.parameters()

    def injected_state_dict(self) -> dict[str, Tensor]:
        """The injected weights alone: ``context_proj.*``, ``layers.<i>.*`` per block,
        ``layers.<i>.causal_attn.*`` per self-attention, and ``lm.<name>`` for the LM weights
        that ``trainable_lm_layers`` / ``train_lm_head`` left trainable (the rest of the LM is
        the unchanged base)."""
        out = {f"context_proj.{k}": v for k, v in self.context_proj.state_dict().items()}
        params = dict(self.lm.named_parameters())
        out.update({f"lm.{n}": params[n] for n in self.trained_lm_names})
        for i, wrapper in self._wrappers().items():
            out.update({f"layers.{i}.{k}": v for k, v in wrapper.xattn.state_dict().items()})
            if wrapper.causal_attn is not None:
                out.update({f"layers.{i}.causal_attn.{k}": v for k, v in wrapper.causal_attn.state_dict().items()})
        return out

    def load_injected_state_dict(self, state: dict[str, Tensor]) -> None:
        """Load :meth:`injected_state_dict` output (strict: every key, nothing more)."""
        own = self.injected_state_dict()
        missing, extra = sorted(set(own) - set(state)), sorted(set(state) - set(own))
        if missing or extra:
            raise ValueError(f"MultimodalCausalLM: injected weights do not match: missing {missing[:5]}, unexpected {extra[:5]}")
        with torch.no_grad():
            for k, v in own.items():
                if v.shape != state[k].shape:
                    raise ValueError(f"MultimodalCausalLM: {k} has shape {tuple(state[k].shape)}, expected {tuple(v.shape)}")
                v.copy_(state[k])

    def injection_config(self) -> dict[str, Any]:
        """What identifies the injection and its base LM (stored in a saved file's metadata)."""
        return {
            "format": INJECTED_FORMAT,
            "lm_class": type(self.lm).__name__,
            "layers_path": self.layers_path,
            "num_lm_layers": self.num_lm_layers,
            "hidden_size": self.hidden_size,
            "context_dim": self.context_dim,
            "num_heads": self.num_heads,
            "mlp_ratio": self.mlp_ratio,
            "injected_layers": list(self.injected_layers),
            "self_attention": self.self_attention,
            "trainable_lm_layers": self.trainable_lm_layers,
            "train_lm_head": self.train_lm_head,
        }

    def save_injected(self, path: str | Path) -> Path:
        """Write the injected weights alone to a safetensors file (pickle-free), with
        :meth:`injection_config` as its metadata; returns the path."""
        from safetensors.torch import save_file

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().contiguous().cpu() for k, v in self.injected_state_dict().items()}
        save_file(tensors, str(path), metadata={"mmctx": json.dumps(self.injection_config())})
        return path

    @staticmethod
    def read_injection_config(path: str | Path) -> dict[str, Any]:
        """The metadata of a file written by :meth:`save_injected`."""
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        if "mmctx" not in meta:
            raise ValueError(f"{path}: not an mmctx injected cross-attention file (no 'mmctx' metadata)")
        config = json.loads(meta["mmctx"])
        if config.get("format") != INJECTED_FORMAT:
            raise ValueError(f"{path}: format {config.get('format')!r}, expected {INJECTED_FORMAT!r}")
        return config

    def load_injected(self, path: str | Path) -> None:
        """Re-apply weights saved by :meth:`save_injected`; the base LM and the injection must
        match the saved ones (layer count, hidden size, context width, injected layers)."""
        from safetensors.torch import load_file

        saved = self.read_injection_config(path)
        own = self.injection_config()
        for key, default in (("self_attention", False), ("trainable_lm_layers", 0), ("train_lm_head", False)):
            saved.setdefault(key, default)  # files written before the option
        for key in (
            "num_lm_layers", "hidden_size", "context_dim", "num_heads", "injected_layers", "self_attention",
            "trainable_lm_layers", "train_lm_head",
        ):
            if saved.get(key) != own[key]:
                raise ValueError(
                    f"{path}: saved for a model with {key}={saved.get(key)!r} ({saved.get('lm_class')}), "
                    f"but this one has {key}={own[key]!r} ({own['lm_class']})"
                )
        ref = self.context_proj.weight
        state = {k: v.to(device=ref.device) for k, v in load_file(str(path)).items()}
        self.load_injected_state_dict(state)

    @classmethod
    def from_injected(cls, lm: nn.Module, path: str | Path, freeze_lm: bool = True) -> MultimodalCausalLM:
        """Inject into a fresh copy of the base LM as the file says, then load its weights."""
        c = cls.read_injection_config(path)
        layers = c["injected_layers"]
        every = layers[1] - layers[0] if len(layers) > 1 else max(c["num_lm_layers"], 1)
        model = cls(
            lm, c["context_dim"], every=every, first=layers[0], num_heads=c["num_heads"], mlp_ratio=c["mlp_ratio"],
            freeze_lm=freeze_lm, layers_path=c["layers_path"], self_attention=bool(c.get("self_attention", False)),
            trainable_lm_layers=int(c.get("trainable_lm_layers", 0)), train_lm_head=bool(c.get("train_lm_head", False)),
        )
        model.load_injected(path)
        return model
