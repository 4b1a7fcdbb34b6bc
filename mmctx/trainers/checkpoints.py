"""Checkpoint I/O, all in one place: reading checkpoints (``weights_only``, never pickled code),
the one weight-loading function every task and callback uses (:func:`load_state`: names and
shapes checked, every missing, unexpected and mis-shaped key reported), fine-tuning from a
checkpoint (:class:`InitFromCheckpoint`), and writing checkpoints atomically, also as
safetensors. :data:`MOVED_CLASS_PATHS` names the class paths that moved, so a checkpoint
that records an old one fails with a message saying where it went."""

from __future__ import annotations

import importlib
import os
import pickle
import re
import secrets
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO
from torch import Tensor, nn

__all__ = [
    "MOVED_CLASS_PATHS",
    "AtomicCheckpointIO",
    "Checkpoint",
    "InitFromCheckpoint",
    "SafetensorsCheckpoint",
    "atomic_write",
    "check_moved_class_paths",
    "freeze_submodules",
    "load_state",
    "load_submodules",
    "load_weights",
    "mismatch_report",
    "read_checkpoint",
    "read_weights",
    "save_safetensors",
    "state_mismatches",
]

_DEPLOY_NAMES = (
    "QUANTIZABLE", "PRUNABLE", "quantize_dynamic_int8", "quantized_modules", "prunable_parameters",
    "prune_magnitude", "SparsitySchedule", "make_pruning_permanent", "sparsity", "model_size_bytes",
    "distillation_loss",
)
_EXPORT_NAMES = (
    "ExportImageEncoder", "ExportAudioEncoder", "ExportableModel", "exportable", "example_inputs",
    "export_program", "export_onnx",
)

#: Class (and function) paths of mmctx 0.1 that moved in 0.2: old path → new path. A
#: checkpoint's hyperparameters record the ``class_path`` of every module a LightningCLI run
#: built; loading one that names an old path fails with a message naming the new one.
MOVED_CLASS_PATHS: dict[str, str] = {
    **{f"mmctx.compress.{name}": f"mmctx.deploy.{name}" for name in _DEPLOY_NAMES},
    **{f"mmctx.export.{name}": f"mmctx.deploy.{name}" for name in _EXPORT_NAMES},
    "mmctx.trainers.pretraining.PretrainingBackbone": "mmctx.models.PretrainingBackbone",
    "mmctx.trainers.pretraining.recall_at_k": "mmctx.metrics.recall_at_k",
    "mmctx.trainers.pretraining.caption_groups": "mmctx.metrics.caption_groups",
    "mmctx.trainers.guards.AtomicCheckpointIO": "mmctx.trainers.AtomicCheckpointIO",
    "mmctx.trainers.guards.Checkpoint": "mmctx.trainers.Checkpoint",
    "mmctx.trainers.guards.SafetensorsCheckpoint": "mmctx.trainers.SafetensorsCheckpoint",
    "mmctx.trainers.guards.load_weights": "mmctx.trainers.load_weights",
    "mmctx.trainers.guards.atomic_write": "mmctx.trainers.checkpoints.atomic_write",
    "mmctx.trainers.guards.save_safetensors": "mmctx.trainers.checkpoints.save_safetensors",
    "mmctx.trainers.base.InitFromCheckpoint": "mmctx.trainers.InitFromCheckpoint",
    "mmctx.trainers.base.load_submodules": "mmctx.trainers.checkpoints.load_submodules",
    "mmctx.trainers.base.freeze_submodules": "mmctx.trainers.checkpoints.freeze_submodules",
    "mmctx.trainers.base.gather_rows": "mmctx.trainers.distributed.gather_rows",
    "mmctx.trainers.callbacks.JsonlPredictionWriter": "mmctx.trainers.JsonlPredictionWriter",
    "mmctx.trainers.gan.save_image_grid": "mmctx.trainers.writers.save_image_grid",
    "mmctx.trainers.captioning.samples_table": "mmctx.trainers.writers.samples_table",
    # layers / context: one attention family with `window: int | None`, context split by stage
    "mmctx.layers.SlidingWindowAttention": "mmctx.layers.MultiHeadAttention (window=...)",
    "mmctx.layers.SlidingWindowBlock": "mmctx.layers.TransformerBlock (window=...)",
    "mmctx.layers.SlidingWindowEncoder": "mmctx.layers.TransformerEncoder (window=...)",
    "mmctx.layers.local_attention.SlidingWindowAttention": "mmctx.layers.MultiHeadAttention (window=...)",
    "mmctx.layers.local_attention.SlidingWindowBlock": "mmctx.layers.TransformerBlock (window=...)",
    "mmctx.layers.local_attention.SlidingWindowEncoder": "mmctx.layers.TransformerEncoder (window=...)",
    "mmctx.context.SlidingWindowContextEncoder": "mmctx.context.ContextEncoder (window=...)",
    "mmctx.context.sliding.SlidingWindowContextEncoder": "mmctx.context.ContextEncoder (window=...)",
    "mmctx.context.encoder.ContextEncoder": "mmctx.context.ContextEncoder",
    "mmctx.context.WindowedEncoder": "mmctx.context.OverlappingWindowEncoder",
    "mmctx.context.windowed.WindowedEncoder": "mmctx.context.OverlappingWindowEncoder",
    "mmctx.context.memory.RecurrentMemoryEncoder": "mmctx.context.RecurrentMemoryEncoder",
    "mmctx.context.stacked.StackedEncoder": "mmctx.context.StackedEncoder",
    # data: built-in data sets in mmctx.data.builtin, every Lightning data module in datamodules.py
    "mmctx.data.datamodule.MultimodalDataModule": "mmctx.data.MultimodalDataModule",
    "mmctx.data.datamodule.DefaultDataModule": "mmctx.data.DefaultDataModule",
    "mmctx.data.coco.CocoCaptionDataModule": "mmctx.data.CocoCaptionDataModule",
    "mmctx.data.long_range.LongRangeDataModule": "mmctx.data.LongRangeDataModule",
    "mmctx.data.augment.EpochDataLoader": "mmctx.data.EpochDataLoader",
}

