"""Encoders + fusion (+ context encoder) + autoregressive text decoder, as one ``nn.Module``."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from mmctx.models.fusion_model import FusionModel
from mmctx.types import ModalityInput, MultimodalBatch

__all__ = ["EncoderDecoderModel"]


class EncoderDecoderModel(FusionModel):
    """Inputs of any modalities → extended context → text, e.g. an image or audio captioner.

    The encoding half is :class:`~mmctx.models.FusionModel`'s (one encoder per modality,
    a fusion, an optional context encoder); the decoder cross-attends the resulting
    :class:`~mmctx.types.ExtendedContext`, restricted to its mask. A text prompt is one more
    input modality (a text encoder in ``encoders``), fused like the others.

    Args:
        encoders: modality name → encoder (``forward(data, mask) -> Tokens``, ``out_dim``).
        fusion: a :class:`~mmctx.fusion.Fusion`; its ``out_dim`` must equal the decoder's
            ``context_dim``.
        decoder: a text decoder, e.g. :class:`~mmctx.heads.TextDecoder`:
            ``decoder(tokens, context, token_mask) -> logits`` and
            ``decoder.generate(context, max_new_tokens, ...) -> ids``. Its vocabulary size
            and special-token ids come from the tokenizer (the CLI fills them in).
        context_encoder: optional module ``ExtendedContext -> ExtendedContext`` run between
            fusion and decoder.
    """

    def __init__(
        self,
        encoders: dict[str, nn.Module],
        fusion: nn.Module,
        decoder: nn.Module,
        context_encoder: nn.Module | None = None,
    ) -> None:
        if not callable(getattr(decoder, "generate", None)):
            raise TypeError(f"EncoderDecoderModel: decoder {type(decoder).__name__} has no generate() method")
        super().__init__(encoders, fusion, decoder, context_encoder)

    @property
    def decoder(self) -> nn.Module:
        """The text decoder (stored as ``head``, so checkpoints share FusionModel's layout)."""
        return self.head

    def forward(
        self,
        inputs: Mapping[str, ModalityInput] | MultimodalBatch,
        tokens: Tensor,
        token_mask: Tensor | None = None,
    ) -> Tensor:
        """Teacher-forced next-token logits.

        Args:
            inputs: the batch (or its ``inputs``) to encode.
            tokens: decoder input ids, each sequence starting with BOS.
            token_mask: True at real tokens (None: all real).

        Shapes:
            inputs[m]: see :class:`~mmctx.types.ModalityInput`
            tokens: (B, T) long, token_mask: (B, T) bool
            returns: logits (B, T, V)
        """
        return self.decoder(tokens, self.encode(inputs), token_mask)

    @torch.no_grad()
    def generate(
        self,
        inputs: Mapping[str, ModalityInput] | MultimodalBatch,
        max_new_tokens: int,
        strategy: str = "greedy",
        num_beams: int = 4,
        length_penalty: float = 1.0,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        no_repeat_ngram_size: int = 0,
        repetition_penalty: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Encode the inputs and generate token ids (call ``eval()`` first).

        The arguments after ``inputs`` are :meth:`mmctx.heads.TextDecoder.generate`'s.

        Shapes:
            inputs[m]: see :class:`~mmctx.types.ModalityInput`
            returns: (B, T_out) long ids without BOS, padding after each sample's EOS
        """
        return self.decoder.generate(
            self.encode(inputs),
            max_new_tokens,
            strategy=strategy,
            num_beams=num_beams,
            length_penalty=length_penalty,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            no_repeat_ngram_size=no_repeat_ngram_size,
            repetition_penalty=repetition_penalty,
            generator=generator,
        )
