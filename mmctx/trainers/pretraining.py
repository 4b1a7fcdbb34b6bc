"""Self-supervised multimodal pretraining: contrastive (InfoNCE), matching (ITM) and masked-token
(MLM) objectives in any combination, with cross-modal retrieval evaluation."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn

from mmctx.heads import ClassifierHead
from mmctx.layers import masked_mean
from mmctx.losses import ContrastiveLoss, mask_tokens, masked_token_loss, matching_loss, matching_pairs
from mmctx.metrics.retrieval import caption_groups, recall_at_k
from mmctx.models.pretraining_backbone import PretrainingBackbone
from mmctx.trainers.base import MMCtxTask
from mmctx.trainers.distributed import gather_rows
from mmctx.types import MultimodalBatch, Tokens

__all__ = ["PretrainingTask"]


class PretrainingTask(MMCtxTask):
    """Pretrain encoders (and a fusion) with any subset of three self-supervised objectives.

    - **contrastive**: for each pair ``[a, b]`` of ``contrastive_pairs``, a symmetric InfoNCE
      (:class:`~mmctx.losses.ContrastiveLoss`, learnable temperature) between the projected,
      mean-pooled tokens of the two modalities. Under DDP the embeddings are gathered from
      every process (``all_gather(..., sync_grads=True)``), so the negatives are the whole
      global batch and the loss and gradients equal those of one process on that batch.
    - **matching** (ITM): for each pair of ``itm_pairs``, the fusion builds the context of
      (a, b) pairs — the positives and, for each sample, a hard negative drawn from the
      contrastive similarities of the local batch (never a positive) — and a binary head
      says whether they belong together.
    - **masked tokens** (MLM): BERT-style masking of the real text tokens (15 %), predicted
      from the text encoder's outputs by a linear head.

    The loss is ``Σ weight × term``; each term is logged (``train/contrastive_image_text``,
    ``train/itm_image_text``, ``train/mlm``, ...), as are the temperatures and the ITM accuracy.

    **Positives.** Several samples can share a caption (on the default data many one-object
    scenes are just "a dog"): samples whose ``batch.meta[positive_key]`` texts are identical
    are positives of each other — in the InfoNCE targets (mass spread evenly over them), in
    the ITM negatives (never drawn) and in retrieval (any of them is a hit). Without that
    meta entry, only a sample's own pair is positive.

    **Retrieval evaluation.** On the validation and test splits, every contrastive pair is
    evaluated both ways (e.g. text→image and image→text) over the whole split, gathered from
    every process: ``{val,test}/r{k}_{query}2{gallery}`` for each ``k`` in ``recall_ks``, and
    their mean ``{val,test}/mean_r1``.

    Args:
        encoders: modality name → encoder (``forward(data, mask) -> Tokens``, ``out_dim``).
        fusion: a :class:`~mmctx.fusion.Fusion` over (at least) the ITM modalities; needed
            only for ITM.
        embed_dim: width of the shared contrastive embedding space.
        contrastive_pairs: modality pairs of the contrastive loss, e.g. ``[[image, text]]``.
        contrastive_weight: weight of each contrastive term (0: off).
        temperature: initial InfoNCE temperature.
        learn_temperature: learn the temperature.
        itm_pairs: modality pairs of the matching loss.
        itm_weight: weight of each matching term (0: off).
        itm_hardest: take the most similar negative instead of drawing one.
        mlm_weight: weight of the masked-token loss (0: off).
        mlm_probability: fraction of real text tokens masked.
        text_modality: the modality the MLM masks.
        vocab_size: V of the text tokenizer (filled in by the CLI).
        pad_id: padding id, never masked (filled in by the CLI).
        mask_id: the ``[MASK]`` id; None: the data module tokenizer's ``mask_id`` (else its
            ``unk_id``), read at setup.
        positive_key: ``batch.meta`` entry whose identical texts mark positives, or None.
        recall_ks: the k of recall@k.
        optimizer: optimizer factory.
        scheduler: learning-rate scheduler factory or None.
    """

    def __init__(
        self,
        encoders: dict[str, nn.Module],
        fusion: nn.Module | None = None,
        embed_dim: int = 64,
        contrastive_pairs: list[list[str]] = [["image", "text"]],  # noqa: B006 - never mutated
        contrastive_weight: float = 1.0,
        temperature: float = 0.07,
        learn_temperature: bool = True,
        itm_pairs: list[list[str]] = [],  # noqa: B006 - never mutated
        itm_weight: float = 0.0,
        itm_hardest: bool = False,
        mlm_weight: float = 0.0,
        mlm_probability: float = 0.15,
        text_modality: str = "text",
        vocab_size: int | None = None,
        pad_id: int | None = None,
        mask_id: int | None = None,
        positive_key: str | None = "caption_text",
        recall_ks: list[int] = [1, 5, 10],  # noqa: B006 - never mutated
        optimizer: OptimizerCallable = torch.optim.AdamW,
        scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        super().__init__(PretrainingBackbone(encoders, fusion), optimizer, scheduler)
        self.save_config()
        name = "PretrainingTask"
        self.contrastive_pairs = [tuple(p) for p in contrastive_pairs] if contrastive_weight > 0 else []
        self.itm_pairs = [tuple(p) for p in itm_pairs] if itm_weight > 0 else []
        for what, pairs in (("contrastive_pairs", self.contrastive_pairs), ("itm_pairs", self.itm_pairs)):
            for pair in pairs:
                if len(pair) != 2 or pair[0] == pair[1] or any(m not in encoders for m in pair):
                    raise ValueError(f"{name}: {what} entry {list(pair)} must name two different encoders of {list(encoders)}")
        if self.itm_pairs and fusion is None:
            raise ValueError(f"{name}: itm_weight > 0 needs a fusion")
        if mlm_weight > 0:
            if text_modality not in encoders:
                raise ValueError(f"{name}: mlm_weight > 0 needs a {text_modality!r} encoder (have {list(encoders)})")
            if vocab_size is None:
                raise ValueError(f"{name}: mlm_weight > 0 needs vocab_size (the CLI fills it in from the data)")
        if not (self.contrastive_pairs or self.itm_pairs or mlm_weight > 0):
            raise ValueError(f"{name}: every objective is off; set a contrastive, itm or mlm weight > 0")
        self.contrastive_weight = contrastive_weight
        self.itm_weight = itm_weight
        self.itm_hardest = itm_hardest
        self.mlm_weight = mlm_weight
        self.mlm_probability = mlm_probability
        self.text_modality = text_modality
        self.vocab_size = vocab_size
        self.pad_id = pad_id
        self.mask_id = mask_id
        self.positive_key = positive_key
        self.recall_ks = sorted(set(recall_ks))
        embedded = sorted({m for pair in self.contrastive_pairs + self.itm_pairs for m in pair})
        self.projections = nn.ModuleDict({m: nn.Linear(_out_dim(encoders[m], m), embed_dim) for m in embedded})
        self.contrastive = nn.ModuleDict(
            {f"{a}_{b}": ContrastiveLoss(temperature, learn_temperature) for a, b in self.contrastive_pairs}
        )
        if self.itm_pairs:
            width = fusion.out_dim
            self.itm_head = ClassifierHead(width, num_classes=2, hidden_dim=width)
        if mlm_weight > 0:
            width = _out_dim(encoders[text_modality], text_modality)
            self.mlm_head = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, vocab_size))
        self._eval_rows: dict[str, list[dict[str, Any]]] = {"val": [], "test": []}

    # ------------------------------------------------------------------ pieces

    def setup(self, stage: str) -> None:
        if self.mlm_weight > 0 and self.mask_id is None:
            tokenizer = getattr(getattr(self.trainer, "datamodule", None), "tokenizer", None)
            mask_id = getattr(tokenizer, "mask_id", None)
            self.mask_id = mask_id if mask_id is not None else getattr(tokenizer, "unk_id", None)
            if self.mask_id is None:
                raise ValueError("PretrainingTask: mlm needs mask_id (the data module has no tokenizer with [MASK]/[UNK])")

    def encode(self, batch: MultimodalBatch) -> dict[str, Tokens]:
        """Tokens of every modality of the batch that has an encoder."""
        encoders = self.model.encoders
        return {m: encoders[m](inp.data, inp.mask) for m, inp in batch.inputs.items() if m in encoders}

    def embed(self, tokens: dict[str, Tokens]) -> dict[str, Tensor]:
        """Normalised contrastive embeddings. Shapes: tokens[m].x (B, N, D_m) → (B, E)."""
        return {m: F.normalize(self.projections[m](masked_mean(t.x, t.mask)), dim=-1)
                for m, t in tokens.items() if m in self.projections}

    def groups(self, batch: MultimodalBatch) -> Tensor:
        """(B,) long: equal for samples that are positives of each other."""
        texts = batch.meta.get(self.positive_key) if self.positive_key else None
        if texts is None or any(t is None for t in texts):
            texts = [f"\0id:{i}" for i in batch.ids] if batch.ids else [f"\0row:{i}" for i in range(len(batch))]
        return caption_groups(list(texts)).to(self.device)

    def _gather(self, x: Tensor, grads: bool) -> Tensor:
        """Concatenate ``x`` of every process (rank order). Shapes: (B, ...) → (W*B, ...)."""
        trainer = self._trainer
        if trainer is None or trainer.world_size <= 1:
            return x
        return self.all_gather(x, sync_grads=grads).flatten(0, 1)

    def losses(self, batch: MultimodalBatch) -> dict[str, Tensor]:
        """Every enabled term (unweighted), plus ``"loss"``, the weighted sum."""
        return self.compute(batch)[0]

    def compute(self, batch: MultimodalBatch) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """:meth:`losses` and the local contrastive embeddings ``{modality: (B, E)}``."""
        tokens = self.encode(batch)
        emb = self.embed(tokens)
        groups = self.groups(batch)  # (B,)
        grads = torch.is_grad_enabled()
        terms: dict[str, Tensor] = {}
        total = torch.zeros((), device=self.device)
        if self.contrastive_pairs:
            all_groups = self._gather(groups, grads=False)  # (W*B,)
            positives = all_groups[:, None] == all_groups[None, :]  # (W*B, W*B)
            gathered = {m: self._gather(e, grads=grads) for m, e in emb.items()}
            for a, b in self.contrastive_pairs:
                key = f"{a}_{b}"
                terms[f"contrastive_{key}"] = self.contrastive[key](gathered[a], gathered[b], positives)
                total = total + self.contrastive_weight * terms[f"contrastive_{key}"]
        local_positives = groups[:, None] == groups[None, :]  # (B, B)
        for a, b in self.itm_pairs:
            sim = (emb[a] @ emb[b].t()).detach()  # (B, B)
            index_a, index_b, labels = matching_pairs(sim, local_positives, hardest=self.itm_hardest)
            pair = {a: _take(tokens[a], index_a), b: _take(tokens[b], index_b)}  # P pairs
            logits = self.itm_head(self.model.fusion(pair))  # (P, 2)
            terms[f"itm_{a}_{b}"] = matching_loss(logits, labels)
            terms[f"itm_acc_{a}_{b}"] = (logits.argmax(-1) == labels).float().mean().detach()
            total = total + self.itm_weight * terms[f"itm_{a}_{b}"]
        if self.mlm_weight > 0 and self.text_modality in batch.inputs:
            text = batch.inputs[self.text_modality]
            special = () if self.pad_id is None else (self.pad_id,)
            corrupted, labels = mask_tokens(
                text.data, text.mask, self.mask_id, self.vocab_size, self.mlm_probability, special_ids=special
            )
            hidden = self.model.encoders[self.text_modality](corrupted, text.mask).x  # (B, T, D)
            terms["mlm"] = masked_token_loss(self.mlm_head(hidden), labels)
            total = total + self.mlm_weight * terms["mlm"]
        terms["loss"] = total
        return terms, emb

    # ------------------------------------------------------------------ steps

    def training_step(self, batch: MultimodalBatch, batch_idx: int) -> Tensor:
        terms = self.losses(batch)
        size = len(batch)
        for name, value in terms.items():
            self.log(f"train/{name}", value, prog_bar=name == "loss", batch_size=size)
        for key, loss in self.contrastive.items():
            self.log(f"train/temperature_{key}", loss.temperature, batch_size=size)
        return terms["loss"]

    def validation_step(self, batch: MultimodalBatch, batch_idx: int) -> None:
        self._eval_step(batch, batch_idx, "val")

    def test_step(self, batch: MultimodalBatch, batch_idx: int) -> None:
        self._eval_step(batch, batch_idx, "test")

    def _eval_step(self, batch: MultimodalBatch, batch_idx: int, split: str) -> None:
        terms, emb = self.compute(batch)
        for name, value in terms.items():
            self.log(f"{split}/{name}", value, prog_bar=name == "loss", batch_size=len(batch), sync_dist=True)
        if self.contrastive_pairs:
            groups = self.groups(batch).cpu()
            ids = batch.ids or [f"{batch_idx}:{i}" for i in range(len(batch))]
            for i, sample_id in enumerate(ids):
                row = {"id": sample_id, "group": int(groups[i])}
                row.update({m: e[i].float().cpu() for m, e in emb.items()})
                self._eval_rows[split].append(row)

    def on_validation_epoch_start(self) -> None:
        self._eval_rows["val"] = []

    def on_test_epoch_start(self) -> None:
        self._eval_rows["test"] = []

    def on_validation_epoch_end(self) -> None:
        self._retrieval("val")

    def on_test_epoch_end(self) -> None:
        self._retrieval("test")

    def retrieval_metrics(self, rows: list[dict[str, Any]]) -> dict[str, float]:
        """Recall@k both ways for every contrastive pair, over ``rows`` (one per sample:
        ``id``, ``group`` and an embedding per modality)."""
        metrics: dict[str, float] = {}
        groups = torch.tensor([r["group"] for r in rows])
        positives = groups[:, None] == groups[None, :]  # (N, N): same caption text
        firsts = []
        for a, b in self.contrastive_pairs:
            for query, gallery in ((b, a), (a, b)):
                q = torch.stack([r[query] for r in rows])
                g = torch.stack([r[gallery] for r in rows])
                for k, value in recall_at_k(q, g, positives, self.recall_ks).items():
                    metrics[f"r{k}_{query}2{gallery}"] = value
                if 1 in self.recall_ks:
                    firsts.append(metrics[f"r1_{query}2{gallery}"])
        if firsts:
            metrics["mean_r1"] = sum(firsts) / len(firsts)
        return metrics

    def _retrieval(self, split: str) -> None:
        rows = gather_rows(self._eval_rows[split], self.trainer.world_size)
        self._eval_rows[split] = []
        if not rows or not self.contrastive_pairs:
            return
        for name, value in self.retrieval_metrics(rows).items():
            # every rank holds every row (gathered above), so the values agree without syncing
            self.log(f"{split}/{name}", value, prog_bar=name == "mean_r1", sync_dist=False)


def _out_dim(encoder: nn.Module, name: str) -> int:
    out_dim = getattr(encoder, "out_dim", None)
    if not isinstance(out_dim, int):
        raise ValueError(f"PretrainingTask: encoders[{name!r}] has no int out_dim")
    return out_dim


def _take(tokens: Tokens, index: Tensor) -> Tokens:
    """Rows ``index`` of ``tokens``. Shapes: x (B, N, D), index (P,) → x (P, N, D)."""
    return Tokens(tokens.x[index], tokens.mask[index])
