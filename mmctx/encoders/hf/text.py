"""Any ``transformers`` text encoder (``AutoModel``) behind the mmctx encoder contract."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from mmctx.encoders._checks import check_bool_mask, check_token_ids
from mmctx.encoders._finetune import check_finetune_args
from mmctx.encoders.hf._load import load_backbone
from mmctx.encoders.hf._tower import HFTower
from mmctx.types import Tokens, check_shape

__all__ = ["HFTextEncoder"]


class HFTextEncoder(HFTower):
    """Wrap a Hugging Face ``transformers`` encoder model as an mmctx text encoder.

    The backbone comes from exactly one of:

    * ``model``: a hub id (``"sentence-transformers/all-MiniLM-L6-v2"``), loaded with
      ``from_pretrained`` as transformers does (its cache, ``HF_HUB_OFFLINE`` honoured; a
      hub id that is neither cached nor reachable fails with a message saying how to make
      it work), or a local folder written by ``save_pretrained`` (always works offline);
    * ``config``: a dict of config fields with a ``"model_type"`` key, e.g.
      ``{"model_type": "bert", "hidden_size": 32, "num_hidden_layers": 2, ...}``,
      giving a randomly initialised model (``AutoConfig.for_model`` → ``AutoModel.from_config``).

    Weights are float32. The tokens are the backbone's ``last_hidden_state``, optionally
    projected to ``out_dim``. Parameters the tokens never depend on (BERT's ``pooler``) are
    frozen and listed in :attr:`unused_parameters`: they would otherwise receive no
    gradient (which DDP reports as an error). The data must be tokenized with the model's
    own tokenizer (``AutoTokenizer.from_pretrained(model)``).

    Args:
        model: a hub id or a local folder of a pretrained model.
        config: config fields of a fresh model, including ``"model_type"``.
        out_dim: width of a Linear projection of the hidden states; None keeps the
            backbone's hidden size (no projection).
        freeze: freeze the backbone (``requires_grad=False``) and keep it in eval mode
            (no dropout) even when the encoder is put in training mode; the projection,
            if any, stays trainable.
        train_last_layers: train only the last K transformer layers (and the norm after
            them); the rest of the backbone is frozen and in eval mode.
        trainable: train only the backbone parameters whose names match one of these
            ``fnmatch`` patterns, e.g. ``["encoder.layer.5.*"]``.
        gradient_checkpointing: recompute activations in the backward pass to save memory.
        revision: a hub revision (branch, tag or commit) to pin.
        model_path: the former name of ``model`` (kept so older configs and checkpoints
            still build).

    Attributes:
        out_dim: the output width (projected or hidden size).
        max_seq_len: the backbone's ``max_position_embeddings`` (None if it has none).
        vocab_size: the backbone's vocabulary size.
        unused_parameters: names of backbone parameters frozen because the tokens never use them.
    """

    def __init__(
        self,
        model: str | None = None,
        config: dict[str, Any] | None = None,
        out_dim: int | None = None,
        freeze: bool = False,
        train_last_layers: int | None = None,
        trainable: list[str] | None = None,
        gradient_checkpointing: bool = False,
        revision: str | None = None,
        model_path: str | None = None,
    ) -> None:
        super().__init__()
        owner = "HFTextEncoder"
        if model_path is not None:
            if model is not None:
                raise ValueError(f"{owner}: pass model or its old name model_path, not both")
            model = model_path
        check_finetune_args(owner, freeze, train_last_layers, trainable)
        self.backbone = load_backbone(owner, model, config, revision)
        self.model_name = model
        hf_config = self.backbone.config
        hidden = getattr(hf_config, "hidden_size", None)
        if not isinstance(hidden, int):
            raise ValueError(f"{owner}: the backbone config ({type(hf_config).__name__}) has no hidden_size")
        self.max_seq_len: int | None = getattr(hf_config, "max_position_embeddings", None)
        self.vocab_size: int = hf_config.vocab_size
        pad = getattr(hf_config, "pad_token_id", None)
        self.pad_id: int = pad if isinstance(pad, int) and 0 <= pad < self.vocab_size else 0

        def probe() -> Tensor:
            ids = torch.zeros(1, 2, dtype=torch.long)
            return self.backbone(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state

        self._finish_backbone(owner, probe, hidden, out_dim, freeze, train_last_layers, trainable, gradient_checkpointing)

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