_VERSION_MOVED = "0.2"


# ---------------------------------------------------------------------------- moved class paths


def _importable(path: str) -> bool:
    module, _, name = path.rpartition(".")
    try:
        return hasattr(importlib.import_module(module), name)
    except ImportError:
        return False


def _moved_error(old: str, source: str) -> ImportError:
    new = MOVED_CLASS_PATHS[old]
    return ImportError(
        f"{source} refers to `{old}`, which moved to `{new}` in mmctx {_VERSION_MOVED}; replace the old path "
        f"in the config (or build the model in Python and load the weights with mmctx.trainers.load_weights)"
    )


def _strings(tree: Any) -> list[str]:
    if isinstance(tree, str):
        return [tree]
    if isinstance(tree, Mapping):
        return [s for value in tree.values() for s in _strings(value)]
    if isinstance(tree, (list, tuple)):
        return [s for value in tree for s in _strings(value)]
    return []


def check_moved_class_paths(checkpoint: Mapping[str, Any], source: str = "checkpoint") -> None:
    """Raise ``ImportError`` if the hyperparameters of ``checkpoint`` (a loaded Lightning
    checkpoint) name a class path of :data:`MOVED_CLASS_PATHS` that no longer imports; the
    message names the old and the new path. Does nothing otherwise."""
    for key in ("hyper_parameters", "datamodule_hyper_parameters"):
        for text in _strings(checkpoint.get(key, {})):
            if text in MOVED_CLASS_PATHS and not _importable(text):
                raise _moved_error(text, source)


# ---------------------------------------------------------------------------- reading


def read_checkpoint(path: str | Path, caller: str = "read_checkpoint") -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)``: tensors and plain
    containers only, no pickled code runs. A checkpoint that pickled an object of a moved
    class fails with a message naming its new path."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{caller}: checkpoint {str(path)!r} not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        for name in re.findall(r"GLOBAL ([\w.]+)", str(err)):
            if name in MOVED_CLASS_PATHS:
                raise _moved_error(name, f"{caller}: checkpoint {path}") from err
        raise


