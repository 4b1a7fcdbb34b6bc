"""Every Lightning data module of mmctx (the only module of :mod:`mmctx.data` that imports
Lightning).

- over the user's data: :class:`MultimodalDataModule` (JSONL manifests, see
  :mod:`mmctx.data.manifest`) and :class:`CocoCaptionDataModule` (COCO-style caption files,
  see :mod:`mmctx.data.coco`);
- over shards (litdata chunks, local or in an object store, see :mod:`mmctx.data.shards`):
  :class:`StreamingDataModule`, and :class:`DefaultStreamingDataModule` (the default data
  converted to shards on first use);
- over the built-in generated data sets (:mod:`mmctx.data.builtin`), generated on first use:
  :class:`DefaultDataModule` (the pictogram scenes) and :class:`LongRangeDataModule` (the
  long-range retrieval task).

``num_classes``, ``vocab_size``, ``pad_id`` and ``classes`` are known right after
``__init__`` (without building the data sets), so LightningCLI can link them into the model
with ``link_arguments(..., apply_on="instantiate")``.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import logging
from pathlib import Path
from typing import Any, Literal

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset, Subset

from mmctx.data.augment import Augmentation, AugmentedDataset
from mmctx.data.builtin.asset_pack import default_tokenizer_path
from mmctx.data.builtin.long_range import (
    LONG_RANGE_CLASSES,
    LONG_RANGE_COLOURS,
    ensure_long_range_dataset,
    long_range_data_root,
    long_range_params,
    long_range_tokenizer,
)
from mmctx.data.builtin.scenes import DEFAULT_CLASSES, default_data_root, ensure_default_dataset
from mmctx.data.coco import CocoCaptionCollate, CocoCaptionDataset, read_coco_captions
from mmctx.data.collate import MultimodalCollate
from mmctx.data.loaders import EpochDataLoader
from mmctx.data.manifest import (
    ManifestDataset,
    ManifestError,
    _sorted_labels,
    check_bad_input_policy,
    read_manifest_labels,
    read_manifest_texts,
)
from mmctx.data.sample_transform import normalize_preprocessing
from mmctx.data.samplers import GlobalBatchSampler
from mmctx.data.tokenization import (
    TextTokenizer,
    TokenizerTraining,
    resolve_tokenizer,
    unknown_token_rate,
)
from mmctx.data.tokenization import (
    train_tokenizer as train_tokenizer_on,
)

__all__ = [
    "CocoCaptionDataModule",
    "DefaultDataModule",
    "GeneratedDataMixin",
    "InferenceStateMixin",
    "LongRangeDataModule",
    "MultimodalDataModule",
    "SpokenLongDataModule",
    "SplitLoadersMixin",
    "StreamingDataModule",
    "DefaultStreamingDataModule",
    "TokenizerChoiceMixin",
    "TokenizerSizesMixin",
]

log = logging.getLogger(__name__)

#: What a data module's ``tokenizer`` may name besides paths, JSON and hub ids: the asset
#: pack's 92-word vocabulary (the demo data's).
BUILTIN_TOKENIZER = "builtin"

_STAGES = ("train", "val", "test", "predict")
#: ``check_files=None`` checks the files up front when the splits to check have at most this
#: many rows together (about 0.4 ms a row for small media, tens of ms for large photos).
CHECK_FILES_MAX_ROWS = 10_000
_STAGE_SPLIT = {"fit": "train", "validate": "val", "test": "test", "predict": "predict"}


class SplitLoadersMixin:
    """The DataLoader plumbing shared by mmctx's data modules.

    A data module provides ``_dataset(split)``, ``_collate()``, ``_has_split(split)`` and the
    attributes ``batch_size``, ``num_workers`` and ``seed``; this gives it the four
    ``*_dataloader`` hooks. Training is shuffled by a
    :class:`~mmctx.data.samplers.GlobalBatchSampler`: the order of each epoch depends on
    ``(seed, epoch)`` only, so a resumed run sees the batches an uninterrupted one sees, and
    under DDP every process takes its block of the same global batches a single process of
    ``W ×`` the batch size would see. Optional attributes ``augment`` (an
    :class:`~mmctx.data.augment.Augmentation`) and ``label_fraction`` change the training
    split only.
    """

    def _training_view(self, dataset: Dataset) -> Dataset:
        """The training data as the loader sees it: augmented, then cut to
        ``label_fraction`` of its samples (a seeded random subset, the same in every run)."""
        augment: Augmentation | None = getattr(self, "augment", None)
        if augment is not None and augment.active:
            dataset = AugmentedDataset(dataset, augment)
        fraction = getattr(self, "label_fraction", 1.0)
        if fraction < 1.0:
            count = max(1, round(fraction * len(dataset)))
            order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(self.seed))
            dataset = Subset(dataset, sorted(order[:count].tolist()))
        return dataset

    def _loader(self, split: str) -> DataLoader:
        dataset = self._dataset(split)
        if split == "train":
            dataset = self._training_view(dataset)
        augmented = isinstance(dataset, AugmentedDataset) or isinstance(getattr(dataset, "dataset", None), AugmentedDataset)
        loader_class = EpochDataLoader if augmented else DataLoader  # it advances the augmentation's epoch
        # training: the order is a function of (seed, epoch) and the global batches do not
        # depend on the number of DDP processes (see GlobalBatchSampler)
        sampler = self._train_sampler(dataset) if split == "train" else None
        return loader_class(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
            collate_fn=self._collate(),
        )

    def _train_sampler(self, dataset: Dataset) -> GlobalBatchSampler:
        """The training order (seeded; see :class:`~mmctx.data.samplers.GlobalBatchSampler`)."""
        return GlobalBatchSampler(len(dataset), self.batch_size, seed=self.seed)

    def train_dataloader(self) -> DataLoader:
        """Shuffled training batches (seeded)."""
        return self._loader("train")

    def val_dataloader(self) -> DataLoader | list:
        """Validation batches, or ``[]`` (no validation) without a validation split."""
        return self._loader("val") if self._has_split("val") else []

    def test_dataloader(self) -> DataLoader:
        """Test batches."""
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        """Prediction batches."""
        return self._loader("predict")


class TokenizerSizesMixin:
    """The sizes a data module's ``tokenizer`` knows, as the properties the ``mmctx`` CLI
    fills into the model (``vocab_size`` and the special-token ids); None without a
    tokenizer (data with no text)."""

    tokenizer: TextTokenizer | None

    @property
    def vocab_size(self) -> int | None:
        """Tokenizer vocabulary size (V)."""
        return self.tokenizer.vocab_size if self.tokenizer is not None else None

    @property
    def pad_id(self) -> int | None:
        """Tokenizer padding id."""
        return self.tokenizer.pad_id if self.tokenizer is not None else None

    @property
    def bos_id(self) -> int | None:
        """Tokenizer begin-of-sequence id (for text decoders)."""
        return self.tokenizer.bos_id if self.tokenizer is not None else None

    @property
    def eos_id(self) -> int | None:
        """Tokenizer end-of-sequence id (for text decoders)."""
        return self.tokenizer.eos_id if self.tokenizer is not None else None


class TokenizerChoiceMixin:
    """A tokenizer that fits the data: chosen (``tokenizer``), or trained on the training
    split (``train_tokenizer``), then checked on the training texts (``max_unk_rate``,
    ``unk_policy``). A trained tokenizer is saved in the run folder when fitting starts."""

    tokenizer: TextTokenizer | None
    #: Whether :attr:`tokenizer` was trained here (saved into the run folder by ``setup``).
    tokenizer_trained: bool = False
    #: The training texts' unknown-token rate, once measured.
    unk_rate: float | None = None

    def _choose_tokenizer(
        self,
        tokenizer: str | None,
        train_tokenizer: TokenizerTraining | dict | None,
        training_texts: Any,
        default: TextTokenizer | None,
        needed: bool,
    ) -> TextTokenizer | None:
        """The tokenizer of ``tokenizer`` (see :func:`~mmctx.data.tokenization.resolve_tokenizer`,
        or ``"builtin"``), else one trained as ``train_tokenizer`` says on
        ``training_texts()``, else ``default``; an error when text is ``needed`` and none is."""
        name = type(self).__name__
        if tokenizer is not None and train_tokenizer is not None:
            raise ValueError(f"{name}: give tokenizer or train_tokenizer, not both (tokenizer={tokenizer!r})")
        if tokenizer is not None:
            if tokenizer == BUILTIN_TOKENIZER:
                return resolve_tokenizer(str(default_tokenizer_path()))
            return resolve_tokenizer(tokenizer)
        if train_tokenizer is not None:
            training = TokenizerTraining(**train_tokenizer) if isinstance(train_tokenizer, dict) else train_tokenizer
            texts = training_texts()
            if not texts:
                raise ValueError(f"{name}: train_tokenizer needs training texts, and the training split has none")
            trained = train_tokenizer_on(texts, training)
            self.tokenizer_trained = True
            log.info("%s: trained %r on %d training texts", name, trained, len(texts))
            return trained
        if default is None and needed:
            raise ValueError(
                f"{name}: this data has text but no tokenizer is chosen. Choose one that fits it:\n"
                "  tokenizer: <a pretrained one: the text tower's own hub id or folder, e.g. "
                "bert-base-uncased, or a tokenizer.json>\n"
                "  train_tokenizer: {kind: word}   (or {kind: bpe, vocab_size: 8000}: trained on the training "
                "split, saved in the run folder)\n"
                "  tokenizer: builtin   (the demo's 92-word vocabulary: only for the demo's own data)"
            )
        return default

    def _check_unknown_rate(self, texts: list[str], where: str, max_unk_rate: float, unk_policy: str) -> None:
        """Measure the unknown-token rate of the training texts; above ``max_unk_rate`` it is
        an error (``unk_policy="raise"``) or a warning (``"warn"``)."""
        if self.tokenizer is None or not texts:
            return
        rate, total = unknown_token_rate(self.tokenizer, texts)
        self.unk_rate = rate
        if rate <= max_unk_rate:
            return
        message = (
            f"{where}: {rate:.1%} of the {total} training text tokens are unknown to the tokenizer "
            f"{self.tokenizer.source} (unk id {self.tokenizer.unk_id}; max_unk_rate={max_unk_rate}): its vocabulary "
            "does not fit this data. Train one on the training split (train_tokenizer: {kind: word}, or "
            "{kind: bpe, vocab_size: 8000}) or use the text tower's own (tokenizer: <hub id or folder>); "
            "unk_policy: warn trains anyway"
        )
        if unk_policy == "warn":
            log.warning(message)
        else:
            raise ValueError(message)

    def _save_trained_tokenizer(self) -> None:
        """Save a tokenizer trained here as ``<run folder>/tokenizer/`` (rank 0, when fitting)."""
        trainer = getattr(self, "trainer", None)
        if not self.tokenizer_trained or self.tokenizer is None or trainer is None:
            return
        log_dir = getattr(trainer, "log_dir", None)
        if log_dir is None or not trainer.is_global_zero:
            return
        path = self.tokenizer.save(Path(log_dir) / "tokenizer")
        print(f"tokenizer trained on the training split saved to {path} (reuse it with --data.tokenizer={path})", flush=True)


class InferenceStateMixin:
    """``inference_state()``: what inference needs to preprocess inputs as this data module
    does (see :class:`~mmctx.data.inference.InputEncoder`). A data module lists the
    attributes that shape a sample in ``_inference_args``; only those its constructor takes
    are written into ``init_args`` (so ``init_args`` rebuild the same class)."""

    _inference_args: tuple[str, ...] = ()

    def inference_state(self) -> dict[str, Any]:
        """Everything inference needs, JSON-able; valid once the tokenizer and classes are
        resolved (after ``__init__`` for the tokenizer, after ``setup()`` for classes found
        in the data)::

            {"class_path": "mmctx.data.MultimodalDataModule",
             "init_args": {"modalities": [...], "image_size": 64, "preprocessing": null, ...},
             "tokenizer_json": "<tokenizers JSON>" or null,
             "tokenizer_specials": {"pad": 0, "unk": 1, "bos": 2, "eos": 3, "mask": null} or null,
             "classes": [...] or null,
             "modalities": [...]}

        ``init_args`` holds the constructor arguments that shape a sample (sizes, rates,
        lengths, fields, the image ``preprocessing``); ``tokenizer_json`` and ``classes`` are
        the values of the ``tokenizer`` and ``classes`` arguments that rebuild the same data.
        """
        accepted = inspect.signature(type(self).__init__).parameters
        init_args = {name: _plain(getattr(self, name)) for name in self._inference_args if name in accepted}
        tokenizer: TextTokenizer | None = getattr(self, "tokenizer", None)
        classes = self._inference_classes()
        return {
            "class_path": _public_class_path(type(self)),
            "init_args": init_args,
            "modalities": list(getattr(self, "modalities", [])),
            "tokenizer_json": tokenizer.to_json() if tokenizer is not None else None,
            "tokenizer_specials": tokenizer.specials if tokenizer is not None else None,
            "classes": list(classes) if classes is not None else None,
        }

    def _inference_classes(self) -> list[str] | None:
        return None


class MultimodalDataModule(
    InferenceStateMixin, TokenizerChoiceMixin, TokenizerSizesMixin, SplitLoadersMixin, LightningDataModule
):
    """Train/val/test/predict data from JSONL manifests (see :class:`ManifestDataset`).

    Batches are :class:`~mmctx.types.MultimodalBatch` (see
    :func:`~mmctx.data.collate.collate_multimodal` for shapes and masks).

    Args:
        train_manifest: JSONL manifest of the training split.
        val_manifest: JSONL manifest of the validation split (optional).
        test_manifest: JSONL manifest of the test split (optional).
        predict_manifest: JSONL manifest for ``predict`` (optional).
        modalities: which of "text", "image", "audio" to load.
        tokenizer: the tokenizer of the text (needed when "text" is loaded or
            ``caption_field`` is set): a pretrained one — any ``AutoTokenizer`` hub id or
            folder, e.g. the text tower's own — a ``tokenizer.json``, a ``tokenizers`` JSON
            string, or ``"builtin"`` (the demo's 92-word vocabulary, for the demo's data
            only). ``None`` with ``train_tokenizer``: trained on the training split.
        train_tokenizer: train the tokenizer on the training split's texts (text and
            captions), e.g. ``{kind: word}`` or ``{kind: bpe, vocab_size: 8000}`` (see
            :class:`~mmctx.data.tokenization.TokenizerTraining`); saved as
            ``tokenizer/tokenizer.json`` in the run folder when fitting starts.
        max_unk_rate: the training split's fraction of unknown tokens allowed; above it
            the tokenizer does not fit the data: an error (or a warning with
            ``unk_policy="warn"``) that says the rate and the fix.
        unk_policy: "raise" or "warn" (see ``max_unk_rate``).
        check_files: decode every file of every split in ``setup``, before training starts,
            so a bad PNG or WAV fails in the first seconds with manifest, line, field and
            reason (with ``on_error="raise"``; ``"skip"`` checks the files anyway). ``None``:
            on when the splits have at most :data:`CHECK_FILES_MAX_ROWS` rows together.
        classes: class names, index = class id. ``None``: ``classes.json`` beside the
            train manifest (the first manifest given, when there is no train manifest) if
            present, else the sorted unique labels of the train manifest, read when first
            needed (e.g. by ``num_classes``): then a label of another split that the
            training split lacks is an error, and so is a data module with no train
            manifest, unless ``labels_from_data``.
        labels_from_data: with no class list, the classes are the sorted labels of every
            split (a label of a validation/test split that training lacks becomes a class
            with no training sample, logged), or, with no train manifest, of the first
            manifest given.
        batch_size: samples per batch.
        num_workers: DataLoader worker processes (persistent when > 0).
        image_size: side of the square images fed to the model, in pixels (default recipe:
            squash-resize, ImageNet mean/std).
        preprocessing: the image preprocessing of a pretrained image tower, as its
            ``.preprocessing`` reports it (``image_size``, ``mean``, ``std``,
            ``interpolation``, ``crop_pct``, ``crop_mode``; see
            :mod:`mmctx.data.sample_transform`), used for training, evaluation and
            inference alike instead of the default recipe; ``image_size`` is then unused.
        sample_rate: audio sample rate fed to the model, in Hz.
        max_audio_seconds: longer audio is truncated (logged once).
        max_text_len: longer token sequences are truncated (logged once).
        seed: seed of the training shuffle.
        label_field: manifest field of the class label; ``None`` loads no labels.
        text_field: manifest field of the text input.
        image_field: manifest field of the image path.
        audio_field: manifest field of the audio path.
        caption_field: manifest field of a target text to generate (e.g. "caption"),
            batched as ``targets["caption"]``; ``None`` loads none.
        augment: training-time augmentation (see :mod:`mmctx.data.augment`); the
            validation, test and predict data are never augmented.
        label_fraction: train on this fraction of the training samples (a seeded random
            subset), e.g. 0.1 for a 10 %-of-the-labels experiment.
        on_error: what a bad manifest row or file does (see :class:`ManifestDataset`):
            ``"raise"`` fails naming file, line, field and reason; ``"skip"`` drops the row
            (every file is decoded once when the split is built, to find bad content up
            front), counts the drops per reason and logs them in one warning per split.
        max_bad_fraction: with ``on_error="skip"``, a split with more than this fraction
            of bad rows is an error.
        min_image_size: smallest allowed image side, in pixels (smaller images are bad
            rows; 1 allows any size).
        max_image_pixels: largest allowed image width x height, checked from the file
            header before decoding.
    """

    #: Subclasses whose ``__init__`` takes other arguments set this False and call
    #: ``save_hyperparameters()`` themselves, so ``hparams`` rebuild the subclass.
    _save_base_hparams: bool = True
    #: Measure the training texts' unknown-token rate (the built-in data sets are written in
    #: their own vocabulary and skip it).
    _measure_unk_rate: bool = True
    #: ``check_files=None`` checks small data sets (the built-in ones are generated valid).
    _auto_check_files: bool = True
    _inference_args = (
        "modalities", "image_size", "preprocessing", "sample_rate", "max_audio_seconds", "max_text_len",
        "label_field", "text_field", "image_field", "audio_field", "caption_field", "min_image_size",
        "max_image_pixels",
    )

    def __init__(
        self,
        train_manifest: str | None = None,
        val_manifest: str | None = None,
        test_manifest: str | None = None,
        predict_manifest: str | None = None,
        modalities: list[str] = ["image", "audio"],  # noqa: B006 - never mutated; shown by the CLI
        tokenizer: str | None = None,
        train_tokenizer: TokenizerTraining | None = None,
        max_unk_rate: float = 0.05,
        unk_policy: Literal["raise", "warn"] = "raise",
        check_files: bool | None = None,
        classes: list[str] | None = None,
        labels_from_data: bool = False,
        batch_size: int = 64,
        num_workers: int = 2,
        image_size: int = 64,
        preprocessing: dict[str, Any] | None = None,
        sample_rate: int = 16000,
        max_audio_seconds: float = 10.0,
        max_text_len: int = 64,
        seed: int = 0,
        label_field: str | None = "label",
        text_field: str = "text",
        image_field: str = "image",
        audio_field: str = "audio",
        caption_field: str | None = None,
        augment: Augmentation | None = None,
        label_fraction: float = 1.0,
        on_error: Literal["raise", "skip"] = "raise",
        max_bad_fraction: float = 0.05,
        min_image_size: int = 8,
        max_image_pixels: int = 50_000_000,
    ) -> None:
        super().__init__()
        if self._save_base_hparams:
            self.save_hyperparameters()
            _hparams_plain(self.hparams)
        if not 0.0 < label_fraction <= 1.0:
            raise ValueError(f"label_fraction must be in (0, 1], got {label_fraction}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        check_bad_input_policy(on_error, max_bad_fraction)
        self.manifests: dict[str, Path | None] = {
            "train": Path(train_manifest) if train_manifest else None,
            "val": Path(val_manifest) if val_manifest else None,
            "test": Path(test_manifest) if test_manifest else None,
            "predict": Path(predict_manifest) if predict_manifest else None,
        }
        if unk_policy not in ("raise", "warn") or not 0.0 <= max_unk_rate <= 1.0:
            raise ValueError(f"unk_policy must be 'raise' or 'warn' and max_unk_rate in [0, 1], got {unk_policy!r}, {max_unk_rate}")
        self.modalities = list(modalities)
        self.text_field = text_field
        self.caption_field = caption_field
        self.max_unk_rate = max_unk_rate
        self.unk_policy = unk_policy
        self.check_files = check_files
        self._checked: set[str] = set()
        self.tokenizer_path = tokenizer
        self.tokenizer: TextTokenizer | None = self._choose_tokenizer(
            tokenizer, train_tokenizer, self._training_texts, self._default_tokenizer(), needed=bool(self._text_fields())
        )
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.image_size = image_size
        self.preprocessing = normalize_preprocessing(preprocessing)
        self.sample_rate = sample_rate
        self.max_audio_seconds = max_audio_seconds
        self.max_text_len = max_text_len
        self.seed = seed
        self.label_field = label_field
        self.image_field = image_field
        self.audio_field = audio_field
        self.augment = augment
        self.label_fraction = label_fraction
        self.on_error = on_error
        self.max_bad_fraction = max_bad_fraction
        self.min_image_size = min_image_size
        self.max_image_pixels = max_image_pixels
        self._classes: list[str] | None = list(classes) if classes is not None else None
        self.labels_from_data = labels_from_data
        self.datasets: dict[str, ManifestDataset] = {}

    # ------------------------------------------------------------------ sizes for the model

    @property
    def classes(self) -> list[str]:
        """Class names, index = class id (resolved on first use, without building data sets)."""
        if self._classes is None:
            self._classes = self._resolve_classes()
        return self._classes

    @property
    def num_classes(self) -> int:
        """Number of classes (K)."""
        return len(self.classes)

    def _inference_classes(self) -> list[str] | None:
        return list(self.classes) if self.label_field is not None else None

    # ------------------------------------------------------------------ tokenizer

    def _default_tokenizer(self) -> TextTokenizer | None:
        """The tokenizer when none is chosen: none for the user's manifests (the built-in
        data modules have their own vocabulary)."""
        return None

    def _text_fields(self) -> list[str]:
        """The manifest fields that are tokenized."""
        fields = [self.text_field] if "text" in self.modalities else []
        return fields + ([self.caption_field] if self.caption_field is not None else [])

    def _training_texts(self) -> list[str]:
        """The texts of the training manifest's tokenized fields (read without validating the
        rows: that happens when the data set is built)."""
        manifest = self.manifests["train"]
        if manifest is None:
            raise ValueError(f"{type(self).__name__}: train_tokenizer needs train_manifest")
        return read_manifest_texts(manifest, self._text_fields())

    def _resolve_classes(self) -> list[str]:
        if self.label_field is None:
            return []
        given = [p for p in (self.manifests[s] for s in _STAGES) if p is not None]
        if not given:
            raise ValueError("no manifest given: cannot find the classes; pass classes=[...]")
        manifest = self.manifests["train"] or given[0]
        classes_file = manifest.parent / "classes.json"
        if classes_file.is_file():
            return _read_classes_file(classes_file)
        if self.manifests["train"] is None and not self.labels_from_data:
            raise ManifestError(
                f"{type(self).__name__}: no class list and no train_manifest: the classes of a model come from its "
                f"training data. Pass classes: [...] (or write classes.json beside {manifest.name}; `mmctx test` / "
                "`predict` with a checkpoint restore them), or labels_from_data: true to use the sorted labels of "
                f"{manifest.name}",
                kind="no classes",
            )
        # the labels of the rows kept (with on_error="skip", after the file check): the data
        # set is built once, here, and reused by setup()
        split = next(s for s in _STAGES if self.manifests[s] == manifest)
        dataset = self._build_dataset(manifest, classes=None)
        self.datasets.setdefault(split, dataset)
        classes = list(dataset.classes)
        others = [s for s in _STAGES if self.manifests[s] is not None and self.manifests[s] != manifest]
        if self.labels_from_data:
            extra: dict[str, str] = {}
            for other in others:
                for label in read_manifest_labels(self.manifests[other], self.label_field):
                    if label not in classes and label not in extra:
                        extra[label] = other
            if extra:
                log.warning("%s: labels_from_data: classes with no %s sample (from %s): %s", type(self).__name__,
                            split, sorted(set(extra.values())), sorted(extra))
                classes = _sorted_labels(set(classes) | set(extra))
                del self.datasets[split]  # its label indices follow its own labels: rebuilt with these classes
            return classes
        for other in others:
            labels = read_manifest_labels(self.manifests[other], self.label_field)
            unseen = {label: line for label, line in labels.items() if label not in classes}
            if unseen:
                label, line = min(unseen.items(), key=lambda item: item[1])
                raise ManifestError(
                    f"{self.manifests[other]}:{line}: field '{self.label_field}': label {label!r} is not among the "
                    f"training labels {classes} (no class list given, so the classes are the sorted labels of "
                    f"{manifest.name}; {len(unseen)} such label(s): {sorted(unseen)[:10]}). Pass classes: [...] (or "
                    "classes.json beside the train manifest) listing every class, or labels_from_data: true to make "
                    "every split's labels classes",
                    kind="unknown label",
                    line=line,
                    field=self.label_field,
                )
        return classes

    # ------------------------------------------------------------------ data sets

    def _dataset(self, split: str) -> ManifestDataset:
        if split not in self.datasets:
            manifest = self.manifests[split]
            if manifest is None:
                raise ValueError(f"{split}_manifest is not set: cannot build the {split} data")
            classes = self.classes  # may build this very split (see _resolve_classes)
            if split not in self.datasets:
                self.datasets[split] = self._build_dataset(manifest, classes)
        return self.datasets[split]

    def _build_dataset(self, manifest: Path, classes: list[str] | None) -> ManifestDataset:
        dataset = self._new_dataset(manifest, classes)
        if self._measure_unk_rate and manifest == self.manifests["train"] and self.unk_rate is None:
            texts = [t for row in dataset.rows for t in (row.text, row.caption) if t is not None]
            self._check_unknown_rate(texts, str(manifest), self.max_unk_rate, self.unk_policy)
        return dataset

    def _new_dataset(self, manifest: Path, classes: list[str] | None) -> ManifestDataset:
        return ManifestDataset(
            manifest,
            self.modalities,
            tokenizer=self.tokenizer,
            classes=classes,
            label_field=self.label_field,
            image_size=self.image_size,
            preprocessing=self.preprocessing,
            sample_rate=self.sample_rate,
            max_audio_seconds=self.max_audio_seconds,
            max_text_len=self.max_text_len,
            text_field=self.text_field,
            image_field=self.image_field,
            audio_field=self.audio_field,
            caption_field=self.caption_field,
            on_error=self.on_error,
            max_bad_fraction=self.max_bad_fraction,
            min_image_size=self.min_image_size,
            max_image_pixels=self.max_image_pixels,
        )

    def setup(self, stage: str | None = None) -> None:
        """Build (and validate) the data sets the stage needs.

        ``"fit"`` needs the train manifest (and uses the val manifest when set),
        ``"validate"``/``"test"``/``"predict"`` need theirs; ``None`` builds every split set.
        """
        if stage is None:
            splits = [s for s in _STAGES if self.manifests[s] is not None]
        elif stage in _STAGE_SPLIT:
            splits = [_STAGE_SPLIT[stage]]
            if stage == "fit" and self.manifests["val"] is not None:
                splits.append("val")
        else:
            raise ValueError(f"unknown stage {stage!r} (expected one of {list(_STAGE_SPLIT)})")
        for split in splits:
            self._dataset(split)
        # before training: every split (a bad test file must not wait for the end of training)
        self._check_split_files([s for s in _STAGES if self.manifests[s] is not None] if stage in (None, "fit") else splits)
        if stage in (None, "fit"):
            self._save_trained_tokenizer()

    def _check_split_files(self, splits: list[str]) -> None:
        """Decode the files of ``splits`` once (see ``check_files``)."""
        todo = [s for s in splits if s not in self._checked]
        if not todo or self.check_files is False or self.on_error == "skip":
            return
        datasets = [self._dataset(s) for s in todo]
        rows = sum(len(d) for d in datasets)
        if self.check_files is None and (not self._auto_check_files or rows > CHECK_FILES_MAX_ROWS):
            if self._auto_check_files:
                log.info("%s: %d rows, files not checked up front (check_files: true checks them)", type(self).__name__, rows)
            return
        for split, dataset in zip(todo, datasets):
            if split == "predict" and self.manifests["predict"] == self.manifests["test"] and "test" in self._checked:
                continue
            dataset.check_files()
            self._checked.add(split)

    def _collate(self) -> MultimodalCollate:
        return MultimodalCollate(self.pad_id if self.pad_id is not None else 0)

    def _has_split(self, split: str) -> bool:
        return self.manifests[split] is not None


def _plain(value: Any) -> Any:
    """``value`` as JSON-able data (tuples → lists, paths → strings)."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, Path):
        return str(value)
    return value


