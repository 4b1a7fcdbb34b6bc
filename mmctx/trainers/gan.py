"""Conditional GAN task: generate images or spectrograms from an extended context."""

from __future__ import annotations

import contextlib
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import OptimizerCallable
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel

from mmctx.losses.gan import (
    GAN_LOSSES,
    discriminator_loss,
    generator_loss,
    r1_penalty,
    word_classification_loss,
    word_multilabel_loss,
    word_targets,
)
from mmctx.trainers.base import MMCtxTask
from mmctx.trainers.checkpoints import load_submodules
from mmctx.trainers.writers import GANSampleWriter, GeneratedSamples, JsonlPredictionWriter, SampleGrid
from mmctx.types import ExtendedContext, ModalityInput, MultimodalBatch

__all__ = ["GANTask"]

_WORD_LOSS_KINDS = ("classification", "multilabel")
_IMAGENET_MEAN = (0.485, 0.456, 0.406)  # mmctx.data.IMAGENET_MEAN: the data's image normalisation
_IMAGENET_STD = (0.229, 0.224, 0.225)


class GANTask(MMCtxTask):
    """Adversarial training of a conditional generator, with manual optimisation.

    The condition (e.g. a caption, an audio clip, or both) goes through the encoders and
    the fusion of ``model`` — a :class:`~mmctx.models.FusionModel` whose ``head`` is the
    generator — into an :class:`~mmctx.types.ExtendedContext`; the generator maps noise and
    that context to a sample, the discriminator scores (sample, context) pairs. The batch
    input named ``target`` ("image" or "audio") is the real sample, never a condition;
    every other input modality with an encoder is. Images are mapped from the data's
    ImageNet normalisation to [-1, 1] and resized (area) to the generator's size; audio
    waveforms become log-mel spectrograms through ``spectrogram``
    (:class:`~mmctx.heads.LogMelCodec`).

    One training step = one discriminator update (and the R1 penalty every
    ``r1_every`` steps), then, every ``n_critic`` steps, one generator update; each update
    clips its gradients' norm to ``gradient_clip_val`` (> 0). Lightning counts both
    optimizers' steps in ``global_step`` (so ``max_steps`` counts them too).

    The conditioning encoders + fusion are either frozen (``freeze_encoders``: no
    gradient, eval mode — e.g. loaded from a classification or captioning checkpoint with
    ``init_encoders_from``) or trained by the *discriminator's* loss (in its optimizer):
    the projection discriminator has to tell matching from mismatching conditions, which
    is what a condition embedding should capture; the generator reads the context detached,
    so the two players never pull the shared encoder in opposite directions.

    With ``ema_decay > 0`` an exponential moving average of the generator
    (:class:`torch.optim.swa_utils.AveragedModel`, buffers included; the decay warms up as
    ``min(ema_decay, (1 + n) / (10 + n))`` after ``n`` updates) is kept and used for all
    sampling (grids, ``predict``, :meth:`generate`).

    Outputs (in the run folder, :attr:`output_dir`, beside ``checkpoints/``), written by
    :class:`~mmctx.trainers.GANSampleWriter` (added by :meth:`configure_callbacks` unless the
    trainer has one) from :meth:`sample_grid` and :attr:`generated`:

    - every ``sample_every_n_steps`` global steps and at the end of fitting, a grid of
      fixed-noise samples, one row per fixed condition (the first ``num_sample_conditions``
      validation samples, else training samples) and ``samples_per_condition`` columns:
      ``samples/step_XXXXXX.png``, ``samples_last.png``, ``samples_conditions.txt`` (the
      row conditions), and TensorBoard's Images tab (``samples``);
      spectrograms are drawn with time to the right and low frequencies at the bottom;
    - ``predict``: ``num_predict_samples`` samples per input in ``predict_dir`` (default
      ``<run folder>/generated``): ``<id>_<k>.png``, plus ``<id>_<k>.wav`` (Griffin-Lim)
      for spectrograms; ``predict_step`` returns ``{"input", "condition", "files"}`` rows.

    Args:
        model: a :class:`~mmctx.models.FusionModel` whose ``head`` is the generator
            (:class:`~mmctx.heads.ConditionalGenerator` or
            :class:`~mmctx.heads.SpectrogramGenerator`: ``head(z, context)``, ``z_dim``,
            ``output_shape``).
        discriminator: ``discriminator(x, context) -> logits (B,)``, e.g.
            :class:`~mmctx.heads.ProjectionDiscriminator`.
        generator_optimizer: optimizer factory of the generator.
        discriminator_optimizer: optimizer factory of the discriminator (and of the
            encoders + fusion unless frozen).
        loss: ``"hinge"`` or ``"non_saturating"``.
        n_critic: discriminator updates per generator update.
        r1_gamma: weight of the R1 penalty (``gamma / 2 · R1``); 0 disables it.
        r1_every: apply R1 every this many discriminator steps (scaled up to match; lazy R1).
        gradient_clip_val: clip each update's gradient norm to this (0: no clipping).
        mode_seeking: weight of the mode-seeking term (MSGAN, Mao et al. 2019) against a
            generator that ignores its noise for a given condition (conditional mode
            collapse): half the generator batch repeats the other half's conditions with new
            noise, and ``weight / (mean|G(c, z1) - G(c, z2)| / mean|z1 - z2| + 1e-5)`` is added
            to the generator's loss (0: off).
        ema_decay: decay of the generator EMA (0: no EMA, sample with the generator).
        word_loss: weight of the auxiliary word classification loss (AC-GAN on the
            condition's words, :func:`~mmctx.losses.word_classification_loss`): the
            discriminator's word head (``ProjectionDiscriminator(vocab_size=...)``) learns
            to name the words of the *real* samples' text conditions, and the generator is
            trained to make samples it names as their own condition's words (0: off; needs
            a ``text`` condition).
        word_loss_kind: ``"classification"`` (AC-GAN: the word head learns the words of
            real samples only, :func:`~mmctx.losses.word_classification_loss`) or
            ``"multilabel"`` (Omni-GAN: :func:`~mmctx.losses.word_multilabel_loss`; the word
            head also learns that a generated sample shows none of its words, so it stays
            an adversary instead of a fixed classifier the generator can satisfy with
            pictures that do not look real).
        implied_words: words each word adds to a text condition's bag of words (the word
            loss's targets), e.g. each object's category ``{"dog": ["animals"], ...}``, so
            the word head also names (and the generator also has to show) what the caption
            implies but does not say; every word must be one token of the data's tokenizer.
        discriminator_augment: differentiable augmentation of every discriminator input, real and
            generated alike (e.g. :class:`~mmctx.layers.DiffAugment`); None: off.
        freeze_encoders: keep the encoders, fusion and context encoder fixed.
        init_encoders_from: a Lightning checkpoint whose ``model.encoders.<modality>.*``,
            ``model.fusion.*`` and ``model.context_encoder.*`` weights initialise this task's
            (:func:`~mmctx.trainers.checkpoints.load_submodules`: each must match exactly).
        target: the batch input to generate: ``"image"`` or ``"audio"``.
        spectrogram: waveform ↔ spectrogram codec, required for ``target="audio"``.
        sample_every_n_steps: global steps between sample grids (0: only at the end).
        num_sample_conditions: rows of the sample grid.
        samples_per_condition: columns of the sample grid.
        num_predict_samples: samples per input written by ``predict``.
        predict_dir: folder of ``predict``'s files (None: ``<run folder>/generated``).
        sample_seed: seed of the grid's fixed noise and of ``predict``'s noise.
    """

    def __init__(
        self,
        model: nn.Module,
        discriminator: nn.Module,
        generator_optimizer: OptimizerCallable = torch.optim.Adam,
        discriminator_optimizer: OptimizerCallable = torch.optim.Adam,
        loss: str = "hinge",
        n_critic: int = 1,
        r1_gamma: float = 0.0,
        r1_every: int = 1,
        gradient_clip_val: float = 0.0,
        mode_seeking: float = 0.0,
        ema_decay: float = 0.999,
        word_loss: float = 0.0,
        word_loss_kind: str = "classification",
        implied_words: dict[str, list[str]] | None = None,
        discriminator_augment: nn.Module | None = None,
        freeze_encoders: bool = False,
        init_encoders_from: str | None = None,
        target: str = "image",
        spectrogram: nn.Module | None = None,
        sample_every_n_steps: int = 500,
        num_sample_conditions: int = 8,
        samples_per_condition: int = 8,
        num_predict_samples: int = 4,
        predict_dir: str | None = None,
        sample_seed: int = 0,
    ) -> None:
        super().__init__(model, generator_optimizer, None)
        generator = getattr(model, "head", None)
        if not callable(getattr(model, "encode", None)) or generator is None or not hasattr(generator, "z_dim"):
            raise TypeError(
                f"GANTask: model {type(model).__name__} must be a FusionModel (encode()) whose head is a "
                "generator with z_dim, e.g. mmctx.heads.ConditionalGenerator"
            )
        if loss not in GAN_LOSSES:
            raise ValueError(f"GANTask: loss must be one of {GAN_LOSSES}, got {loss!r}")
        if target not in ("image", "audio"):
            raise ValueError(f"GANTask: target must be 'image' or 'audio', got {target!r}")
        if target == "audio" and spectrogram is None:
            raise ValueError("GANTask: target='audio' needs spectrogram (e.g. mmctx.heads.LogMelCodec)")
        if target in getattr(model, "encoders", {}):
            raise ValueError(f"GANTask: target {target!r} cannot also be a condition (it has an encoder)")
        for name, value in (("n_critic", n_critic), ("r1_every", r1_every), ("samples_per_condition",
                            samples_per_condition), ("num_predict_samples", num_predict_samples)):
            if value < 1:
                raise ValueError(f"GANTask: {name} must be >= 1, got {value}")
        if word_loss_kind not in _WORD_LOSS_KINDS:
            raise ValueError(f"GANTask: word_loss_kind must be one of {_WORD_LOSS_KINDS}, got {word_loss_kind!r}")
        if word_loss < 0:
            raise ValueError(f"GANTask: word_loss must be >= 0, got {word_loss}")
        if word_loss > 0 and getattr(discriminator, "vocab_size", None) is None:
            raise ValueError(
                "GANTask: word_loss > 0 needs a discriminator word head (ProjectionDiscriminator(vocab_size=...))"
            )
        if word_loss > 0 and "text" not in getattr(model, "encoders", {}):
            raise ValueError("GANTask: word_loss > 0 needs a 'text' condition (an encoder named 'text')")
        if not 0.0 <= ema_decay < 1.0:
            raise ValueError(f"GANTask: ema_decay must be in [0, 1), got {ema_decay}")
        channels = getattr(discriminator, "channels", None)
        out_shape = getattr(generator, "output_shape", None)
        if channels is not None and out_shape is not None and channels != out_shape[0]:
            raise ValueError(
                f"GANTask: the generator makes {out_shape[0]} channels but discriminator.channels={channels}"
            )
        self.save_config()
        self.automatic_optimization = False
        self.discriminator = discriminator
        self.discriminator_optimizer_factory = discriminator_optimizer
        self.loss_kind = loss
        self.n_critic = n_critic
        self.r1_gamma = r1_gamma
        self.r1_every = r1_every
        self.gradient_clip_val = gradient_clip_val
        self.mode_seeking = mode_seeking
        self.word_loss = word_loss
        self.word_loss_kind = word_loss_kind
        self.implied_words = {k: list(v) for k, v in (implied_words or {}).items()}
        self._implied: Tensor | None = None  # (V, V), built from the tokenizer on first use
        self.discriminator_augment = discriminator_augment
        self.freeze_encoders = freeze_encoders
        self.target = target
        self.spectrogram = spectrogram
        self.sample_every_n_steps = sample_every_n_steps
        self.num_sample_conditions = num_sample_conditions
        self.samples_per_condition = samples_per_condition
        self.num_predict_samples = num_predict_samples
        self.predict_dir = predict_dir
        self.sample_seed = sample_seed
        self.generator_ema: AveragedModel | None = None
        if ema_decay > 0:
            self.generator_ema = AveragedModel(generator, avg_fn=partial(_ema, decay=ema_decay), use_buffers=True)
            self.generator_ema.requires_grad_(False)
        if init_encoders_from is not None:
            self._load_encoders(init_encoders_from)
        if freeze_encoders:
            self.conditioning_modules().requires_grad_(False)
        #: decodes text conditions for the grid's captions; from the data module if it has one
        self.tokenizer: Any = None
        self._d_steps = 0
        self._fixed: tuple[dict[str, ModalityInput], Tensor, list[str]] | None = None
        #: the last predict batch's samples until written (by GANSampleWriter)
        self.generated: GeneratedSamples | None = None

    def configure_callbacks(self) -> list:
        """The default writer of the sample grids and generated files, unless the trainer
        already has one."""
        return self.default_callbacks(GANSampleWriter, JsonlPredictionWriter)

    # ------------------------------------------------------------------ parts

    @property
    def generator(self) -> nn.Module:
        return self.model.head

    def conditioning_modules(self) -> nn.ModuleList:
        """The encoders, fusion and context encoder (the condition's path)."""
        parts = [self.model.encoders, self.model.fusion]
        if getattr(self.model, "context_encoder", None) is not None:
            parts.append(self.model.context_encoder)
        return nn.ModuleList(parts)

    def _load_encoders(self, path: str) -> None:
        names = [f"encoders.{m}" for m in self.model.encoders] + ["fusion"]
        if getattr(self.model, "context_encoder", None) is not None:
            names.append("context_encoder")
        names = [n for n in names if self.model.get_submodule(n).state_dict()]  # parameter-free parts hold none
        load_submodules(self.model, path, names, caller="GANTask: init_encoders_from")

    def train(self, mode: bool = True) -> GANTask:
        super().train(mode)
        if self.freeze_encoders:
            self.conditioning_modules().eval()  # frozen: no dropout, no batch-norm updates
        return self

    def configure_optimizers(self):
        g_opt = self.optimizer_factory(self.generator.parameters())
        d_params = list(self.discriminator.parameters())
        if not self.freeze_encoders:
            d_params += [p for p in self.conditioning_modules().parameters() if p.requires_grad]
        return [g_opt, self.discriminator_optimizer_factory(d_params)]

    # ------------------------------------------------------------------ data → tensors

    def condition_inputs(self, batch: MultimodalBatch | dict[str, ModalityInput]) -> dict[str, ModalityInput]:
        """The batch inputs that condition the generator (those with an encoder)."""
        inputs = batch.inputs if isinstance(batch, MultimodalBatch) else batch
        return {m: inputs[m] for m in self.model.encoders if m in inputs}

    def encode(self, inputs: dict[str, ModalityInput]) -> ExtendedContext:
        """The extended context of the conditions. Shapes: → ExtendedContext (B, N, D)."""
        grad = torch.is_grad_enabled() and not self.freeze_encoders
        with torch.set_grad_enabled(grad):
            return self.model.encode(inputs)

    def real_samples(self, batch: MultimodalBatch) -> Tensor:
        """The batch's real samples in the generator's space.

        Shapes: images (B, 3, H_data, W_data) ImageNet-normalised → (B, C, H, W) in [-1, 1],
        resized to the generator's size; audio (B, S) → (B, 1, F, M) spectrograms.
        """
        if self.target not in batch.inputs:
            raise KeyError(
                f"GANTask: the batch has no {self.target!r} input to learn from (inputs: {list(batch.inputs)}); "
                f"add it to the data module's modalities"
            )
        item = batch.inputs[self.target]
        if self.target == "audio":
            return self.spectrogram.encode(item.data, item.mask)
        return self.images_to_generator_space(item.data)

    def images_to_generator_space(self, images: Tensor) -> Tensor:
        """Shapes: (B, 3, H, W) ImageNet-normalised → (B, C, H_G, W_G) in [-1, 1]."""
        mean = images.new_tensor(_IMAGENET_MEAN).view(1, 3, 1, 1)
        std = images.new_tensor(_IMAGENET_STD).view(1, 3, 1, 1)
        x = (images * std + mean) * 2.0 - 1.0  # (B, 3, H, W) in [-1, 1]
        C, H, W = self.generator.output_shape
        if x.shape[1] != C:
            x = x.mean(1, keepdim=True).expand(-1, C, -1, -1)  # grey, for a C != 3 generator
        if tuple(x.shape[-2:]) != (H, W):
            x = F.interpolate(x, size=(H, W), mode="area")
        return x.clamp(-1.0, 1.0)

    def noise(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Shapes: → (n, Z) standard normal noise on the task's device."""
        z = torch.randn(n, self.generator.z_dim, generator=generator)
        return z.to(self.device)

    @torch.no_grad()
    def generate(
        self,
        inputs: MultimodalBatch | dict[str, ModalityInput],
        num_samples: int = 1,
        z: Tensor | None = None,
        use_ema: bool = True,
    ) -> Tensor:
        """Samples for every condition of ``inputs`` (sample ``k`` of condition ``b`` is row
        ``b * num_samples + k``), with the EMA generator when there is one and ``use_ema``.

        Shapes: inputs of batch size B, z (B·num_samples, Z) or None → (B·num_samples, C, H, W)
        """
        context = self.encode(self.condition_inputs(inputs))
        B = context.x.shape[0]
        context = _repeat(context, num_samples)
        z = self.noise(B * num_samples) if z is None else z.to(self.device)
        generator = self.generator_ema.module if (use_ema and self.generator_ema is not None) else self.generator
        was_training = generator.training
        generator.eval()
        try:
            return generator(z, context)
        finally:
            generator.train(was_training)

    # ------------------------------------------------------------------ training

    def training_step(self, batch: MultimodalBatch, batch_idx: int) -> None:
        g_opt, d_opt = self.optimizers()
        if self.freeze_encoders:  # Lightning restores captured module modes around loops: re-assert
            self.conditioning_modules().eval()
        real = self.real_samples(batch)  # (B, C, H, W)
        B = real.shape[0]

        # discriminator (+ unfrozen encoders): real pairs up, generated pairs down
        context = self.encode(self.condition_inputs(batch))
        fixed_context = _detach(context)
        with torch.no_grad():
            fake = self.generator(self.noise(B), fixed_context)
        use_r1 = self.r1_gamma > 0 and self._d_steps % self.r1_every == 0
        real = real.detach().requires_grad_(use_r1)
        targets = self.word_targets(batch) if self.word_loss > 0 else None  # (B, V)
        multilabel = targets is not None and self.word_loss_kind == "multilabel"
        real_logits, real_words = self._discriminate(real, context, targets is not None)
        fake_logits, fake_words = self._discriminate(fake, context, multilabel)
        d_loss = discriminator_loss(real_logits, fake_logits, self.loss_kind)
        self.log("train/d_loss", d_loss, prog_bar=True, batch_size=B)
        if targets is not None:
            d_words = self.discriminator_word_loss(real_words, fake_words, targets)
            d_loss = d_loss + self.word_loss * d_words
            self.log("train/d_word_loss", d_words, batch_size=B)
        if use_r1:
            r1 = r1_penalty(real_logits, real)
            d_loss = d_loss + 0.5 * self.r1_gamma * self.r1_every * r1
            self.log("train/r1", r1, batch_size=B)
        d_opt.zero_grad(set_to_none=True)
        self.manual_backward(d_loss)
        self._clip(d_opt)
        d_opt.step()
        self._d_steps += 1
        self.log("train/d_real", real_logits.detach().mean(), batch_size=B)
        self.log("train/d_fake", fake_logits.detach().mean(), batch_size=B)

        # generator: fool the (momentarily fixed) discriminator
        if self._d_steps % self.n_critic == 0:
            with _no_grad_params(self.discriminator):
                g_context = fixed_context
                half = B // 2 if self.mode_seeking > 0 else 0
                g_targets = targets
                if half > 0:  # rows i and half + i share a condition, with different noise
                    g_context = _pairs(fixed_context, half)
                    g_targets = None if targets is None else torch.cat([targets[:half]] * 2)
                z = self.noise(g_context.x.shape[0])
                fake = self.generator(z, g_context)
                fake_logits, fake_words = self._discriminate(fake, g_context, g_targets is not None)
                g_loss = generator_loss(fake_logits, self.loss_kind)
                total = g_loss
                if g_targets is not None:
                    g_words = self.generator_word_loss(fake_words, g_targets)
                    total = total + self.word_loss * g_words
                    self.log("train/g_word_loss", g_words, batch_size=B)
                if half > 0:
                    ratio = (fake[:half] - fake[half:]).abs().flatten(1).mean(1) / (z[:half] - z[half:]).abs().mean(1)
                    total = total + self.mode_seeking / (ratio.mean() + 1e-5)
                    self.log("train/mode_seeking_ratio", ratio.mean().detach(), batch_size=B)
                g_opt.zero_grad(set_to_none=True)
                self.manual_backward(total)
            self._clip(g_opt)
            g_opt.step()
            if self.generator_ema is not None:
                self.generator_ema.update_parameters(self.generator)
            self.log("train/g_loss", g_loss, prog_bar=True, batch_size=B)

        # every sample_every_n_steps global steps GANSampleWriter writes sample_grid(batch)

    def _discriminate(self, x: Tensor, context: ExtendedContext, words: bool) -> tuple[Tensor, Tensor | None]:
        """The discriminator's logits (B,) of ``x`` (augmented by :attr:`discriminator_augment` if set),
        and its word logits (B, V) when ``words``, else None."""
        if self.discriminator_augment is not None:
            x = self.discriminator_augment(x)
        if words:
            return self.discriminator(x, context, return_words=True)
        return self.discriminator(x, context), None

    def discriminator_word_loss(self, real_words: Tensor, fake_words: Tensor | None, targets: Tensor) -> Tensor:
        """The word head's loss (before the ``word_loss`` weight): classification of the real
        samples' words, or with ``word_loss_kind="multilabel"`` the multi-label loss of the
        real samples (their words) plus that of the generated ones (no word).

        Shapes: real_words (B, V), fake_words (B', V) (needed for "multilabel"), targets (B, V) → scalar
        """
        if self.word_loss_kind == "classification":
            return word_classification_loss(real_words, targets)
        if fake_words is None:
            raise ValueError("GANTask: the multilabel word loss needs the generated samples' word logits")
        none = torch.zeros(fake_words.shape, dtype=torch.bool, device=fake_words.device)
        return word_multilabel_loss(real_words, targets > 0) + word_multilabel_loss(fake_words, none)

    def generator_word_loss(self, fake_words: Tensor, targets: Tensor) -> Tensor:
        """The generator's word loss (before the weight): its samples should be named as their
        own condition's words. Shapes: fake_words (B, V), targets (B, V) → scalar"""
        if self.word_loss_kind == "classification":
            return word_classification_loss(fake_words, targets)
        return word_multilabel_loss(fake_words, targets > 0)

    def word_targets(self, batch: MultimodalBatch) -> Tensor:
        """The bag of words of each sample's text condition. Shapes: → (B, V)."""
        text = batch.inputs["text"]
        implied = self.implied_matrix() if self.implied_words else None
        return word_targets(text.data, text.mask, self.discriminator.vocab_size, implied)

    def implied_matrix(self) -> Tensor:
        """``implied_words`` as a (V, V) 0/1 matrix (row: the word, columns: the words it adds),
        from :attr:`tokenizer` (the data module's). Shapes: → (V, V)"""
        if self._implied is None:
            if self.tokenizer is None:
                raise ValueError("GANTask: implied_words needs the data's tokenizer (a data module with one)")
            V = self.discriminator.vocab_size
            implied = torch.zeros(V, V)

            def one_id(word: str) -> int:
                ids = self.tokenizer.encode(word)
                if len(ids) != 1 or not 0 <= ids[0] < V or ids[0] == self.tokenizer.unk_id:
                    raise ValueError(f"GANTask: implied_words: {word!r} is not one token of the vocabulary (ids {ids})")
                return ids[0]

            for word, added in self.implied_words.items():
                for other in added:
                    implied[one_id(word), one_id(other)] = 1.0
            self._implied = implied
        return self._implied.to(self.device)

    def _clip(self, optimizer) -> None:
        if self.gradient_clip_val > 0:
            self.clip_gradients(optimizer, gradient_clip_val=self.gradient_clip_val, gradient_clip_algorithm="norm")

    def on_fit_start(self) -> None:
        self.tokenizer = getattr(self.trainer.datamodule, "tokenizer", None) if self.trainer.datamodule else None

    # ------------------------------------------------------------------ sample grids

    def _fixed_conditions(self, batch: MultimodalBatch | None) -> tuple[dict[str, ModalityInput], Tensor, list[str]]:
        """The grid's conditions, fixed noise and row descriptions (built once)."""
        if self._fixed is None:
            source = None
            datamodule = self.trainer.datamodule if self.trainer is not None else None
            if datamodule is not None and hasattr(datamodule, "val_dataloader"):
                loader = datamodule.val_dataloader()
                if loader:
                    source = next(iter(loader))
            if source is None:
                if batch is None:
                    raise RuntimeError("GANTask: no batch to take the sample grid's conditions from")
                source = batch
            n = min(self.num_sample_conditions, len(source))
            inputs = {m: ModalityInput(v.data[:n], v.mask[:n]) for m, v in self.condition_inputs(source).items()}
            inputs = {m: v.to(self.device) for m, v in inputs.items()}
            seeded = torch.Generator().manual_seed(self.sample_seed)
            z = torch.randn(n * self.samples_per_condition, self.generator.z_dim, generator=seeded)
            self._fixed = (inputs, z, self.describe(source)[:n])
        inputs, z, names = self._fixed
        return {m: v.to(self.device) for m, v in inputs.items()}, z.to(self.device), names

    def describe(self, batch: MultimodalBatch) -> list[str]:
        """One line per sample saying what its condition is (text decoded when possible)."""
        ids = list(batch.ids) or [str(i) for i in range(len(batch))]
        lines = []
        for i, sample_id in enumerate(ids):
            parts = [sample_id]
            text = batch.inputs.get("text")
            if text is not None and "text" in self.model.encoders and self.tokenizer is not None:
                tokens = text.data[i][text.mask[i]].tolist()
                parts.append(repr(self.tokenizer.decode(tokens).strip()))
            for m in self.model.encoders:
                if m != "text" and m in batch.inputs:
                    parts.append(f"<{m}>")
            lines.append(" ".join(parts))
        return lines

    @torch.no_grad()
    def sample_grid(self, batch: MultimodalBatch | None, name: str | None = None) -> SampleGrid | None:
        """The fixed-noise grid, one row per fixed condition (taken once from the first
        validation batch, else from ``batch``); None when there is nowhere to take the
        conditions from. Written by :class:`~mmctx.trainers.GANSampleWriter`."""
        if batch is None and self._fixed is None and self.trainer.datamodule is None:
            return None
        inputs, z, names = self._fixed_conditions(batch)
        samples = self.generate(inputs, self.samples_per_condition, z=z)  # (n·k, C, H, W)
        return SampleGrid(self.to_pictures(samples), names, self.samples_per_condition,
                          name or f"step_{self.global_step:06d}", self.global_step)

    def to_pictures(self, samples: Tensor) -> Tensor:
        """Generator outputs as pictures in [0, 1]: images as they are, spectrograms turned
        so time runs to the right and low frequencies sit at the bottom.

        Shapes: (B, C, H, W) in [-1, 1] → (B, C, H, W), or spectrograms (B, 1, F, M) → (B, 1, M, F)
        """
        pictures = (samples.float().clamp(-1, 1) + 1.0) / 2.0
        if self.target == "audio":
            pictures = pictures.transpose(-1, -2).flip(-2)  # (B, 1, M, F)
        return pictures

    # ------------------------------------------------------------------ predict

    def on_predict_start(self) -> None:
        if self.trainer.datamodule is not None:
            self.tokenizer = getattr(self.trainer.datamodule, "tokenizer", None)

    def predict_step(self, batch: MultimodalBatch, batch_idx: int) -> list[dict]:
        """``num_predict_samples`` samples per input, kept in :attr:`generated` (written by
        :class:`~mmctx.trainers.GANSampleWriter`); returns ``{"input", "condition", "files"}``
        rows naming the files."""
        k = self.num_predict_samples
        seeded = torch.Generator().manual_seed(self.sample_seed + batch_idx)
        z = torch.randn(len(batch) * k, self.generator.z_dim, generator=seeded)
        samples = self.generate(batch, k, z=z)  # (B·k, C, H, W)
        pictures = self.to_pictures(samples).cpu()
        waves = self.spectrogram.decode(samples).cpu() if self.target == "audio" else None
        folder = Path(self.predict_dir) if self.predict_dir else self.output_dir / "generated"
        names = self.describe(batch)
        ids = list(batch.ids) or [f"{batch_idx}-{i}" for i in range(len(batch))]
        stems = [folder / f"{_safe(sample_id)}_{j}" for sample_id in ids for j in range(k)]  # (B·k,)
        suffixes = (".png", ".wav") if waves is not None else (".png",)
        rows = [
            {"input": sample_id, "condition": names[i],
             "files": [str(stem.with_suffix(s)) for stem in stems[i * k : (i + 1) * k] for s in suffixes]}
            for i, sample_id in enumerate(ids)
        ]
        self.generated = GeneratedSamples(pictures, waves, stems, getattr(self.spectrogram, "sample_rate", None))
        return rows


def _ema(averaged: Tensor, current: Tensor, num_averaged: Tensor, decay: float) -> Tensor:
    """One EMA update with warm-up: the decay is ``min(decay, (1 + n) / (10 + n))`` after
    ``n`` updates, so a short run's average is not dominated by the initial weights."""
    d = min(decay, (1.0 + float(num_averaged)) / (10.0 + float(num_averaged)))
    return averaged * d + current * (1.0 - d)


def _repeat(context: ExtendedContext, k: int) -> ExtendedContext:
    """Each sample's context ``k`` times in a row. Shapes: (B, N, D) → (B·k, N, D)."""
    if k == 1:
        return context
    return ExtendedContext(
        context.x.repeat_interleave(k, 0),
        context.mask.repeat_interleave(k, 0),
        context.modality.repeat_interleave(k, 0),
        context.names,
    )


def _pairs(context: ExtendedContext, half: int) -> ExtendedContext:
    """The first ``half`` samples' contexts, twice. Shapes: (B, N, D) → (2·half, N, D)."""
    return ExtendedContext(
        torch.cat([context.x[:half]] * 2),
        torch.cat([context.mask[:half]] * 2),
        torch.cat([context.modality[:half]] * 2),
        context.names,
    )


def _detach(context: ExtendedContext) -> ExtendedContext:
    return ExtendedContext(context.x.detach(), context.mask, context.modality, context.names)


@contextlib.contextmanager
def _no_grad_params(module: nn.Module):
    """Gradients flow *through* ``module`` but are not accumulated into its parameters."""
    flags = [(p, p.requires_grad) for p in module.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:100] or "sample"

