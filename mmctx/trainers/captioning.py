"""Captioning task: teacher-forced training of an encoder-decoder, generation-based evaluation."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn

from mmctx.heads import ClassifierHead
from mmctx.losses.ctc import ctc_loss, ctc_targets
from mmctx.losses.detection import token_detection_loss
from mmctx.metrics.caption import caption_metrics
from mmctx.trainers.base import MMCtxTask
from mmctx.trainers.distributed import gather_rows
from mmctx.trainers.writers import CaptionSampleWriter, JsonlPredictionWriter
from mmctx.types import MultimodalBatch

__all__ = ["CaptioningTask"]

_STRATEGIES = ("greedy", "beam", "sample")
_TOKENIZER_KEY = "mmctx_tokenizer_json"


class CaptioningTask(MMCtxTask):
    """Train a model to generate a caption (or transcript) of its inputs, and evaluate it.

    Training minimises the teacher-forced cross-entropy of the next caption token, padding
    ignored (``targets[target]`` is ``[bos] ... [eos]`` padded, ``targets[target + "_mask"]``
    marks real tokens). Validation and test also *generate* a caption for every sample
    (``strategy`` etc.) and, over the whole split, log ``{val,test}/`` ``loss``, ``bleu1`` ..
    ``bleu4``, ``rougeL``, ``cider`` (CIDEr-D), ``exact_match``, ``distinct`` and
    ``ref_distinct`` (see :mod:`mmctx.metrics.caption`; document frequencies of CIDEr-D come
    from the references of the split evaluated). Each sample's references are
    ``batch.meta["references"]`` when the data gives several (COCO-style files), else its
    ``batch.meta["caption_text"]``.

    Outputs in the run folder (:attr:`output_dir`, beside TensorBoard's events and the
    ``checkpoints/`` folder), written by :class:`~mmctx.trainers.CaptionSampleWriter` (added
    by :meth:`configure_callbacks` unless the trainer has one) from :attr:`caption_outputs`:

    - ``captions_val.jsonl`` (last validation) and ``captions_test.jsonl``: one line per
      sample, ``{"id", "references", "generated"}``;
    - ``samples_val.txt`` / ``samples_test.txt``: a Markdown table of the first
      ``num_samples_to_log`` samples (id, reference, generated), also logged to TensorBoard
      as text (``val/samples``, ``test/samples``);

    and, by the task itself:

    - ``tokenizer/``: the data module's tokenizer, saved when fitting starts. It is also
      embedded in every checkpoint (``tokenizers`` tokenizers), so a checkpoint captions
      without its data module.

    ``predict_step`` returns ``[{"input": id, "caption": text}]`` rows (plus ``references``
    when the data has captions), which :class:`~mmctx.trainers.JsonlPredictionWriter` writes.

    Args:
        model: an :class:`~mmctx.models.EncoderDecoderModel` (or any module with
            ``model(batch, tokens, token_mask) -> logits (B, T, V)`` and
            ``model.generate(batch, max_new_tokens, ...) -> ids (B, T_out)``).
        optimizer: optimizer factory.
        scheduler: learning-rate scheduler factory or None.
        label_smoothing: cross-entropy label smoothing.
        max_new_tokens: most tokens generated per caption (EOS included).
        strategy: generation in evaluation and prediction: ``"greedy"``, ``"beam"`` or
            ``"sample"``.
        num_beams: beams per sample (``"beam"``).
        length_penalty: beam scores are ``sum log p / length ** length_penalty``.
        no_repeat_ngram_size: never repeat an n-gram of this size (0: off).
        repetition_penalty: CTRL penalty on tokens already generated (1.0: off).
        num_samples_to_log: rows of the sample tables.
        target: key of the caption ids in ``batch.targets``.
        ctc_weight: weight of an auxiliary CTC loss (:mod:`mmctx.losses.ctc`) on the tokens of
            encoder ``ctc_modality`` (0: off). The training loss is then
            ``cross-entropy + ctc_weight * ctc`` (logged as ``train/ce`` and ``train/ctc``);
            ``{val,test}/loss`` stay the cross-entropy. A linear layer of the task maps that
            encoder's tokens to the decoder's vocabulary plus a blank; it is only used in
            training. Speeds up speech → text a lot (see ``configs/audio_text.yaml``).
        ctc_modality: the encoder whose tokens the CTC loss reads.
        label_loss_weight: weight of an auxiliary classification loss on the decoder's
            context (0: off): a :class:`~mmctx.heads.ClassifierHead` of the task (max pooling
            over the real context tokens, then a linear layer) predicts the sample's class
            ``targets["label"]`` from the same context the decoder cross-attends, and the
            training loss is ``cross-entropy + label_loss_weight * label`` (logged as
            ``train/ce`` and ``train/label``); ``{val,test}/loss`` stay the cross-entropy.
            It gives the encoders a direct gradient towards what the class depends on, where
            the decoder's gradient reaches one relevant token through a softmax over all of
            them (``configs/long_context/answer_sliding.yaml``: it freed a seed whose colour
            sat at chance for 3,000 steps without it, but not every seed; with ``key_loss_weight``
            too, every seed tried). Used in training only: generation, prediction and the
            decoder do not read the head.
        label_loss_on: what the label head reads: ``"context"`` (what the decoder
            cross-attends, after the model's context encoder) or ``"fusion"`` (the fusion's
            output, before the context encoder: the readout of a classification model).
        key_loss_weight: weight of an auxiliary token-level loss (0: off) on the tokens of
            encoder ``key_modality``, the frame-level loss of the spoken task
            (:meth:`~mmctx.context.StreamingMemoryEncoder.frame_loss`) for any encoder: channels
            ``0 .. key_classes`` of each real token are read as logits of (background, key
            class 0, ..., key class ``key_classes - 1``); the tokens in ``targets["key_span"]``
            (B, 2) ``[start, stop)`` are of class ``targets["key_label"]`` (B,), every other
            token background. The loss is the mean cross-entropy over the key tokens plus the
            mean over the background ones; logged as ``train/key``. It makes the one token that
            holds the answer stand out, per class, in the channels a max pooling keeps.
        key_classes: number of key classes (needed with ``key_loss_weight > 0``).
        key_modality: the encoder whose tokens the key loss reads.
        num_classes: classes of ``targets["label"]`` (needed with ``label_loss_weight > 0``);
            left unset in YAML configs, the CLI fills it from the data module.
        compile: compile the model's forward (teacher forcing), or only the named submodules
            (e.g. ``"decoder"``), with ``torch.compile``; see
            :class:`~mmctx.trainers.MMCtxTask`.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        scheduler: LRSchedulerCallable | None = None,
        label_smoothing: float = 0.0,
        max_new_tokens: int = 16,
        strategy: str = "greedy",
        num_beams: int = 4,
        length_penalty: float = 1.0,
        no_repeat_ngram_size: int = 0,
        repetition_penalty: float = 1.0,
        num_samples_to_log: int = 8,
        target: str = "caption",
        ctc_weight: float = 0.0,
        ctc_modality: str = "audio",
        label_loss_weight: float = 0.0,
        label_loss_on: str = "context",
        key_loss_weight: float = 0.0,
        key_classes: int = 0,
        key_modality: str = "text",
        num_classes: int | None = None,
        compile: bool | str | list[str] = False,
    ) -> None:
        super().__init__(model, optimizer, scheduler, compile)
        if strategy not in _STRATEGIES:
            raise ValueError(f"CaptioningTask: strategy must be one of {_STRATEGIES}, got {strategy!r}")
        if max_new_tokens < 1:
            raise ValueError(f"CaptioningTask: max_new_tokens must be >= 1, got {max_new_tokens}")
        if label_loss_on not in ("context", "fusion"):
            raise ValueError(f"CaptioningTask: label_loss_on must be 'context' or 'fusion', got {label_loss_on!r}")
        if key_loss_weight < 0:
            raise ValueError(f"CaptioningTask: key_loss_weight must be >= 0, got {key_loss_weight}")
        if key_loss_weight > 0:
            if key_classes < 1:
                raise ValueError(f"CaptioningTask: key_loss_weight > 0 needs key_classes >= 1, got {key_classes}")
            if key_modality not in getattr(model, "encoders", {}):
                raise ValueError(
                    f"CaptioningTask: key_modality={key_modality!r} has no encoder; the model has "
                    f"{list(getattr(model, 'encoders', {}))}"
                )
        for name, weight in (("ctc_weight", ctc_weight), ("label_loss_weight", label_loss_weight)):
            if weight < 0:
                raise ValueError(f"CaptioningTask: {name} must be >= 0, got {weight}")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"CaptioningTask: label_smoothing must be in [0, 1), got {label_smoothing}")
        for method in ("generate", "encode"):
            if not callable(getattr(model, method, None)):
                raise TypeError(
                    f"CaptioningTask: model {type(model).__name__} has no {method}() method "
                    "(use mmctx.models.EncoderDecoderModel)"
                )
        self.save_config()
        self.label_smoothing = label_smoothing
        self.max_new_tokens = max_new_tokens
        self.strategy = strategy
        self.num_beams = num_beams
        self.length_penalty = length_penalty
        self.no_repeat_ngram_size = no_repeat_ngram_size
        self.repetition_penalty = repetition_penalty
        self.num_samples_to_log = num_samples_to_log
        self.target = target
        self.ctc_weight = ctc_weight
        self.ctc_modality = ctc_modality
        self.ctc_head = self._build_ctc_head(model) if ctc_weight > 0 else None
        self.label_loss_weight = label_loss_weight
        self.label_loss_on = label_loss_on
        self.key_loss_weight = key_loss_weight
        self.key_classes = key_classes
        self.key_modality = key_modality
        self.num_classes = num_classes
        self.label_head = self._build_label_head(model, num_classes) if label_loss_weight > 0 else None
        #: the unweighted loss terms of the last training step (read by NonFiniteGuard)
        self.loss_terms: dict[str, Tensor] = {}
        #: decodes generated ids; taken from ``trainer.datamodule.tokenizer`` (or a checkpoint)
        self.tokenizer: Any = None
        self._rows: dict[str, list[dict]] = {"val": [], "test": []}
        #: each split's evaluated captions until written: ``{split: {"rows", "metrics", "step"}}``
        self.caption_outputs: dict[str, dict[str, Any]] = {}

    def configure_callbacks(self) -> list:
        """The default writer of the caption files, unless the trainer already has one."""
        return self.default_callbacks(CaptionSampleWriter, JsonlPredictionWriter)

    # ------------------------------------------------------------------ model calls

    def forward(self, batch: MultimodalBatch, tokens: Tensor, token_mask: Tensor | None = None) -> Tensor:
        """Teacher-forced logits. Shapes: tokens (B, T), token_mask (B, T) → (B, T, V)."""
        return self.model(batch, tokens, token_mask)

    def _caption_targets(self, batch: MultimodalBatch) -> tuple[Tensor, Tensor]:
        if self.target not in batch.targets:
            raise KeyError(
                f"CaptioningTask: batch has no target {self.target!r} (targets: {list(batch.targets)}); "
                f"set the data module's caption_field"
            )
        ids = batch.targets[self.target]  # (B, T): [bos] ... [eos] [pad]...
        mask = batch.targets.get(f"{self.target}_mask")
        if mask is None:
            mask = torch.ones_like(ids, dtype=torch.bool)
        return ids, mask

    def _build_ctc_head(self, model: nn.Module) -> nn.Linear:
        encoders = getattr(model, "encoders", {})
        if self.ctc_modality not in encoders:
            raise ValueError(
                f"CaptioningTask: ctc_modality={self.ctc_modality!r} has no encoder; the model has {list(encoders)}"
            )
        vocab = getattr(getattr(model, "decoder", None), "vocab_size", None)
        width = getattr(encoders[self.ctc_modality], "out_dim", None)
        if not isinstance(vocab, int) or not isinstance(width, int):
            raise TypeError(
                "CaptioningTask: the CTC loss needs model.decoder.vocab_size and "
                f"model.encoders[{self.ctc_modality!r}].out_dim (got {vocab!r} and {width!r})"
            )
        return nn.Linear(width, vocab + 1)  # the last class is the CTC blank

    def _build_label_head(self, model: nn.Module, num_classes: int | None) -> ClassifierHead:
        if num_classes is None or num_classes < 2:
            raise ValueError(
                f"CaptioningTask: label_loss_weight > 0 needs num_classes >= 2, got {num_classes!r} (from the CLI "
                "it is filled in from the data module's classes: use data with class labels)"
            )
        width = getattr(getattr(model, "decoder", None), "context_dim", None)
        if not isinstance(width, int):
            raise TypeError(f"CaptioningTask: the label loss needs model.decoder.context_dim (got {width!r})")
        return ClassifierHead(width, num_classes, pooling="max")

    def loss_parts(self, batch: MultimodalBatch, with_aux: bool = True) -> dict[str, Tensor]:
        """The unweighted loss terms: ``"ce"`` (mean next-token cross-entropy over the real
        target tokens) and, with ``with_aux``, ``"ctc"`` (``ctc_weight > 0``), ``"label"``
        (``label_loss_weight > 0``: cross-entropy of the label head's class logits) and
        ``"key"`` (``key_loss_weight > 0``, see :meth:`_key_loss`)."""
        ids, mask = self._caption_targets(batch)
        inputs, input_mask = ids[:, :-1], mask[:, :-1]  # (B, T-1): BOS ... last word
        labels = ids[:, 1:].masked_fill(~mask[:, 1:], -100)  # (B, T-1): first word ... EOS, pad ignored
        tokens, fused, context = None, None, None
        if not with_aux or (self.ctc_head is None and self.label_head is None and self.key_loss_weight == 0):
            logits = self(batch, inputs, input_mask)  # (B, T-1, V)
        else:  # the same forward pass, keeping the encoders' tokens and the context for the auxiliary terms
            tokens = self.model.encode_modalities(batch.inputs)
            fused = self.model.fusion(tokens)  # ExtendedContext (B, N, D)
            context = fused if self.model.context_encoder is None else self.model.context_encoder(fused)
            logits = self.model.decoder(inputs, context, input_mask)  # (B, T-1, V): context is what it reads
        parts = {
            "ce": F.cross_entropy(
                logits.flatten(0, 1).float(), labels.flatten(), ignore_index=-100, label_smoothing=self.label_smoothing
            )
        }
        if self.ctc_head is not None and tokens is not None and self.ctc_modality in tokens:
            frames = tokens[self.ctc_modality]
            targets, lengths = ctc_targets(ids, mask)
            blank = self.ctc_head.out_features - 1
            parts["ctc"] = ctc_loss(self.ctc_head(frames.x), frames.mask, targets, lengths, blank)
        if self.label_head is not None and context is not None:
            if "label" not in batch.targets:
                raise KeyError(
                    f"CaptioningTask: label_loss_weight > 0 needs targets['label'] in the batch (targets: "
                    f"{list(batch.targets)}); use data with class labels, or label_loss_weight: 0"
                )
            read = context if self.label_loss_on == "context" else fused
            parts["label"] = F.cross_entropy(self.label_head(read).float(), batch.targets["label"])  # (B, K) vs (B,)
        if self.key_loss_weight > 0 and tokens is not None:
            parts["key"] = self._key_loss(batch, tokens)
        return parts

    def _key_loss(self, batch: MultimodalBatch, tokens: dict[str, Any]) -> Tensor:
        """The token-level key loss (see ``key_loss_weight``) on ``tokens[key_modality]``.

        Shapes: tokens[key_modality].x (B, T, D), targets key_span (B, 2), key_label (B,) → scalar
        """
        missing = [k for k in ("key_span", "key_label") if k not in batch.targets]
        if missing:
            raise KeyError(
                f"CaptioningTask: key_loss_weight > 0 needs targets {missing} in the batch (targets: "
                f"{list(batch.targets)}); use data with key spans, or key_loss_weight: 0"
            )
        if self.key_modality not in tokens:
            raise KeyError(f"CaptioningTask: the batch has no {self.key_modality!r} input for the key loss")
        x, mask = tokens[self.key_modality].x, tokens[self.key_modality].mask  # (B, T, D), (B, T)
        spans, key = batch.targets["key_span"], batch.targets["key_label"]  # (B, 2), (B,)
        K = self.key_classes + 1
        if K > x.shape[-1]:
            raise ValueError(f"CaptioningTask: key_classes + 1 = {K} > the {self.key_modality!r} width {x.shape[-1]}")
        position = torch.arange(x.shape[1], device=x.device)[None]  # (1, T)
        inside = (position >= spans[:, :1]) & (position < spans[:, 1:])  # (B, T)
        return token_detection_loss(x[..., :K], mask, inside, key)

    def loss(self, batch: MultimodalBatch) -> Tensor:
        """The training loss: cross-entropy (+ ``ctc_weight`` × CTC, + ``label_loss_weight`` × label,
        + ``key_loss_weight`` × key)."""
        return self._total(self.loss_parts(batch))

    def _total(self, parts: dict[str, Tensor]) -> Tensor:
        total = parts["ce"]
        if "ctc" in parts:
            total = total + self.ctc_weight * parts["ctc"]
        if "label" in parts:
            total = total + self.label_loss_weight * parts["label"]
        if "key" in parts:
            total = total + self.key_loss_weight * parts["key"]
        return total

    @torch.no_grad()
    def generate(self, batch: MultimodalBatch) -> Tensor:
        """Generated ids with the task's evaluation settings. Shapes: → (B, T_out) long."""
        return self.model.generate(
            batch,
            self.max_new_tokens,
            strategy=self.strategy,
            num_beams=self.num_beams,
            length_penalty=self.length_penalty,
            no_repeat_ngram_size=self.no_repeat_ngram_size,
            repetition_penalty=self.repetition_penalty,
        )

    def caption(self, batch: MultimodalBatch) -> list[str]:
        """Generated captions of a batch, as text (needs :attr:`tokenizer`)."""
        return self.decode(self.generate(batch))

    def decode(self, ids: Tensor) -> list[str]:
        """Text of generated ids, each row cut at its first EOS. Shapes: ids (B, T)."""
        if self.tokenizer is None:
            raise RuntimeError(
                "CaptioningTask: no tokenizer to decode with; it is taken from trainer.datamodule.tokenizer "
                "or a checkpoint, or set task.tokenizer = mmctx.data.load_tokenizer(path)"
            )
        eos = getattr(self.tokenizer, "eos_id", None)
        texts = []
        for row in ids.tolist():
            if eos is not None and eos in row:
                row = row[: row.index(eos)]
            texts.append(self.tokenizer.decode(row).strip())
        return texts

    # ------------------------------------------------------------------ tokenizer

    def setup(self, stage: str) -> None:
        tokenizer = getattr(self.trainer.datamodule, "tokenizer", None)
        if tokenizer is not None:
            self.tokenizer = tokenizer
        vocab = getattr(getattr(self.model, "decoder", None), "vocab_size", None)
        tokenizer_vocab = getattr(self.tokenizer, "vocab_size", None)
        if vocab is not None and tokenizer_vocab is not None and tokenizer_vocab != vocab:
            raise ValueError(
                f"CaptioningTask: the decoder has vocab_size={vocab} but the tokenizer {self.tokenizer!r} has "
                f"{tokenizer_vocab}"
            )

    def on_fit_start(self) -> None:
        if self.trainer.is_global_zero and hasattr(self.tokenizer, "save"):
            path = self.tokenizer.save(self.output_dir / "tokenizer")
            print(f"tokenizer saved to {path}", flush=True)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        backend = getattr(self.tokenizer, "backend", None)
        if backend is not None and hasattr(backend, "to_str"):  # a `tokenizers` tokenizer: one JSON string
            checkpoint[_TOKENIZER_KEY] = backend.to_str()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.tokenizer is None and _TOKENIZER_KEY in checkpoint:
            from tokenizers import Tokenizer

            from mmctx.data.tokenization import TextTokenizer

            self.tokenizer = TextTokenizer(Tokenizer.from_str(checkpoint[_TOKENIZER_KEY]), source="<checkpoint>")

    # ------------------------------------------------------------------ steps

    def training_step(self, batch: MultimodalBatch, batch_idx: int) -> Tensor:
        self.loss_terms = self.loss_parts(batch)
        loss = self._total(self.loss_terms)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch))
        if len(self.loss_terms) > 1:  # auxiliary terms: each one logged beside the total
            self.log_dict({f"train/{k}": v.detach() for k, v in self.loss_terms.items()}, batch_size=len(batch))
        return loss

    def validation_step(self, batch: MultimodalBatch, batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: MultimodalBatch, batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def predict_step(self, batch: MultimodalBatch, batch_idx: int) -> list[dict]:
        captions = self.caption(batch)
        references = _references(batch)
        rows = []
        for i, text in enumerate(captions):
            row: dict[str, Any] = {"input": _sample_id(batch, i), "caption": text}
            if references is not None:
                row["references"] = references[i]
            rows.append(row)
        return rows

    def _eval_step(self, batch: MultimodalBatch, split: str) -> None:
        self.log(f"{split}/loss", self.loss_parts(batch, with_aux=False)["ce"], prog_bar=split == "val", batch_size=len(batch), sync_dist=True)
        references = _references(batch)
        if references is None:
            raise KeyError(f"CaptioningTask: the {split} batch has no reference captions (meta['caption_text'])")
        for i, text in enumerate(self.caption(batch)):
            self._rows[split].append({"id": _sample_id(batch, i), "references": references[i], "generated": text})

    def on_validation_epoch_start(self) -> None:
        self._rows["val"] = []

    def on_test_epoch_start(self) -> None:
        self._rows["test"] = []

    def on_validation_epoch_end(self) -> None:
        if not self.trainer.sanity_checking:  # a freshly initialised model's captions tell nothing
            self._finish("val")

    def on_test_epoch_end(self) -> None:
        self._finish("test")

    # ------------------------------------------------------------------ evaluation outputs

    def _finish(self, split: str) -> None:
        rows = gather_rows(self._rows[split], self.trainer.world_size)
        self._rows[split] = []
        if not rows:
            return
        metrics = caption_metrics([r["generated"] for r in rows], [r["references"] for r in rows])
        # every rank holds every row (gathered above), so the values agree without syncing
        for name, value in metrics.items():
            self.log(f"{split}/{name}", value, prog_bar=name in ("bleu4", "cider"), sync_dist=False)
        self.caption_outputs[split] = {"rows": rows, "metrics": metrics, "step": self.global_step}


def _sample_id(batch: MultimodalBatch, i: int) -> str:
    return batch.ids[i] if i < len(batch.ids) else str(i)


def _references(batch: MultimodalBatch) -> list[list[str]] | None:
    """Each sample's reference captions: ``meta["references"]`` (several per sample) or
    ``meta["caption_text"]`` (one), or None when the batch has none."""
    if batch.meta.get("references") is not None:
        return [list(refs) for refs in batch.meta["references"]]
    if batch.meta.get("caption_text") is not None:
        return [[text] for text in batch.meta["caption_text"]]
    return None
