"""A trained model with its preprocessing: :class:`Predictor`, :func:`load` and :func:`export`."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from mmctx.types import MultimodalBatch

__all__ = ["Predictor", "export", "load"]

#: File names of an exported folder.
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
TOKENIZER_FILE = "tokenizer.json"
PREPROCESSING_FILE = "preprocessing.json"
EXPORT_FORMAT = "mmctx-predictor/1"

#: Task class name → what it predicts.
_TASK_KINDS = {"CaptioningTask": "captioning", "ClassificationTask": "classification", "DistillationTask": "classification"}
#: Generation arguments of a captioning task, saved with the export, overridable per call.
GENERATION_ARGS = ("max_new_tokens", "strategy", "num_beams", "length_penalty", "no_repeat_ngram_size",
                   "repetition_penalty")
_METHODS = {"captioning": ("caption", "transcribe"), "classification": ("classify",)}


class Predictor:
    """A trained model and the preprocessing of its training data, for inference in Python.

    Build it with :func:`load`. The methods take lists of equal length for any subset of the
    modalities the model reads — file paths, PIL images, numpy or torch arrays (images), file
    paths, arrays or ``(array, rate)`` pairs (audio), strings (text) — preprocess them exactly
    as the training data was (:class:`~mmctx.data.inference.InputEncoder`), and run the model
    in batches of ``batch_size`` on :attr:`device`, without gradients.

    Args:
        model: the plain model (``FusionModel``, ``EncoderDecoderModel``, ...).
        encoder: an :class:`~mmctx.data.inference.InputEncoder` (the checkpoint's ``mmctx_data``).
        task: ``"captioning"`` or ``"classification"``.
        config: what :meth:`save` writes as ``config.json`` (the model's class paths, the
            task's class path and its generation settings / classes).
        data_state: the data module's ``inference_state()`` (``mmctx_data``).
        device: where the model runs.
    """

    def __init__(self, model: nn.Module, encoder: Any, task: str, config: dict[str, Any],
                 data_state: dict[str, Any], device: str | torch.device = "cpu") -> None:
        if task not in _METHODS:
            raise ValueError(f"Predictor: task must be one of {list(_METHODS)}, got {task!r}")
        self.model = model.eval()
        self.encoder = encoder
        self.task = task
        self.config = config
        self.data_state = data_state
        self.device = torch.device(device)
        self.model.to(self.device)

    # ------------------------------------------------------------------ properties

    @property
    def modalities(self) -> list[str]:
        """The modalities the model reads."""
        return list(self.encoder.modalities)

    @property
    def classes(self) -> list[str] | None:
        """Class names, index = class id (classification)."""
        return self.config.get("task", {}).get("classes") or self.encoder.classes

    @property
    def generation(self) -> dict[str, Any]:
        """The task's generation settings (captioning): the defaults of :meth:`caption`."""
        return dict(self.config.get("task", {}).get("generation", {}))

    def to(self, device: str | torch.device) -> Predictor:
        """Move the model to ``device``; returns self."""
        self.device = torch.device(device)
        self.model.to(self.device)
        return self

    def __repr__(self) -> str:
        return (f"Predictor(task={self.task!r}, model={type(self.model).__name__}, modalities={self.modalities}, "
                f"device={str(self.device)!r}; methods: {', '.join(_METHODS[self.task])})")

    # ------------------------------------------------------------------ batching

    def batches(self, images: Sequence[Any] | None = None, audio: Sequence[Any] | None = None,
                texts: Sequence[str] | None = None, batch_size: int = 32):
        """The inputs as preprocessed :class:`~mmctx.types.MultimodalBatch` es of at most
        ``batch_size`` samples, on :attr:`device`."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        given = {k: list(v) for k, v in (("images", images), ("audio", audio), ("texts", texts)) if v is not None}
        if not given:
            raise ValueError(f"{self._name()}: give images=, audio= or texts= (the model reads {self.modalities})")
        lengths = {k: len(v) for k, v in given.items()}
        if len(set(lengths.values())) != 1:
            raise ValueError(f"{self._name()}: the inputs have different lengths: {lengths}")
        count = next(iter(lengths.values()))
        for start in range(0, count, batch_size):
            part = {k: v[start:start + batch_size] for k, v in given.items()}
            yield _to_device(self.encoder(**part), self.device)

    def _name(self) -> str:
        return f"Predictor ({self.task})"

    def _require(self, method: str) -> None:
        if method not in _METHODS[self.task]:
            offered = " / ".join(f".{m}()" for m in _METHODS[self.task])
            raise TypeError(f"{method}(): this checkpoint's task is {self.task} "
                            f"({self.config.get('task', {}).get('class_path')}); it offers {offered}")

    # ------------------------------------------------------------------ captioning

    @torch.no_grad()
    def generate_ids(self, images: Sequence[Any] | None = None, audio: Sequence[Any] | None = None,
                     texts: Sequence[str] | None = None, batch_size: int = 32, **generation: Any) -> list[list[int]]:
        """Generated token ids per sample, each cut at its first EOS (captioning)."""
        self._require("caption")
        settings = self.generation
        unknown = [k for k in generation if k not in (*GENERATION_ARGS, "temperature", "top_k", "top_p", "generator")]
        if unknown:
            raise TypeError(f"caption(): unknown generation argument(s) {unknown}; "
                            f"known: {[*GENERATION_ARGS, 'temperature', 'top_k', 'top_p', 'generator']}")
        settings.update({k: v for k, v in generation.items() if v is not None})
        max_new_tokens = settings.pop("max_new_tokens", 16)
        eos = getattr(self.encoder.tokenizer, "eos_id", None)
        out: list[list[int]] = []
        for batch in self.batches(images, audio, texts, batch_size):
            ids = self.model.generate(batch, max_new_tokens, **settings)  # (B, T_out)
            for row in ids.tolist():
                out.append(row[: row.index(eos)] if eos is not None and eos in row else row)
        return out

    def caption(self, images: Sequence[Any] | None = None, audio: Sequence[Any] | None = None,
                texts: Sequence[str] | None = None, batch_size: int = 32, max_new_tokens: int | None = None,
                strategy: str | None = None, num_beams: int | None = None, length_penalty: float | None = None,
                no_repeat_ngram_size: int | None = None, repetition_penalty: float | None = None,
                temperature: float | None = None, top_k: int | None = None, top_p: float | None = None,
                generator: torch.Generator | None = None) -> list[str]:
        """A caption (or transcript) per sample. Generation settings default to the task's
        (:attr:`generation`); ``temperature``, ``top_k``, ``top_p`` and ``generator`` apply
        with ``strategy="sample"``."""
        ids = self.generate_ids(images, audio, texts, batch_size, max_new_tokens=max_new_tokens, strategy=strategy,
                                num_beams=num_beams, length_penalty=length_penalty,
                                no_repeat_ngram_size=no_repeat_ngram_size, repetition_penalty=repetition_penalty,
                                temperature=temperature, top_k=top_k, top_p=top_p, generator=generator)
        tokenizer = self.encoder.tokenizer
        if tokenizer is None:
            raise RuntimeError("caption(): the checkpoint has no tokenizer to decode with")
        return [tokenizer.decode(row).strip() for row in ids]

    def transcribe(self, audio: Sequence[Any], batch_size: int = 32, **generation: Any) -> list[str]:
        """The transcript of each clip (a captioning model that reads audio)."""
        self._require("transcribe")
        if "audio" not in self.modalities:
            raise TypeError(f"transcribe(): the model reads {self.modalities}, not audio; use .caption()")
        return self.caption(audio=audio, batch_size=batch_size, **generation)

    # ------------------------------------------------------------------ classification

    @torch.no_grad()
    def logits(self, images: Sequence[Any] | None = None, audio: Sequence[Any] | None = None,
               texts: Sequence[str] | None = None, batch_size: int = 32) -> Tensor:
        """Class logits. Shapes: → (B, K) float on the CPU."""
        self._require("classify")
        return torch.cat([self.model(batch).float().cpu() for batch in self.batches(images, audio, texts, batch_size)])

    def classify(self, images: Sequence[Any] | None = None, audio: Sequence[Any] | None = None,
                 texts: Sequence[str] | None = None, batch_size: int = 32, top_k: int = 3) -> list[dict[str, Any]]:
        """Per sample ``{"predicted": class, "score": probability, "top": [[class, p], ...]}``
        (``top_k`` most probable classes)."""
        probs = self.logits(images, audio, texts, batch_size).softmax(-1)
        classes = self.classes or [str(i) for i in range(probs.shape[-1])]
        rows = []
        for p in probs:
            values, index = p.topk(min(top_k, len(classes)) if top_k > 0 else 1)
            rows.append({"predicted": classes[int(index[0])], "score": round(float(values[0]), 4),
                         "top": [[classes[int(i)], round(float(v), 4)] for v, i in zip(values, index)]})
        return rows

    # ------------------------------------------------------------------ export

    def save(self, folder: str | Path) -> Path:
        """Write the predictor to ``folder``: ``model.safetensors`` (weights), ``config.json``
        (class paths and task settings), ``tokenizer.json`` and ``preprocessing.json``;
        :func:`load` reads it without unpickling anything. Returns the folder."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        # clones: tied weights share storage, which safetensors refuses
        state = {k: v.detach().cpu().contiguous().clone() for k, v in self.model.state_dict().items()}
        save_file(state, str(folder / WEIGHTS_FILE), metadata={"format": EXPORT_FORMAT})
        (folder / CONFIG_FILE).write_text(json.dumps({"format": EXPORT_FORMAT, **self.config}, indent=2) + "\n")
        preprocessing = {k: v for k, v in self.data_state.items() if k != "tokenizer_json"}
        (folder / PREPROCESSING_FILE).write_text(json.dumps(preprocessing, indent=2) + "\n")
        tokenizer_json = self.data_state.get("tokenizer_json")
        if tokenizer_json:
            (folder / TOKENIZER_FILE).write_text(tokenizer_json)
        return folder


def _to_device(batch: MultimodalBatch, device: torch.device) -> MultimodalBatch:
    if device.type == "cpu":
        return batch
    to = getattr(batch, "to", None)
    if callable(to):
        return to(device)
    raise TypeError("MultimodalBatch has no .to(device)")  # pragma: no cover


# ---------------------------------------------------------------------------- loading


def load(path: str | Path, device: str | torch.device = "cpu") -> Predictor:
    """The :class:`Predictor` of a checkpoint (``.ckpt`` written by ``mmctx fit``) or of a
    folder written by :func:`export` / :meth:`Predictor.save`.

    The model is rebuilt from the class paths the checkpoint's hyperparameters record and
    its weights loaded (``torch.load(weights_only=True)``, or safetensors: no pickled code
    runs); the inputs are preprocessed as the training data was (its ``mmctx_data``).

    Raises:
        FileNotFoundError: no such checkpoint or folder.
        ValueError: a checkpoint without the model's config or its data's preprocessing
            (trained outside the ``mmctx`` CLI, or before checkpoints carried it), or a
            task that is neither captioning nor classification.
    """
    path = Path(path)
    if path.is_dir():
        return _load_folder(path, device)
    if not path.is_file():
        raise FileNotFoundError(f"mmctx.load: no checkpoint or exported folder at {str(path)!r}")
    blob = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(blob, dict) or "state_dict" not in blob:
        raise ValueError(f"mmctx.load: {path} is not a Lightning checkpoint (no state_dict)")
    config = predictor_config(blob, str(path))
    data_state = blob.get("mmctx_data")
    if not isinstance(data_state, dict):
        raise ValueError(f"mmctx.load: {path} carries no preprocessing (checkpoint['mmctx_data']); it was saved by an "
                         "older mmctx or without a data module: train again with `mmctx fit`")
    weights = {k[len("model."):]: v for k, v in blob["state_dict"].items() if k.startswith("model.")}
    return _build(config, data_state, weights, device, str(path))


def _load_folder(folder: Path, device: str | torch.device) -> Predictor:
    from safetensors.torch import load_file

    missing = [name for name in (WEIGHTS_FILE, CONFIG_FILE, PREPROCESSING_FILE) if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(f"mmctx.load: {folder} is not an exported predictor (missing {missing})")
    config = json.loads((folder / CONFIG_FILE).read_text())
    if config.pop("format", None) != EXPORT_FORMAT:
        raise ValueError(f"mmctx.load: {folder / CONFIG_FILE} is not in format {EXPORT_FORMAT}")
    data_state = json.loads((folder / PREPROCESSING_FILE).read_text())
    if (folder / TOKENIZER_FILE).is_file():
        data_state["tokenizer_json"] = (folder / TOKENIZER_FILE).read_text()
    return _build(config, data_state, load_file(str(folder / WEIGHTS_FILE), device="cpu"), device, str(folder))


def predictor_config(checkpoint: dict[str, Any], source: str = "checkpoint") -> dict[str, Any]:
    """``{"model": {class_path, init_args}, "task": {class_path, kind, generation | classes}}``
    from a Lightning checkpoint's hyperparameters."""
    hparams = checkpoint.get("hyper_parameters") or {}
    model = hparams.get("model")
    if not isinstance(model, dict) or "class_path" not in model:
        raise ValueError(f"mmctx.load: {source} records no model config (hyper_parameters['model'] with a class_path); "
                         "it was not trained through the mmctx CLI. Build the model in Python and load the weights with "
                         "mmctx.trainers.load_weights")
    task_path = str(hparams.get("_class_path", ""))
    kind = _TASK_KINDS.get(task_path.rpartition(".")[2])
    if kind is None:
        raise ValueError(f"mmctx.load: {source} is a {task_path or 'task'} checkpoint; the predictor serves "
                         f"{sorted(set(_TASK_KINDS))} (captioning and classification)")
    task: dict[str, Any] = {"class_path": task_path, "kind": kind}
    if kind == "captioning":
        task["generation"] = {k: hparams[k] for k in GENERATION_ARGS if k in hparams}
    else:
        task["classes"] = hparams.get("classes")
    return {"model": _plain(model), "task": task}


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def build_model(model_config: dict[str, Any]) -> nn.Module:
    """The ``nn.Module`` of a ``{"class_path", "init_args"}`` config (nested modules too),
    built with jsonargparse as LightningCLI builds it."""
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(nn.Module, "model", fail_untyped=False)
    config = json.loads(json.dumps(model_config))  # parse_object turns nested dicts into Namespaces in place
    return parser.instantiate_classes(parser.parse_object({"model": config})).model


def _build(config: dict[str, Any], data_state: dict[str, Any], weights: dict[str, Tensor],
           device: str | torch.device, source: str) -> Predictor:
    from mmctx.data.inference import InputEncoder

    model = build_model(config["model"])
    ours = model.state_dict()
    problems = [f"missing: {k}" for k in sorted(set(ours) - set(weights))]
    problems += [f"unexpected: {k}" for k in sorted(set(weights) - set(ours))]
    problems += [f"shape {k}: saved {tuple(weights[k].shape)} vs model {tuple(v.shape)}"
                 for k, v in ours.items() if k in weights and weights[k].shape != v.shape]
    if problems:
        raise ValueError(f"mmctx.load: the weights of {source} do not fit the model its config builds:\n  "
                         + "\n  ".join(problems[:20]))
    model.load_state_dict(weights)
    return Predictor(model, InputEncoder.from_state(data_state), config["task"]["kind"], config, data_state, device)


def export(checkpoint: str | Path, folder: str | Path) -> Path:
    """Write a checkpoint's predictor to ``folder`` (see :meth:`Predictor.save`); returns the folder."""
    return load(checkpoint).save(folder)
