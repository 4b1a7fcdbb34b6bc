"""Any ``transformers`` encoder (``AutoModel``) behind the mmctx encoder contract."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from mmctx.encoders._checks import check_bool_mask, check_token_ids
from mmctx.types import Tokens, check_shape

__all__ = ["HFTextEncoder"]


class HFTextEncoder(nn.Module):
    """Wrap a Hugging Face ``transformers`` encoder model as an mmctx text encoder.

    The backbone comes from exactly one of:

    * ``model_path``: a local folder written by ``save_pretrained`` (config + weights),
      loaded with ``local_files_only=True`` in float32 — nothing is ever downloaded;
    * ``config``: a dict of config fields with a ``"model_type"`` key, e.g.
      ``{"model_type": "bert", "hidden_size": 32, "num_hidden_layers": 2, ...}``,
      giving a randomly initialised model (``AutoConfig.for_model`` → ``AutoModel.from_config``).

    The tokens are the backbone's ``last_hidden_state``, optionally projected to
    ``out_dim``. The pooled output (BERT's ``pooler``) is not part of the token contract,
    so the parameters of a top-level ``pooler`` module are frozen: they would otherwise
    receive no gradient (which DDP reports as an error).

    Args:
        model_path: local folder of a pretrained model.
        config: config fields of a fresh model, including ``"model_type"``.
        out_dim: width of a Linear projection of the hidden states; None keeps the
            backbone's hidden size (no projection).
        freeze: freeze the backbone (``requires_grad=False``) and keep it in eval mode
            (no dropout) even when the encoder is put in training mode; the projection,
            if any, stays trainable.

    Attributes:
        out_dim: the output width (projected or hidden size).
        max_seq_len: the backbone's ``max_position_embeddings`` (None if it has none).
        vocab_size: the backbone's vocabulary size.
    """

    def __init__(
        self,
        model_path: str | None = None,
        config: dict[str, Any] | None = None,
        out_dim: int | None = None,
        freeze: bool = False,
    ) -> None:
        super().__init__()
        # imported here so that `import mmctx.encoders` stays cheap for users without transformers
        from transformers import AutoConfig, AutoModel

        if (model_path is None) == (config is None):
            raise ValueError(
                "HFTextEncoder: pass exactly one of model_path (a local folder) or config (a dict), got "
                f"model_path={model_path!r} and config={'None' if config is None else 'a dict'}"
            )
        if model_path is not None:
            if not Path(model_path).is_dir():
                raise ValueError(f"HFTextEncoder: model_path={model_path!r} is not a local folder")
            self.backbone = AutoModel.from_pretrained(model_path, local_files_only=True, dtype=torch.float32)
        else:
            fields = dict(config)
            model_type = fields.pop("model_type", None)
            if not isinstance(model_type, str):
                raise ValueError(f"HFTextEncoder: config needs a 'model_type' string, got keys {sorted(config)}")
            self.backbone = AutoModel.from_config(AutoConfig.for_model(model_type, **fields))
        hf_config = self.backbone.config
        hidden = getattr(hf_config, "hidden_size", None)
        if not isinstance(hidden, int):
            raise ValueError(f"HFTextEncoder: the backbone config ({type(hf_config).__name__}) has no hidden_size")
        self.hidden_size = hidden
        self.max_seq_len: int | None = getattr(hf_config, "max_position_embeddings", None)
        self.vocab_size: int = hf_config.vocab_size
        pad = getattr(hf_config, "pad_token_id", None)
        self.pad_id: int = pad if isinstance(pad, int) and 0 <= pad < self.vocab_size else 0
        self.freeze = freeze

        pooler = getattr(self.backbone, "pooler", None)
        if isinstance(pooler, nn.Module):
            pooler.requires_grad_(False)
        if freeze:
            self.backbone.requires_grad_(False)
            self.backbone.eval()
        self.proj = nn.Linear(hidden, out_dim) if out_dim is not None else None
        self.out_dim = out_dim if out_dim is not None else hidden

    def train(self, mode: bool = True) -> HFTextEncoder:
        """Set training mode; a frozen backbone always stays in eval mode."""
        super().train(mode)
        if self.freeze:
            self.backbone.eval()
        return self

    def forward(self, data: Tensor, mask: Tensor) -> Tokens:
        """Encode token ids with the wrapped backbone.

        Shapes:
            data: (B, T) long token ids of the backbone's tokenizer, right-padded
            mask: (B, T) bool, True at real tokens; an all-False row is a missing sample
            returns: Tokens with x (B, T, out_dim) and mask (B, T) equal to ``mask``; rows
                of padding and of missing samples are zeros
        """
        check_shape("text data", data, ("B", "T"))
        check_shape("text mask", mask, tuple(data.shape))
        check_bool_mask("text mask", mask)
        if self.max_seq_len is not None and data.shape[1] > self.max_seq_len:
            raise ValueError(
                f"text data: sequence length T={data.shape[1]} exceeds max_seq_len={self.max_seq_len} "
                f"(got shape {tuple(data.shape)})"
            )
        ids = check_token_ids("text data", data, mask, self.vocab_size, self.pad_id)  # (B, T)
        attention = mask.long()  # (B, T)
        if data.shape[1] > 0:
            # a missing sample gets one dummy key so attention stays finite; its rows are zeroed below
            missing = ~mask.any(dim=1)  # (B,)
            attention[:, 0] = attention[:, 0] | missing.long()
        hidden = self.backbone(input_ids=ids, attention_mask=attention).last_hidden_state  # (B, T, hidden)
        x = self.proj(hidden) if self.proj is not None else hidden  # (B, T, out_dim)
        x = x.masked_fill(~mask.unsqueeze(-1), 0.0)
        return Tokens(x, mask)