def _public_class_path(cls: type) -> str:
    """``mmctx.data.Name`` for the package's data modules (the path configs use), else the
    defining module's path."""
    import mmctx.data

    if cls.__module__.startswith("mmctx.data") and cls.__name__ in getattr(mmctx.data, "__all__", ()):
        return f"mmctx.data.{cls.__name__}"
    return f"{cls.__module__}.{cls.__qualname__}"


def _hparams_plain(hparams: dict) -> None:
    """Store the ``augment`` and ``train_tokenizer`` dataclasses as plain dicts, so
    checkpoints stay loadable with ``weights_only=True``."""
    for key in ("augment", "train_tokenizer"):
        if dataclasses.is_dataclass(hparams.get(key)):
            hparams[key] = dataclasses.asdict(hparams[key])


def _read_classes_file(path: Path) -> list[str]:
    try:
        classes = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ManifestError(f"{path}: malformed JSON: {error}") from None
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        raise ManifestError(f"{path}: expected a JSON list of class-name strings")
    if len(set(classes)) != len(classes):
        raise ManifestError(f"{path}: duplicate class names")
    return classes


class CocoCaptionDataModule(
    InferenceStateMixin, TokenizerChoiceMixin, TokenizerSizesMixin, SplitLoadersMixin, LightningDataModule
):
    """Image captioning data from COCO-style caption files (train / val / test / predict).

    Training yields one sample per caption; validation, test and predict one per image with
    all its captions as references (see :mod:`mmctx.data.coco`). ``vocab_size``, ``pad_id``,
    ``bos_id`` and ``eos_id`` are known after ``__init__``, so the CLI fills them into the
    model.

    The tokenizer: ``tokenizer`` (a pretrained one, as for :class:`MultimodalDataModule`),
    or one trained on the training captions: as ``train_tokenizer`` says, or, when both are
    None, a word-level one keeping the words seen ``min_word_frequency`` times
    (:func:`~mmctx.data.tokenization.train_word_tokenizer`; deterministic, so a later
    ``mmctx test`` rebuilds the same one). A trained tokenizer is saved in the run folder
    (``tokenizer/tokenizer.json``) when fitting starts, where a later config can point
    ``tokenizer`` at it. The training captions' unknown-token rate is checked as for
    :class:`MultimodalDataModule` (``max_unk_rate``, ``unk_policy``).

    Args:
        train_file: caption file of the training split (also the tokenizer's source).
        val_file: caption file of the validation split (optional).
        test_file: caption file of the test split (optional).
        predict_path: what ``predict`` captions: a caption file (its images need no
            captions) or a folder of images; default: the test file.
        image_dir: folder the ``file_name`` entries are relative to; None: each caption
            file's own folder.
        tokenizer: a pretrained tokenizer (hub id, folder, ``tokenizer.json``, JSON string),
            or None to train one on the training captions.
        train_tokenizer: how to train it (see
            :class:`~mmctx.data.tokenization.TokenizerTraining`); None: word-level with
            ``min_word_frequency``.
        min_word_frequency: words rarer than this in the training captions become
            ``[UNK]`` (the default word-level tokenizer only).
        max_unk_rate: the training captions' fraction of unknown tokens allowed (see
            :class:`MultimodalDataModule`).
        unk_policy: "raise" or "warn" above ``max_unk_rate``.
        check_files: decode every image of every split in ``setup``, before training
            starts; ``None``: when the files hold at most :data:`CHECK_FILES_MAX_ROWS`
            images together.
        batch_size: samples per batch.
        num_workers: DataLoader worker processes (persistent when > 0).
        image_size: side of the square images fed to the model, in pixels.
        max_text_len: longer captions (BOS and EOS included) are truncated.
        seed: seed of the training shuffle.
        preprocessing: a pretrained image tower's preprocessing, as for
            :class:`MultimodalDataModule`.
    """

    _inference_args = ("image_size", "preprocessing", "max_text_len")

    def __init__(
        self,
        train_file: str | None = None,
        val_file: str | None = None,
        test_file: str | None = None,
        predict_path: str | None = None,
        image_dir: str | None = None,
        tokenizer: str | None = None,
        train_tokenizer: TokenizerTraining | None = None,
        min_word_frequency: int = 5,
        max_unk_rate: float = 0.05,
        unk_policy: Literal["raise", "warn"] = "raise",
        check_files: bool | None = None,
        batch_size: int = 64,
        num_workers: int = 2,
        image_size: int = 224,
        max_text_len: int = 32,
        seed: int = 0,
        preprocessing: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        _hparams_plain(self.hparams)
        if unk_policy not in ("raise", "warn") or not 0.0 <= max_unk_rate <= 1.0:
            raise ValueError(f"unk_policy must be 'raise' or 'warn' and max_unk_rate in [0, 1], got {unk_policy!r}, {max_unk_rate}")
        if batch_size < 1 or num_workers < 0:
            raise ValueError(f"batch_size must be >= 1 and num_workers >= 0, got {batch_size}, {num_workers}")
        self.files: dict[str, Path | None] = {
            "train": Path(train_file) if train_file else None,
            "val": Path(val_file) if val_file else None,
            "test": Path(test_file) if test_file else None,
            "predict": Path(predict_path) if predict_path else (Path(test_file) if test_file else None),
        }
        self.image_dir = image_dir
        self.modalities = ["image"]
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.image_size = image_size
        self.preprocessing = normalize_preprocessing(preprocessing)
        self.max_text_len = max_text_len
        self.seed = seed
        self.max_unk_rate = max_unk_rate
        self.unk_policy = unk_policy
        self.check_files = check_files
        self._checked: set[str] = set()
        if tokenizer is None and train_tokenizer is None:
            train_tokenizer = TokenizerTraining("word", min_frequency=min_word_frequency)
        self.tokenizer: TextTokenizer = self._choose_tokenizer(  # type: ignore[assignment]
            tokenizer, train_tokenizer, self._training_texts, None, needed=True
        )
        self.datasets: dict[str, CocoCaptionDataset] = {}

    def _training_texts(self) -> list[str]:
        if self.files["train"] is None:
            raise ValueError("CocoCaptionDataModule: without train_file, pass a tokenizer")
        images = read_coco_captions(self.files["train"], self.image_dir, check_files=False)
        return [c for im in images for c in im.captions]

    def _dataset(self, split: str) -> CocoCaptionDataset:
        if split not in self.datasets:
            path = self.files[split]
            if path is None:
                arg = "predict_path" if split == "predict" else f"{split}_file"
                raise ValueError(f"CocoCaptionDataModule: {arg} is not set: cannot build the {split} data")
            self.datasets[split] = CocoCaptionDataset(
                path,
                self.tokenizer,
                image_dir=self.image_dir,
                per_caption=split == "train",
                require_captions=split != "predict",
                image_size=self.image_size,
                max_text_len=self.max_text_len,
                preprocessing=self.preprocessing,
            )
            if split == "train" and self.unk_rate is None:
                texts = [c for im in self.datasets[split].images for c in im.captions]
                self._check_unknown_rate(texts, str(self.files["train"]), self.max_unk_rate, self.unk_policy)
        return self.datasets[split]

    def setup(self, stage: str | None = None) -> None:
        """Read and validate the caption files the stage needs."""
        splits = {
            None: [s for s in self.files if self.files[s] is not None],
            "fit": ["train", "val"] if self.files["val"] else ["train"],
            "validate": ["val"],
            "test": ["test"],
            "predict": ["predict"],
        }
        if stage not in splits:
            raise ValueError(f"unknown stage {stage!r}")
        for split in splits[stage]:
            self._dataset(split)
        checks = [s for s in self.files if self.files[s] is not None] if stage in (None, "fit") else splits[stage]
        datasets = {s: self._dataset(s) for s in checks if s not in self._checked}
        count = sum(len(d.images) for d in datasets.values())
        if self.check_files or (self.check_files is None and count <= CHECK_FILES_MAX_ROWS):
            for split, dataset in datasets.items():
                dataset.check_files()
                self._checked.add(split)
        if stage in (None, "fit"):
            self._save_trained_tokenizer()

    def _collate(self) -> CocoCaptionCollate:
        return CocoCaptionCollate(self.pad_id)

    def _has_split(self, split: str) -> bool:
        return self.files[split] is not None


class GeneratedDataMixin:
    """For data modules whose data set is generated locally on first use: ``prepare_data``
    (one process per node) and, lazily, the first data set built call ``_generate()`` once
    per instance; ``__init__`` generates nothing. A subclass implements ``_generate`` (an
    ``ensure_*`` call that regenerates only when the stamp on disk differs)."""

    _ensured = False

    def _generate(self) -> None:
        raise NotImplementedError

    @staticmethod
    def _split_manifests(root: Path, num_val: int, num_test: int) -> dict[str, str | None]:
        """The manifest arguments of :class:`MultimodalDataModule` for a generated folder:
        ``train.jsonl``, ``val.jsonl`` / ``test.jsonl`` when those splits have samples, and
        the test split for ``predict``."""
        test = str(root / "test.jsonl") if num_test > 0 else None
        return {
            "train_manifest": str(root / "train.jsonl"),
            "val_manifest": str(root / "val.jsonl") if num_val > 0 else None,
            "test_manifest": test,
            "predict_manifest": test,
        }

    def _ensure(self) -> None:
        if not self._ensured:
            self._generate()
            self._ensured = True

    def prepare_data(self) -> None:
        """Generate the data set unless it is up to date (runs on one process per node)."""
        self._ensure()

    def _dataset(self, split: str) -> ManifestDataset:
        self._ensure()
        return super()._dataset(split)  # type: ignore[misc]


class DefaultDataModule(GeneratedDataMixin, MultimodalDataModule):
    """The embedded default data set ("what animals?"), generated on first use.

    The data set is generated (or found up to date) by
    :func:`~mmctx.data.builtin.scenes.ensure_default_dataset` in ``prepare_data`` and again,
    lazily, before the data sets are built; ``__init__`` generates nothing. Its classes are
    fixed (the 32 object names of :data:`~mmctx.data.builtin.scenes.DEFAULT_CLASSES`), so
    ``num_classes`` is known at construction.

    Args:
        root: data folder; ``None`` is :func:`~mmctx.data.builtin.scenes.default_data_root`.
        num_train: training samples to generate.
        num_val: validation samples to generate.
        num_test: test samples to generate (also used for ``predict``).
        data_seed: generation seed (``seed`` only seeds the shuffle).
        modalities: which of "text", "image", "audio" to load ("text" is the transcript of
            the spoken question).
        tokenizer: as for :class:`MultimodalDataModule`; None: the asset pack's word-level
            tokenizer (the data's own vocabulary).
        batch_size: samples per batch.
        num_workers: DataLoader worker processes.
        image_size: side of the generated (and loaded) images, in pixels.
        preprocessing: a pretrained image tower's preprocessing, as for
            :class:`MultimodalDataModule` (None: the images are fed as generated).
        sample_rate: sample rate of the generated (and loaded) audio, in Hz.
        max_audio_seconds: longer audio is truncated (logged once).
        max_text_len: longer token sequences are truncated (logged once).
        seed: seed of the training shuffle.
        audio_field: "audio" (the spoken question) or "caption_audio" (the spoken caption).
        text_field: "text" (the question's transcript) or "caption".
        caption_field: e.g. "caption" to batch the scene caption as ``targets["caption"]``.
        label_field: "label" (the asked object's category), or ``None`` for no label.
        augment: training-time augmentation, as for :class:`MultimodalDataModule`.
        label_fraction: fraction of the training samples used, as for
            :class:`MultimodalDataModule`.
        on_error, max_bad_fraction: the bad-row policy of :class:`MultimodalDataModule`
            (the generated files are valid; this guards a damaged cache).
    """

    _save_base_hparams = False
    _measure_unk_rate = False
    _auto_check_files = False

    def __init__(
        self,
        root: str | None = None,
        num_train: int = 3000,
        num_val: int = 500,
        num_test: int = 500,
        data_seed: int = 0,
        modalities: list[str] = ["image", "audio"],  # noqa: B006 - never mutated
        tokenizer: str | None = None,
        batch_size: int = 64,
        num_workers: int = 2,
        image_size: int = 64,
        preprocessing: dict[str, Any] | None = None,
        sample_rate: int = 16000,
        max_audio_seconds: float = 10.0,
        max_text_len: int = 64,
        seed: int = 0,
        audio_field: str = "audio",
        text_field: str = "text",
        caption_field: str | None = None,
        label_field: str | None = "label",
        augment: Augmentation | None = None,
        label_fraction: float = 1.0,
        on_error: Literal["raise", "skip"] = "raise",
        max_bad_fraction: float = 0.05,
    ) -> None:
        self.root = Path(root).expanduser() if root else default_data_root()
        super().__init__(
            **self._split_manifests(self.root, num_val, num_test),
            modalities=modalities,
            tokenizer=tokenizer,
            classes=list(DEFAULT_CLASSES) if label_field is not None else [],
            batch_size=batch_size,
            num_workers=num_workers,
            image_size=image_size,
            preprocessing=preprocessing,
            sample_rate=sample_rate,
            max_audio_seconds=max_audio_seconds,
            max_text_len=max_text_len,
            seed=seed,
            label_field=label_field,
            text_field=text_field,
            image_field="image",
            audio_field=audio_field,
            caption_field=caption_field,
            augment=augment,
            label_fraction=label_fraction,
            on_error=on_error,
            max_bad_fraction=max_bad_fraction,
        )
        self.generation = dict(
            num_train=num_train,
            num_val=num_val,
            num_test=num_test,
            image_size=image_size,
            sample_rate=sample_rate,
            seed=data_seed,
        )
        self.save_hyperparameters()  # this class's arguments only (see _save_base_hparams)
        _hparams_plain(self.hparams)

    def _generate(self) -> None:
        ensure_default_dataset(self.root, **self.generation)

    def _default_tokenizer(self) -> TextTokenizer:
        """The asset pack's word-level tokenizer: the data is written in its vocabulary."""
        return resolve_tokenizer(str(default_tokenizer_path()))


class LongRangeDataModule(GeneratedDataMixin, MultimodalDataModule):
    """The long-range retrieval task (see :mod:`mmctx.data.builtin.long_range`), generated
    on first use.

    Batches: ``inputs["image"]`` (B, 3, H, W) and ``inputs["text"]`` (B, T) with its mask
    (B, T), T the longest document of the batch (at most ``max_text_len``), and the target
    ``output`` asks for:

    - ``"label"`` (classification): ``targets["label"]`` (B,), an index into
      :data:`~mmctx.data.builtin.long_range.LONG_RANGE_CLASSES` (16 classes);
    - ``"answer"`` (generation, for :class:`~mmctx.trainers.CaptioningTask`): the manifest's
      ``answer`` text ``"<colour> <category>"`` (e.g. ``"blue animals"``) as
      ``targets["caption"]`` (B, L) ids ``[bos] colour category [eos]`` with
      ``targets["caption_mask"]``, and ``meta["caption_text"]`` (the reference). The
      tokenizer is then the task's vocabulary plus the four category words
      (:func:`~mmctx.data.builtin.long_range.long_range_tokenizer` with ``answers=True``).
      ``targets["label"]`` comes too (the class of ``"label"``), for an auxiliary
      classification loss (:class:`~mmctx.trainers.CaptioningTask`'s ``label_loss_weight``).

    With either output, ``targets["key_span"]`` (B, 2) long is the key colour word's
    ``[start, stop)`` in text tokens and ``targets["key_label"]`` (B,) its index in
    :data:`~mmctx.data.builtin.long_range.LONG_RANGE_COLOURS`, for a token-level auxiliary
    loss (:class:`~mmctx.trainers.CaptioningTask`'s ``key_loss_weight``); a span cut away by
    ``max_text_len`` lies past the document's end.

    ``max_text_len`` is the truncation switch: 512 keeps the first 512 tokens of every
    document (the baseline), a value >= ``max_tokens`` keeps all.

    Args:
        root: data folder; ``None`` is
            :func:`~mmctx.data.builtin.long_range.long_range_data_root`.
        num_train: training samples to generate.
        num_val: validation samples to generate.
        num_test: test samples to generate (also used for ``predict``).
        data_seed: generation seed (``seed`` only seeds the shuffle).
        min_tokens: shortest document, in tokens.
        max_tokens: longest document, in tokens.
        modalities: which of "image", "text" to load (both for the task; either alone is
            a baseline capped at 1 / 4: the category or the colour, never both).
        batch_size: samples per batch.
        num_workers: DataLoader worker processes.
        image_size: side of the generated (and loaded) images, in pixels.
        max_text_len: documents are truncated to this many tokens (logged once).
        seed: seed of the training shuffle.
        train_min_tokens: shortest training document (log-uniform length mixture up to
            ``max_tokens``; 0: training documents like val/test ones).
        output: the target, ``"label"`` (the class, for classification) or ``"answer"`` (the
            answer text, for generation). (Not ``target``: that is the captioning task's key.)
        on_error, max_bad_fraction: the bad-row policy of :class:`MultimodalDataModule`
            (the generated files are valid; this guards a damaged cache).
    """

    _save_base_hparams = False
    _measure_unk_rate = False
    _auto_check_files = False

    def __init__(
        self,
        root: str | None = None,
        num_train: int = 2000,
        num_val: int = 250,
        num_test: int = 500,
        data_seed: int = 0,
        min_tokens: int = 1536,
        max_tokens: int = 3072,
        modalities: list[str] = ["image", "text"],  # noqa: B006 - never mutated
        batch_size: int = 16,
        num_workers: int = 0,
        image_size: int = 32,
        max_text_len: int = 4096,
        seed: int = 0,
        train_min_tokens: int = 128,
        output: Literal["label", "answer"] = "label",
        on_error: Literal["raise", "skip"] = "raise",
        max_bad_fraction: float = 0.05,
    ) -> None:
        unknown = [m for m in modalities if m not in ("image", "text")]
        if unknown:
            raise ValueError(f"LongRangeDataModule: modalities must be among ['image', 'text'], got {list(modalities)}")
        if output not in ("label", "answer"):
            raise ValueError(f"LongRangeDataModule: output must be 'label' or 'answer', got {output!r}")
        self.output = output  # read by _default_tokenizer, called by the base's __init__
        self.root = Path(root).expanduser() if root else long_range_data_root()
        answer = output == "answer"
        super().__init__(
            **self._split_manifests(self.root, num_val, num_test),
            modalities=modalities,
            classes=list(LONG_RANGE_CLASSES),
            label_field="label",
            caption_field="answer" if answer else None,
            batch_size=batch_size,
            num_workers=num_workers,
            image_size=image_size,
            max_text_len=max_text_len,
            seed=seed,
            on_error=on_error,
            max_bad_fraction=max_bad_fraction,
        )
        self.generation = long_range_params(
            num_train, num_val, num_test, min_tokens, max_tokens, image_size, data_seed, train_min_tokens
        )
        self.save_hyperparameters()  # this class's arguments only (see _save_base_hparams)

    def _generate(self) -> None:
        ensure_long_range_dataset(self.root, **self.generation)

    def _default_tokenizer(self) -> TextTokenizer:
        """The task's own vocabulary (fixed, so vocab_size is known without the data), with
        the answers' words when the target is the answer."""
        return long_range_tokenizer(answers=self.output == "answer")

    def _new_dataset(self, manifest: Path, classes: list[str] | None) -> Dataset:
        return _KeySpanDataset(super()._new_dataset(manifest, classes), manifest)


class _KeySpanDataset(Dataset):
    """A long-range manifest data set whose items also carry ``"key_span"`` ([fact_token,
    fact_token + 1): the key colour word) and ``"key_label"`` (the colour's index), read from
    the manifest rows' ``fact_token`` and ``colour``. Other attributes are the wrapped set's."""

    def __init__(self, dataset: ManifestDataset, manifest: Path) -> None:
        self.dataset = dataset
        keys = {}
        with open(manifest) as handle:
            for line in handle:
                if line.strip():
                    row = json.loads(line)
                    keys[row["id"]] = (int(row["fact_token"]), LONG_RANGE_COLOURS.index(row["colour"]))
        self.keys = keys

    def __len__(self) -> int:
        return len(self.dataset)

    def __getattr__(self, name: str) -> Any:  # rows, source, ... of the wrapped data set
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.dataset[index]
        token, colour = self.keys[item["id"]]
        item["key_span"], item["key_label"] = (token, token + 1), colour
        return item


class StreamingDataModule(
    InferenceStateMixin, TokenizerChoiceMixin, TokenizerSizesMixin, SplitLoadersMixin, LightningDataModule
):
    """Train/val/test/predict data from shard folders written by
    :func:`~mmctx.data.shards.write_shards` (``python -m mmctx.data.shards``), local
    or streamed from an object store (``s3://bucket/prefix`` and the other URLs litdata reads).

    Batches are :class:`~mmctx.types.MultimodalBatch`, the same as
    :class:`MultimodalDataModule` gives for the manifest the shards were made from: every
    sample is decoded, checked and preprocessed by the manifest path's own loader (see
    :class:`~mmctx.data.shards.ShardDataset`), and collated by the same collate. The bad-input
    policy (``on_error``, ``max_bad_fraction``) was applied when the shards were written; a file
    that still fails to decode raises :class:`~mmctx.data.manifest.ManifestError` naming the
    manifest line.

    Training order: :class:`~mmctx.data.shards.ShardBatchSampler`, a function of
    ``(seed, epoch)`` only that goes shard by shard (``shuffle_window`` chunks mixed at a time).
    Under DDP every rank takes its block of the same global batches, and every rank gets the
    same number of batches whatever the shard sizes (the order is padded with at most
    ``world_size - 1`` repeated samples when the sample count is not a multiple of it). A run
    resumed with ``mmctx fit --ckpt_path ...`` from a mid-epoch checkpoint skips exactly the
    batches trained before it (the tasks call ``skip_batches`` on the sampler), so it neither
    repeats nor skips samples. :meth:`state_dict` (stored in every checkpoint by Lightning)
    records the training shards' layout, seed and batch size; resuming on other shards or
    with another seed or batch size is refused, since the position in the epoch would no
    longer mean the same samples.

    Args:
        train_dir: shard folder (or URL) of the training split.
        val_dir: shard folder of the validation split (optional).
        test_dir: shard folder of the test split (optional).
        predict_dir: shard folder for ``predict`` (optional; default: the test split).
        modalities: which of the converted modalities to load.
        tokenizer: the tokenizer of the text, as for :class:`MultimodalDataModule` (needed
            when "text" is loaded or ``captions``).
        classes: class names, index = class id; None: the classes recorded in the
            training shards (the first split given, without training shards).
        labels: load the labels (``targets["label"]``) when the shards have them.
        captions: load the captions (``targets["caption"]``); the shards must have them.
        batch_size: samples per batch (per process).
        num_workers: DataLoader worker processes (persistent when > 0).
        image_size, preprocessing, sample_rate, max_audio_seconds, max_text_len,
            min_image_size, max_image_pixels: the preprocessing, as for
            :class:`MultimodalDataModule`.
        seed: seed of the training shuffle.
        shuffle_window: chunks whose samples are shuffled together (more mixes better,
            fewer reads fewer chunks at once).
        cache_dir: where litdata keeps a remote folder's ``index.json`` (None: its default).
        storage_options: object-store client options, e.g. ``{"endpoint_url": "http://..."}``
            for an S3-compatible server (litdata's ``storage_options``). They are saved with
            the hyperparameters: give credentials through the store's environment variables
            or config files, never here.
    """

    _save_base_hparams: bool = True
    _inference_args = (
        "modalities", "image_size", "preprocessing", "sample_rate", "max_audio_seconds", "max_text_len",
        "min_image_size", "max_image_pixels",
    )

    def __init__(
        self,
        train_dir: str | None = None,
        val_dir: str | None = None,
        test_dir: str | None = None,
        predict_dir: str | None = None,
        modalities: list[str] = ["image", "audio"],  # noqa: B006 - never mutated; shown by the CLI
        tokenizer: str | None = None,
        classes: list[str] | None = None,
        labels: bool = True,
        captions: bool = False,
        batch_size: int = 64,
        num_workers: int = 2,
        image_size: int = 64,
        preprocessing: dict[str, Any] | None = None,
        sample_rate: int = 16000,
        max_audio_seconds: float = 10.0,
        max_text_len: int = 64,
        min_image_size: int = 8,
        max_image_pixels: int = 50_000_000,
        seed: int = 0,
        shuffle_window: int = 4,
        cache_dir: str | None = None,
        storage_options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if self._save_base_hparams:
            self.save_hyperparameters()
        if batch_size < 1 or num_workers < 0 or shuffle_window < 1:
            raise ValueError(
                f"batch_size and shuffle_window must be >= 1 and num_workers >= 0, got {batch_size}, "
                f"{shuffle_window}, {num_workers}"
            )
        self.dirs: dict[str, str | None] = {
            "train": train_dir, "val": val_dir, "test": test_dir, "predict": predict_dir or test_dir,
        }
        self.modalities = list(modalities)
        self.labels = labels
        self.captions = captions
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.image_size = image_size
        self.preprocessing = normalize_preprocessing(preprocessing)
        self.sample_rate = sample_rate
        self.max_audio_seconds = max_audio_seconds
        self.max_text_len = max_text_len
        self.min_image_size = min_image_size
        self.max_image_pixels = max_image_pixels
        self.seed = seed
        self.shuffle_window = shuffle_window
        self.cache_dir = cache_dir
        self.storage_options = storage_options
        self.tokenizer: TextTokenizer | None = self._choose_tokenizer(
            tokenizer, None, lambda: [], self._default_tokenizer(), needed="text" in self.modalities or captions
        )
        self._classes = list(classes) if classes is not None else None
        self.datasets: dict[str, Any] = {}
        self._resume_state: dict[str, Any] | None = None

    def _default_tokenizer(self) -> TextTokenizer | None:
        return None

    # ------------------------------------------------------------------ sizes for the model

    @property
    def classes(self) -> list[str]:
        """Class names, index = class id (the training shards' when not given)."""
        if self._classes is None:
            split = next((s for s in _STAGES if self.dirs[s] is not None), None)
            if split is None:
                raise ValueError("StreamingDataModule: no shard folder given: cannot find the classes; pass classes=[...]")
            self._classes = list(self._dataset(split).info["classes"] or []) if self.labels else []
        return self._classes

    @property
    def num_classes(self) -> int:
        """Number of classes (K)."""
        return len(self.classes)

    def _inference_classes(self) -> list[str] | None:
        return list(self.classes) if self.labels else None

    # ------------------------------------------------------------------ data sets

    def _dataset(self, split: str) -> Any:
        from mmctx.data.shards import ShardDataset

        if split not in self.datasets:
            input_dir = self.dirs[split]
            if input_dir is None:
                raise ValueError(f"StreamingDataModule: {split}_dir is not set: cannot build the {split} data")
            self.datasets[split] = ShardDataset(
                input_dir,
                self.modalities,
                tokenizer=self.tokenizer,
                classes=self._classes,
                labels=self.labels,
                captions=self.captions,
                image_size=self.image_size,
                preprocessing=self.preprocessing,
                sample_rate=self.sample_rate,
                max_audio_seconds=self.max_audio_seconds,
                max_text_len=self.max_text_len,
                min_image_size=self.min_image_size,
                max_image_pixels=self.max_image_pixels,
                cache_dir=self.cache_dir,
                storage_options=self.storage_options,
            )
        return self.datasets[split]

    def setup(self, stage: str | None = None) -> None:
        """Open the shard folders the stage needs (reads their ``index.json``)."""
        if stage is None:
            splits = [s for s in _STAGES if self.dirs[s] is not None]
        elif stage in _STAGE_SPLIT:
            splits = [_STAGE_SPLIT[stage]] + (["val"] if stage == "fit" and self.dirs["val"] else [])
        else:
            raise ValueError(f"unknown stage {stage!r} (expected one of {list(_STAGE_SPLIT)})")
        for split in splits:
            self._dataset(split)

    def _train_sampler(self, dataset: Dataset) -> GlobalBatchSampler:
        from mmctx.data.shards import ShardBatchSampler

        self._check_resume(dataset)
        return ShardBatchSampler(dataset.chunk_sizes, self.batch_size, seed=self.seed, shuffle_window=self.shuffle_window)

    def _collate(self) -> MultimodalCollate:
        return MultimodalCollate(self.pad_id if self.pad_id is not None else 0)

    def _has_split(self, split: str) -> bool:
        return self.dirs[split] is not None

    # ------------------------------------------------------------------ resuming

    def _order_state(self, dataset: Any) -> dict[str, Any]:
        return {
            "chunk_sizes": list(dataset.chunk_sizes),
            "seed": self.seed,
            "shuffle_window": self.shuffle_window,
            "batch_size": self.batch_size,
        }

    def state_dict(self) -> dict[str, Any]:
        """What decides the training order (the training shards' chunk sizes, seed,
        shuffle window, batch size), saved in every checkpoint; empty before training."""
        dataset = self.datasets.get("train")
        return {"train_order": self._order_state(dataset)} if dataset is not None else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Keep a checkpoint's training-order state, checked when the training loader is made."""
        self._resume_state = state_dict.get("train_order")

    def _check_resume(self, dataset: Any) -> None:
        if self._resume_state is None:
            return
        now = self._order_state(dataset)
        changed = [k for k in now if self._resume_state.get(k) != now[k]]
        if changed:
            raise ValueError(
                f"StreamingDataModule: the checkpoint was trained with other {changed} "
                f"({ {k: self._resume_state.get(k) for k in changed} } now { {k: now[k] for k in changed} }): "
                "resuming would repeat or skip samples. Resume with the same shards, seed, shuffle_window and "
                "batch_size, or start a new run from the weights (--model.init_args.weights / a fresh fit)"
            )


class DefaultStreamingDataModule(GeneratedDataMixin, StreamingDataModule):
    """The embedded default data set as shards (``configs/streaming.yaml``): generated and
    converted on first use (:func:`~mmctx.data.builtin.shards.ensure_default_shards`, in
    ``prepare_data`` and before the first data set is built), then read as
    :class:`StreamingDataModule` reads any shards.

    Args:
        root: the default data's folder; None:
            :func:`~mmctx.data.builtin.scenes.default_data_root`.
        shards_root: where the shards go; None: ``<root>-shards``.
        num_train, num_val, num_test, data_seed: generation parameters, as for
            :class:`DefaultDataModule`.
        modalities, tokenizer, labels, captions, batch_size, num_workers, image_size,
            sample_rate, max_audio_seconds, max_text_len, seed, shuffle_window: as for
            :class:`StreamingDataModule` (``image_size`` and ``sample_rate`` are also the
            generated data's); tokenizer None: the asset pack's vocabulary.
    """

    _save_base_hparams = False

    def __init__(
        self,
        root: str | None = None,
        shards_root: str | None = None,
        num_train: int = 3000,
        num_val: int = 500,
        num_test: int = 500,
        data_seed: int = 0,
        modalities: list[str] = ["image", "audio"],  # noqa: B006 - never mutated
        tokenizer: str | None = None,
        labels: bool = True,
        captions: bool = False,
        batch_size: int = 64,
        num_workers: int = 2,
        image_size: int = 64,
        sample_rate: int = 16000,
        max_audio_seconds: float = 10.0,
        max_text_len: int = 64,
        seed: int = 0,
        shuffle_window: int = 4,
    ) -> None:
        from mmctx.data.builtin.shards import default_shards_root

        self.root = Path(root).expanduser() if root else default_data_root()
        self.shards_root = Path(shards_root).expanduser() if shards_root else default_shards_root(self.root)
        dirs = {
            f"{split}_dir": str(self.shards_root / split) if count > 0 else None
            for split, count in (("train", num_train), ("val", num_val), ("test", num_test))
        }
        super().__init__(
            **dirs,
            modalities=modalities,
            tokenizer=tokenizer,
            classes=list(DEFAULT_CLASSES) if labels else [],
            labels=labels,
            captions=captions,
            batch_size=batch_size,
            num_workers=num_workers,
            image_size=image_size,
            sample_rate=sample_rate,
            max_audio_seconds=max_audio_seconds,
            max_text_len=max_text_len,
            seed=seed,
            shuffle_window=shuffle_window,
        )
        self.generation = dict(
            num_train=num_train, num_val=num_val, num_test=num_test, image_size=image_size,
            sample_rate=sample_rate, seed=data_seed,
        )
        self.save_hyperparameters()

    def _generate(self) -> None:
        from mmctx.data.builtin.shards import ensure_default_shards

        ensure_default_shards(self.root, self.shards_root, **self.generation)

    def _default_tokenizer(self) -> TextTokenizer:
        """The asset pack's word-level tokenizer: the data is written in its vocabulary."""
        return resolve_tokenizer(str(default_tokenizer_path()))


class SpokenLongDataModule(LightningDataModule):
    """The spoken long-context task (see :mod:`mmctx.data.builtin.spoken_long`): streams of
    speech with one key word (``cat``, ``dog``, ``cow`` or ``pig``) said once at a random
    time; the label is which one. Streams are rendered in memory when read (nothing is
    written to disk), deterministically from ``data_seed``.

    Batches: ``inputs["audio"]``: waveforms (B, S) at 16 kHz with prefix masks (B, S);
    ``targets["label"]`` (B,), an index into :data:`~mmctx.data.builtin.spoken_long.KEY_WORDS`;
    ``targets["key_span"]`` (B, 2), the key word's [start, stop) samples (for the frame-level
    loss, ``ClassificationTask(frame_loss_weight=...)``).

    Args:
        num_train: training streams (a fresh draw of lengths per stream, fixed per index).
        num_val: validation streams.
        num_test: test streams (also used for ``predict``).
        train_seconds: [shortest, longest] training stream, in seconds.
        eval_seconds: [shortest, longest] validation / test stream, in seconds.
        batch_size: streams per batch.
        num_workers: DataLoader worker processes.
        data_seed: generation seed.
        seed: seed of the training shuffle.
    """

    def __init__(
        self,
        num_train: int = 2000,
        num_val: int = 200,
        num_test: int = 400,
        train_seconds: list[float] = [6.0, 16.0],  # noqa: B006 - never mutated
        eval_seconds: list[float] = [16.0, 16.0],  # noqa: B006 - never mutated
        batch_size: int = 16,
        num_workers: int = 0,
        data_seed: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        from mmctx.data.builtin.spoken_long import KEY_WORDS

        for name, pair in (("train_seconds", train_seconds), ("eval_seconds", eval_seconds)):
            if len(pair) != 2 or not 1 <= pair[0] <= pair[1]:
                raise ValueError(f"SpokenLongDataModule: {name} must be [min, max] with 1 <= min <= max, got {pair}")
        self.num_train, self.num_val, self.num_test = num_train, num_val, num_test
        self.train_seconds, self.eval_seconds = list(train_seconds), list(eval_seconds)
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.data_seed = data_seed
        self.seed = seed
        self.classes: list[str] = list(KEY_WORDS)
        self.num_classes: int = len(KEY_WORDS)
        self.save_hyperparameters()

    def _dataset(self, split: str) -> Dataset:
        from mmctx.data.builtin.spoken_long import SpokenLongDataset

        num = {"train": self.num_train, "val": self.num_val, "test": self.num_test}[split]
        lo, hi = self.train_seconds if split == "train" else self.eval_seconds
        return SpokenLongDataset(split, num, lo, hi, seed=self.data_seed)  # type: ignore[return-value]

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        from mmctx.data.builtin.spoken_long import collate_spoken

        generator = torch.Generator().manual_seed(self.seed) if shuffle else None
        return DataLoader(
            self._dataset(split), batch_size=self.batch_size, shuffle=shuffle, num_workers=self.num_workers,
            collate_fn=collate_spoken, generator=generator,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