def read_weights(path: str | Path, caller: str = "read_weights") -> dict[str, Tensor]:
    """The weights of a Lightning checkpoint (``state_dict``, the task's leading ``model.``
    dropped), of a plain ``torch.save(model.state_dict())`` file, or of a ``.safetensors``
    file; never unpickles code (``weights_only=True`` / safetensors)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{caller}: checkpoint {str(path)!r} not found")
    if path.suffix == ".safetensors":  # e.g. written by SafetensorsCheckpoint
        from safetensors.torch import load_file

        return {k.removeprefix("model."): v for k, v in load_file(path, device="cpu").items()}
    blob = read_checkpoint(path, caller)
    state = blob.get("state_dict", blob) if isinstance(blob, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{caller}: {path} holds neither a Lightning checkpoint nor a state dict")
    return {k.removeprefix("model."): v for k, v in state.items()}


# ---------------------------------------------------------------------------- loading


def _resolve(root: nn.Module, name: str, what: str) -> nn.Module:
    try:
        return root.get_submodule(name)
    except AttributeError:
        children = sorted(n for n, _ in root.named_modules() if n and n.count(".") <= 1)
        raise ValueError(f"{what}: the model has no submodule {name!r} (it has: {children})") from None


def state_mismatches(ours: Mapping[str, Any], theirs: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Every difference between a module's state dict ``ours`` and the weights ``theirs``
    meant for it: ``missing in checkpoint: k``, ``not in the model: k`` and
    ``shape mismatch k: checkpoint (..) vs model (..)`` (keys shown with ``prefix``)."""
    problems = [f"missing in checkpoint: {prefix}{k}" for k in sorted(set(ours) - set(theirs))]
    problems += [f"not in the model: {prefix}{k}" for k in sorted(set(theirs) - set(ours))]
    problems += [
        f"shape mismatch {prefix}{k}: checkpoint {tuple(theirs[k].shape)} vs model {tuple(v.shape)}"
        for k, v in ours.items()
        if k in theirs and isinstance(v, Tensor) and isinstance(theirs[k], Tensor) and theirs[k].shape != v.shape
    ]
    return problems


def mismatch_report(problems: list[str]) -> str:
    """The problems of :func:`state_mismatches`, one per indented line (the first 40)."""
    shown = "\n  ".join(problems[:40]) + (f"\n  ... and {len(problems) - 40} more" if len(problems) > 40 else "")
    return f"\n  {shown}"


def load_state(
    root: nn.Module,
    state: Mapping[str, Tensor],
    modules: Sequence[str] = ("",),
    source: str = "the checkpoint",
    caller: str = "load_state",
) -> list[str]:
    """The one way mmctx loads weights: copy ``state`` into the submodules ``modules`` of
    ``root``, after checking that each matches exactly.

    Each name is a submodule path of ``root`` (e.g. ``"encoders.image"``, ``"fusion"``, or
    ``""`` for ``root`` itself); the keys of ``state`` under the same prefix must match the
    submodule's state dict exactly: same names, same shapes, nothing missing and nothing
    extra. Keys under other prefixes are ignored (a pretraining checkpoint also holds
    projections and pretraining heads). :func:`load_submodules`, :func:`load_weights`,
    :class:`InitFromCheckpoint`, ``GANTask(init_encoders_from=...)``, ``DistillationTask``'s
    teacher and every task's ``load_state_dict`` (``Task.load_from_checkpoint``, resuming)
    go through it or its check (:func:`state_mismatches`).

    Args:
        root: the module to load into.
        state: the weights, keys relative to ``root``.
        modules: the submodules to load.
        source: what ``state`` came from, for the error message.
        caller: who asks, for the error message.

    Returns:
        The names of the tensors loaded (relative to ``root``).

    Raises:
        ValueError: naming every missing, unexpected and shape-mismatched key; nothing is
            loaded then.
    """
    updates: dict[str, tuple[nn.Module, dict[str, Tensor]]] = {}
    problems: list[str] = []
    for name in modules:
        module = _resolve(root, name, caller)
        prefix = f"{name}." if name else ""  # "" is root itself: the whole checkpoint must match
        theirs = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if not theirs:
            present = sorted({".".join(k.split(".")[:2]) for k in state})
            problems.append(f"no weights for {name!r} in the checkpoint (it has {present})")
            continue
        problems += state_mismatches(module.state_dict(), theirs, prefix)
        updates[name] = (module, theirs)
    if problems:
        what = type(root).__name__ if list(modules) == [""] else f"the model's {list(modules)}"
        raise ValueError(f"{caller}: {source} does not match {what}:{mismatch_report(problems)}")
    loaded = []
    for name, (module, theirs) in updates.items():
        module.load_state_dict(theirs, strict=True)
        loaded += [f"{name}.{k}" if name else k for k in theirs]
    return loaded


