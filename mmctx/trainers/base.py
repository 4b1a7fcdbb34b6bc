"""What every mmctx LightningModule shares: optimizer/scheduler wiring and output folders;
initialising submodules from a (pretraining) checkpoint and freezing them."""

from __future__ import annotations

import inspect
import logging
import os
import random
import warnings
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.core.mixins.hparams_mixin import _given_hyperparameters
from torch import nn

log = logging.getLogger(__name__)

__all__ = ["MMCtxTask", "InitFromCheckpoint", "freeze_submodules", "gather_rows", "load_submodules"]


class MMCtxTask(L.LightningModule):
    """Base task: owns the model, builds the optimizer and scheduler passed in from YAML.

    Args:
        model: the plain ``nn.Module`` to train.
        optimizer: a callable ``params -> Optimizer`` (YAML: ``class_path: torch.optim.AdamW``).
        scheduler: a callable ``optimizer -> LRScheduler`` or None; stepped every optimizer
            step when it has ``set_total_steps`` (e.g. :class:`WarmupCosineLR`), else every
            epoch.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(p for p in self.parameters() if p.requires_grad)
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer)
        per_step = hasattr(scheduler, "set_total_steps")
        if per_step:
            scheduler.set_total_steps(int(self.trainer.estimated_stepping_batches))
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step" if per_step else "epoch"},
        }

    def on_train_epoch_start(self) -> None:
        """Make the epoch reproducible on its own: reseed the RNGs from (seed, epoch).

        With ``seed_everything`` set (every config sets it), the data order
        (:class:`~mmctx.data.GlobalBatchSampler`), the worker seeds and — with
        :meth:`on_train_batch_start` — every batch's dropout and other random draws depend on
        (seed, epoch, batch) only, not on everything drawn before. So ``mmctx fit
        --ckpt_path last`` after a kill reproduces the uninterrupted run exactly, from an
        epoch-end or a mid-epoch checkpoint: Lightning restores weights, optimizer, scheduler
        and loop counters, but neither the RNG states nor (for a plain DataLoader) the
        position in the epoch (see :meth:`on_train_start`). Without a global seed nothing is
        reseeded.
        """
        _reseed(self.current_epoch, -1)

    def on_train_start(self) -> None:
        """Resuming from a checkpoint taken in the middle of an epoch: Lightning counts the
        batches already trained in that epoch and runs only the rest, but a plain DataLoader
        would hand it the *first* batches of the epoch again. Tell the sampler to skip the
        trained ones (and reseed as at the epoch's start, since Lightning does not call
        ``on_train_epoch_start`` for an epoch it resumes)."""
        fit_loop = self.trainer.fit_loop
        done = fit_loop.epoch_loop.batch_progress.current.processed  # batches whose step ran
        sampler = getattr(self.trainer.train_dataloader, "sampler", None)
        if fit_loop.restarted_mid_epoch and 0 < done < self.trainer.num_training_batches:
            if not hasattr(sampler, "skip_batches"):
                log.warning("resuming in the middle of epoch %d with a sampler that cannot skip batches: "
                            "its first %d batches are trained on again", self.current_epoch, done)
                return
            _reseed(self.current_epoch, -1)
            sampler.skip_batches(done)
            log.warning(
                "resuming in the middle of epoch %d: the first %d batch(es) of its order are skipped "
                "(already trained on before the checkpoint)", self.current_epoch, done
            )
            # Lightning warns next that a plain DataLoader cannot resume mid-epoch; this one just did
            warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended before the epoch ended")

    def on_train_batch_start(self, batch: object, batch_idx: int) -> None:
        """Reseed the RNGs from (seed, epoch, batch index); see :meth:`on_train_epoch_start`."""
        _reseed(self.current_epoch, batch_idx)

    def save_config(self) -> None:
        """``save_hyperparameters()`` that keeps checkpoints loadable without pickled modules.

        Under LightningCLI the hyperparameters are the YAML config (class paths and init
        args), from which ``Task.load_from_checkpoint(path)`` rebuilds the injected modules.
        Built by hand in Python, injected ``nn.Module`` arguments and callables (optimizer
        and scheduler factories) cannot be stored as config: they are left out, so the
        checkpoint still loads with ``weights_only=True``, and must be passed again to
        ``load_from_checkpoint``.
        """
        frame = inspect.currentframe().f_back  # the subclass __init__ whose arguments to save
        if _given_hyperparameters.get() is not None:
            self.save_hyperparameters(frame=frame)
        else:
            plain = (bool, int, float, str, list, tuple, dict, type(None))
            objects = [k for k, v in frame.f_locals.items() if k != "self" and not isinstance(v, plain)]
            self.save_hyperparameters(ignore=objects, frame=frame)

    @property
    def output_dir(self) -> Path:
        """Where sample outputs go: the logger's run folder (beside TensorBoard's events)."""
        trainer = self.trainer
        if trainer.logger is not None and trainer.logger.log_dir is not None:
            return Path(trainer.logger.log_dir)
        return Path(trainer.default_root_dir)


def _checkpoint_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The weights of a Lightning checkpoint (``state_dict``, the task's leading ``model.``
    dropped) or of a plain ``torch.save(model.state_dict())`` file, read with
    ``weights_only=True`` (no pickled code runs)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"init_from: checkpoint {str(path)!r} not found")
    if path.suffix == ".safetensors":  # e.g. written by mmctx.trainers.SafetensorsCheckpoint
        from safetensors.torch import load_file

        return {k.removeprefix("model."): v for k, v in load_file(path, device="cpu").items()}
    blob = torch.load(path, map_location="cpu", weights_only=True)
    state = blob.get("state_dict", blob) if isinstance(blob, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"init_from: {path} holds neither a Lightning checkpoint nor a state dict")
    return {k.removeprefix("model."): v for k, v in state.items()}


def _resolve(root: nn.Module, name: str, what: str) -> nn.Module:
    try:
        return root.get_submodule(name)
    except AttributeError:
        children = sorted(n for n, _ in root.named_modules() if n and n.count(".") <= 1)
        raise ValueError(f"{what}: the model has no submodule {name!r} (it has: {children})") from None


def load_submodules(root: nn.Module, checkpoint: str | Path, modules: list[str]) -> list[str]:
    """Copy the weights of the submodules ``modules`` of ``root`` from ``checkpoint``.

    Each name is a submodule path of ``root`` (e.g. ``"encoders.image"``, ``"fusion"``, or
    ``""`` for ``root`` itself); the
    checkpoint's keys under the same prefix must match the submodule's state dict exactly:
    same names, same shapes, nothing missing and nothing extra. Keys under other prefixes are
    ignored (a pretraining checkpoint also holds projections and pretraining heads).

    Returns:
        The names of the tensors loaded (relative to ``root``).

    Raises:
        ValueError: naming every missing, unexpected and shape-mismatched key; nothing is
            loaded then.
    """
    source = _checkpoint_weights(checkpoint)
    updates: dict[str, tuple[nn.Module, dict[str, torch.Tensor]]] = {}
    problems: list[str] = []
    for name in modules:
        module = _resolve(root, name, "init_from")
        prefix = f"{name}." if name else ""  # "" is root itself: the whole checkpoint must match
        theirs = {k[len(prefix):]: v for k, v in source.items() if k.startswith(prefix)}
        ours = module.state_dict()
        if not theirs:
            present = sorted({".".join(k.split(".")[:2]) for k in source})
            problems.append(f"no weights for {name!r} in the checkpoint (it has {present})")
            continue
        missing = sorted(set(ours) - set(theirs))
        unexpected = sorted(set(theirs) - set(ours))
        shapes = [
            f"{prefix}{k}: checkpoint {tuple(theirs[k].shape)} vs model {tuple(v.shape)}"
            for k, v in ours.items()
            if k in theirs and theirs[k].shape != v.shape
        ]
        problems += [f"missing in checkpoint: {prefix}{k}" for k in missing]
        problems += [f"not in the model: {prefix}{k}" for k in unexpected]
        problems += [f"shape mismatch {s}" for s in shapes]
        updates[name] = (module, theirs)
    if problems:
        shown = "\n  ".join(problems[:40]) + (f"\n  ... and {len(problems) - 40} more" if len(problems) > 40 else "")
        raise ValueError(f"init_from: {checkpoint} does not match the model's {modules}:\n  {shown}")
    loaded = []
    for name, (module, theirs) in updates.items():
        module.load_state_dict(theirs, strict=True)
        loaded += [f"{name}.{k}" if name else k for k in theirs]
    return loaded


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


def _reseed(epoch: int, batch: int) -> None:
    """Seed torch, numpy and random from (PL_GLOBAL_SEED, epoch, batch); nothing without a seed."""
    seed = os.environ.get("PL_GLOBAL_SEED")
    if seed is not None:
        value = ((int(seed) * 1_000_003 + epoch) * 1_000_003 + batch + 1) % 2**32
        torch.manual_seed(value)
        np.random.seed(value)
        random.seed(value)


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


def gather_rows(rows: list[dict], world_size: int) -> list[dict]:
    """Every rank's rows on every rank (DDP), duplicates dropped by id (a distributed
    sampler repeats samples to even out the ranks)."""
    if world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
        parts: list[list[dict] | None] = [None] * world_size
        torch.distributed.all_gather_object(parts, rows)
        rows = [row for part in parts for row in (part or [])]
    seen: set[str] = set()
    unique = []
    for row in rows:
        if row["id"] not in seen:
            seen.add(row["id"])
            unique.append(row)
    return unique
