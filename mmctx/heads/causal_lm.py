"""A caption decoder made of a Hugging Face causal LM with injected gated cross-attention:
the text-decoder interface of :class:`~mmctx.heads.TextDecoder`, so
:class:`~mmctx.models.EncoderDecoderModel` and the captioning task host it unchanged."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mmctx.fusion.causal_lm import MultimodalCausalLM
from mmctx.types import ExtendedContext

__all__ = ["CausalLMDecoder"]

_STRATEGIES = ("greedy", "beam", "sample")


class CausalLMDecoder(nn.Module):
    """``decoder(tokens, context, token_mask) -> logits`` and ``decoder.generate(context, ...)``
    over a causal LM that reads the context through injected gated cross-attention
    (:class:`~mmctx.fusion.MultimodalCausalLM`).

    The LM is ``lm`` (a hub id or a local folder for ``AutoModelForCausalLM``; the data
    module should then use its tokenizer, ``tokenizer: <the same id>``), or, when ``lm`` is
    None, a small Llama-style LM built from ``dim`` / ``num_layers`` / ``num_heads``. The
    special-token ids and the vocabulary size come from the data's tokenizer (the CLI fills
    them in). Generation runs the LM's own ``generate`` (KV cache, beams, sampling).

    Args:
        context_dim: width D of the context the blocks read (the fusion's ``dim``).
        vocab_size: the tokenizer's vocabulary size (at most the LM's). Left unset in YAML
            configs, as the three ids: the CLI fills them from the data module.
        pad_id: padding id.
        bos_id: id every caption starts with (the generation prompt).
        eos_id: id that ends a caption.
        lm: hub id or local folder of a causal LM, or None for a fresh small Llama-style LM.
        dim: hidden size of the fresh LM.
        num_layers: decoder layers of the fresh LM.
        num_heads: attention heads of the fresh LM (and of the injected blocks).
        max_seq_len: positions of the fresh LM.
        every: inject before every ``every``-th decoder layer.
        freeze_lm: train only the injected blocks (and whatever is outside this decoder).
        dropout: dropout in the injected blocks.
        self_attention: give each injected block its own gated causal self-attention
            (docs/causal_lm.md).
        trainable_lm_layers: with ``freeze_lm``, keep the LM's last k decoder layers and its
            final norm trainable.
        train_lm_head: with ``freeze_lm``, keep the LM's output embeddings trainable (what a
            small LM trained on the caption text alone needs; docs/causal_lm.md).
    """

    def __init__(
        self,
        context_dim: int,
        vocab_size: int | None = None,
        pad_id: int | None = None,
        bos_id: int | None = None,
        eos_id: int | None = None,
        lm: str | None = None,
        dim: int = 64,
        num_layers: int = 2,
        num_heads: int = 4,
        max_seq_len: int = 64,
        every: int = 1,
        freeze_lm: bool = True,
        dropout: float = 0.0,
        self_attention: bool = False,
        trainable_lm_layers: int = 0,
        train_lm_head: bool = False,
    ) -> None:
        super().__init__()
        unset = [k for k, v in dict(vocab_size=vocab_size, pad_id=pad_id, bos_id=bos_id, eos_id=eos_id).items() if v is None]
        if unset:
            raise ValueError(
                f"CausalLMDecoder: {', '.join(unset)} unset; they come from the data's tokenizer "
                "(the CLI fills them in; in Python pass tokenizer.vocab_size, .pad_id, .bos_id, .eos_id)"
            )
        if lm is None:
            from transformers import LlamaConfig, LlamaForCausalLM

            model = LlamaForCausalLM(LlamaConfig(
                vocab_size=vocab_size, hidden_size=dim, intermediate_size=4 * dim, num_hidden_layers=num_layers,
                num_attention_heads=num_heads, num_key_value_heads=num_heads, max_position_embeddings=max_seq_len,
                bos_token_id=bos_id, eos_token_id=eos_id, pad_token_id=pad_id,
            ))
            heads: int | None = num_heads
        else:
            from transformers import AutoModelForCausalLM

            model = AutoModelForCausalLM.from_pretrained(lm)
            heads = None
            lm_vocab = model.get_output_embeddings().weight.shape[0]
            if vocab_size > lm_vocab:
                raise ValueError(
                    f"CausalLMDecoder: the tokenizer has {vocab_size} tokens but the LM {lm!r} only {lm_vocab}; "
                    f"use the LM's own tokenizer (data: tokenizer: {lm})"
                )
        self.context_dim = context_dim
        self.vocab_size = vocab_size
        self.pad_id, self.bos_id, self.eos_id = pad_id, bos_id, eos_id
        self._lm_vocab = int(model.get_output_embeddings().weight.shape[0])
        self.model = MultimodalCausalLM(model, context_dim, every=every, num_heads=heads, dropout=dropout,
                                        freeze_lm=freeze_lm, self_attention=self_attention,
                                        trainable_lm_layers=trainable_lm_layers, train_lm_head=train_lm_head)

    def forward(self, tokens: Tensor, context: ExtendedContext, token_mask: Tensor | None = None) -> Tensor:
        """Teacher-forced next-token logits.

        Shapes: tokens (B, T) starting with BOS, token_mask (B, T) bool True at real tokens,
            context.x (B, M, D) → logits (B, T, V) (V: the tokenizer's vocabulary)
        """
        mask = None if token_mask is None else token_mask.long()
        logits = self.model(tokens, context, attention_mask=mask).logits  # (B, T, V_lm)
        return logits[..., : self.vocab_size]

    @torch.no_grad()
    def generate(
        self,
        context: ExtendedContext,
        max_new_tokens: int,
        strategy: str = "greedy",
        num_beams: int = 4,
        length_penalty: float = 1.0,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        no_repeat_ngram_size: int = 0,
        repetition_penalty: float = 1.0,
        use_cache: bool = True,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Caption ids from the LM's own ``generate`` (arguments as
        :meth:`mmctx.heads.TextDecoder.generate`'s; ``generator`` seeds the sampling).

        Shapes: context.x (B, M, D) → (B, T_out) ids without BOS, ``pad_id`` after EOS
        """
        if strategy not in _STRATEGIES:
            raise ValueError(f"CausalLMDecoder: strategy must be one of {_STRATEGIES}, got {strategy!r}")
        B = context.x.shape[0]
        prompt = torch.full((B, 1), self.bos_id, dtype=torch.long, device=context.x.device)  # (B, 1)
        options = dict(
            max_new_tokens=max_new_tokens, use_cache=use_cache, eos_token_id=self.eos_id, pad_token_id=self.pad_id,
            bos_token_id=self.bos_id, no_repeat_ngram_size=no_repeat_ngram_size,
            repetition_penalty=repetition_penalty, attention_mask=torch.ones_like(prompt),
            # as TextDecoder: never generate BOS or padding, nor ids beyond the tokenizer's
            suppress_tokens=sorted({self.bos_id, self.pad_id} - {self.eos_id}) + list(range(self.vocab_size, self._lm_vocab)),
        )
        if strategy == "greedy":
            options.update(do_sample=False, num_beams=1)
        elif strategy == "beam":
            options.update(do_sample=False, num_beams=num_beams, length_penalty=length_penalty, early_stopping=True)
        else:
            options.update(do_sample=True, num_beams=1, temperature=temperature, top_k=top_k, top_p=top_p)
        if generator is None:
            return self.model.generate(prompt, context, **options)[:, 1:]  # (B, T_out)
        # HF generate samples from the global RNG: seed it from `generator`, then restore it
        with torch.random.fork_rng(devices=[context.x.device] if context.x.device.type == "cuda" else []):
            torch.manual_seed(int(torch.randint(0, 2**62, (1,), generator=generator)))
            return self.model.generate(prompt, context, **options)[:, 1:]  # (B, T_out)