def load_submodules(root: nn.Module, checkpoint: str | Path, modules: list[str], caller: str = "init_from") -> list[str]:
    """Copy the weights of the submodules ``modules`` of ``root`` from the file
    ``checkpoint`` (:func:`read_weights`) with :func:`load_state`; returns the names loaded.

    Raises:
        ValueError: naming every missing, unexpected and shape-mismatched key; nothing is
            loaded then.
    """
    return load_state(root, read_weights(checkpoint, caller), modules, source=str(checkpoint), caller=caller)


def load_weights(module: nn.Module, path: str | Path) -> nn.Module:
    """Load every weight of ``module`` from ``path``, which must match it exactly.

    ``path`` is a ``.safetensors`` file, a Lightning checkpoint (``state_dict``, the task's
    leading ``model.`` dropped) or a ``torch.save(state_dict)`` file, read with
    ``weights_only=True`` — no pickled code runs. It is :func:`load_state` applied to the
    whole module.

    Returns:
        ``module``, loaded.

    Raises:
        ValueError: the checkpoint is of another architecture; the message lists every
            missing, unexpected and mis-shaped key, and nothing is loaded.
    """
    load_submodules(module, path, [""], caller="load_weights")
    return module


def freeze_submodules(root: nn.Module, modules: list[str]) -> list[nn.Module]:
    """Set ``requires_grad=False`` on the parameters of the submodules ``modules`` of
    ``root`` and put them in eval mode (BatchNorm keeps its statistics, dropout is off).
    Returns the frozen modules (keep them in eval mode after every ``train()``)."""
    frozen = []
    for name in modules:
        module = _resolve(root, name, "freeze")
        module.requires_grad_(False)
        module.eval()
        frozen.append(module)
    return frozen


# ---------------------------------------------------------------------------- writing


def save_safetensors(module: nn.Module, path: str | Path) -> Path:
    """Write ``module``'s state dict as safetensors, atomically.

    The file is written to a temporary file in the same folder and moved over ``path`` with
    ``os.replace``, so a crash never leaves a half-written file under the final name.
    Tensors are saved contiguous and on the CPU; tied tensors are stored once per name.
    """
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state: dict[str, Tensor] = {}
    seen: set[int] = set()
    for key, value in module.state_dict().items():
        tensor = value.detach().cpu().contiguous()
        if tensor.untyped_storage().data_ptr() in seen:  # safetensors refuses shared storage
            tensor = tensor.clone()
        seen.add(tensor.untyped_storage().data_ptr())
        state[key] = tensor
    atomic_write(path, lambda tmp: save_file(state, str(tmp), metadata={"format": "pt", "module": type(module).__name__}))
    return path


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, flush it to disk (fsync), then
    move it over ``path`` with ``os.replace`` — atomic on POSIX and Windows within one
    filesystem, which a temporary file in the same folder guarantees. A crash or SIGKILL at
    any moment leaves either the old complete file or the new complete one under ``path``
    (and at worst a stray ``.<name>.*.tmp``), never a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # a unique name beside the target, created like any file (mkstemp's would be mode 0600)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        write(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint I/O that writes every checkpoint atomically (:func:`atomic_write`).

    Lightning's own ``TorchCheckpointIO`` writes through an fsspec transaction whose temporary
    file lives in the system temp folder; when that is another filesystem than the run folder
    the final move is a copy, and a job killed during it leaves a truncated ``last.ckpt``.
    This plug-in writes beside the target instead (local paths; remote URLs fall back to
    Lightning's writer). The ``mmctx`` CLI installs it by default (``trainer.plugins``); in
    Python: ``L.Trainer(plugins=[AtomicCheckpointIO()])``.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None or "://" in str(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        atomic_write(path, lambda tmp: torch.save(checkpoint, tmp))


class Checkpoint(ModelCheckpoint):
    """``ModelCheckpoint`` whose ``last.ckpt`` is the last epoch's, as before Lightning 2.6.

    Since Lightning 2.6.0 ``save_last=True`` rewrites ``last.ckpt`` only when a top-k
    checkpoint is saved at the same step: with ``monitor`` and ``save_top_k=1`` it is a copy
    of the best one, and ``--ckpt_path last`` resumes (or tests) the best epoch, not the last.
    This callback also writes ``last.ckpt`` when no top-k checkpoint was saved. Same
    arguments as ``ModelCheckpoint``; in YAML::

        - class_path: mmctx.trainers.Checkpoint
          init_args: {monitor: val/acc, mode: max, filename: best, save_last: true}
    """

    def _save_last_too(self, trainer: L.Trainer, at_train_epoch_end: bool) -> None:
        if (
            self.save_last is True
            and not self._should_skip_saving_checkpoint(trainer)  # also skips when a save just happened
            and self._should_save_on_train_epoch_end(trainer) == at_train_epoch_end
        ):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        self._save_last_too(trainer, at_train_epoch_end=True)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        self._save_last_too(trainer, at_train_epoch_end=False)


class SafetensorsCheckpoint(Checkpoint):
    """:class:`Checkpoint` that also writes the weights as ``<name>.safetensors`` beside each
    ``<name>.ckpt`` (and removes it with the checkpoint when top-k rotates it out).

    The safetensors file holds the deployable model only: the task's ``model`` (for
    :class:`~mmctx.trainers.DistillationTask` the student, not the teacher), keys relative
    to it, so ``load_weights(FusionModel(...), "best.safetensors")`` works and no pickled code
    is ever needed to read it. It is written atomically (temporary file, then
    ``os.replace``). Same arguments as ``ModelCheckpoint``; in YAML replace its class_path::

        - class_path: mmctx.trainers.SafetensorsCheckpoint
          init_args: {monitor: val/acc, mode: max, filename: best, save_last: true}
    """

    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        super()._save_checkpoint(trainer, filepath)
        if trainer.is_global_zero:
            module = getattr(trainer.lightning_module, "model", trainer.lightning_module)
            save_safetensors(module, Path(filepath).with_suffix(".safetensors"))

    def _remove_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        super()._remove_checkpoint(trainer, filepath)
        if trainer.is_global_zero:
            Path(filepath).with_suffix(".safetensors").unlink(missing_ok=True)


# ---------------------------------------------------------------------------- fine-tuning


class InitFromCheckpoint(L.Callback):
    """Fine-tuning: initialise submodules of the task's model from a pretraining checkpoint,
    and freeze some of them.

    Names are submodule paths of the task's ``model`` (e.g. ``encoders.image``, ``fusion``;
    a :class:`~mmctx.trainers.PretrainingTask` checkpoint stores its encoders and fusion under
    the same paths as :class:`~mmctx.models.FusionModel`). The weights are loaded when
    fitting starts (before the optimizer is built), not when a checkpoint of the fine-tuned
    model is resumed or reloaded (``ckpt_path``, ``load_from_checkpoint``): those already
    hold them. Frozen modules get no gradients, are left out of the optimizer, and stay in
    eval mode throughout.

    YAML (last in ``trainer.callbacks``, so ``--trainer.callbacks.path=...`` overrides it)::

        - class_path: mmctx.trainers.InitFromCheckpoint
          init_args: {path: runs/pretrain/version_0/checkpoints/last.ckpt,
                      modules: [encoders.image, encoders.audio], freeze: [encoders.image]}

    Args:
        path: the checkpoint (Lightning ``.ckpt`` or a plain state dict), loaded with
            ``torch.load(weights_only=True)``; ``None`` loads nothing (train from scratch,
            ``freeze`` still applies).
        modules: submodules to load; each must match the checkpoint exactly (an error lists
            the missing, unexpected and mis-shaped keys).
        freeze: submodules to freeze (loaded or not).
    """

    def __init__(
        self,
        path: str | None = None,
        modules: list[str] = ["encoders"],  # noqa: B006 - never mutated
        freeze: list[str] = [],  # noqa: B006 - never mutated
    ) -> None:
        super().__init__()
        self.path = path
        self.modules = list(modules)
        self.freeze = list(freeze)
        self._frozen: list[nn.Module] = []
        self.loaded: list[str] = []

    @staticmethod
    def _root(pl_module: L.LightningModule) -> nn.Module:
        return getattr(pl_module, "model", pl_module)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        root = self._root(pl_module)
        if stage == "fit" and self.path is not None and trainer.ckpt_path is None and not self.loaded:
            self.loaded = load_submodules(root, self.path, self.modules)
            print(f"init_from: loaded {len(self.loaded)} tensors of {self.modules} from {self.path}", flush=True)
        self._frozen = freeze_submodules(root, self.freeze)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        for module in self._frozen:  # Lightning calls train() each epoch and after validation
            if module.training:
                module.eval()
