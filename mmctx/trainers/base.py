"""What every mmctx LightningModule shares: optimizer/scheduler wiring, reproducible epochs,
output folders, and checked weight loading."""

from __future__ import annotations

import inspect
import logging
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import lightning as L
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.core.mixins.hparams_mixin import _given_hyperparameters
from lightning.pytorch.utilities.model_helpers import _restricted_classmethod
from torch import nn

from mmctx.trainers.checkpoints import check_moved_class_paths, mismatch_report, read_checkpoint, state_mismatches
from mmctx.trainers.seeding import reseed

log = logging.getLogger(__name__)

__all__ = ["DATA_STATE_KEY", "MMCtxTask"]

#: Checkpoint key of the data module's ``inference_state()`` (see :meth:`MMCtxTask.on_save_checkpoint`).
DATA_STATE_KEY = "mmctx_data"


class MMCtxTask(L.LightningModule):
    """Base task: owns the model, builds the optimizer and scheduler passed in from YAML.

    Args:
        model: the plain ``nn.Module`` to train.
        optimizer: a callable ``params -> Optimizer`` (YAML: ``class_path: torch.optim.AdamW``).
        scheduler: a callable ``optimizer -> LRScheduler`` or None; stepped every optimizer
            step when it has ``set_total_steps`` (e.g. :class:`WarmupCosineLR`), else every
            epoch.
        compile: compile with ``torch.compile`` (``nn.Module.compile``, in place: parameter
            names, checkpoints and ``generate`` stay those of the eager model) when the
            trainer sets the task up. ``True``: the model's whole ``forward``; a submodule's
            dotted name of the model, or a list of them (e.g. ``"decoder"``,
            ``["fusion", "decoder"]``): only their ``forward``, the rest stays eager (on a
            CPU, where a compiled CNN's training step can be slower than eager's, compile the
            parts that gain). Inductor runs with :attr:`COMPILE_OPTIONS` (``fallback_random``:
            dropout draws eager's random numbers). The first steps pay the compilation (tens
            of seconds on a CPU); see ``docs/benchmarks.md`` for what it buys.
    """

    #: Inductor options of the ``compile`` switch. ``fallback_random``: random ops (dropout)
    #: draw from ATen's generator as in eager mode, so a seed gives the same masks compiled or
    #: not; on the CPU it was also faster than Inductor's own random numbers (docs/benchmarks.md)
    COMPILE_OPTIONS: ClassVar[dict[str, Any]] = {"fallback_random": True}

    def __init__(
        self,
        model: nn.Module,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        scheduler: LRSchedulerCallable | None = None,
        compile: bool | str | list[str] = False,
    ) -> None:
        super().__init__()
        self.model = model
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        #: the ``compile`` switch (not ``self.compile``, which is ``nn.Module.compile``)
        self.compile_model = compile
        self.compile_targets()  # a bad submodule name fails here, not at the first fit
        #: Inductor options of the compile (``torch.compile(options=...)``)
        self.compile_options: dict[str, Any] | None = dict(self.COMPILE_OPTIONS)
        self._model_compiled = False

    def compile_targets(self) -> list[nn.Module]:
        """The modules the ``compile`` switch compiles: ``[]`` (off), ``[model]`` (``True``)
        or the named submodules of the model."""
        scope = self.compile_model
        if scope is False or scope is None:
            return []
        if scope is True:
            return [self.model]
        names = [scope] if isinstance(scope, str) else list(scope)
        if not names or not all(isinstance(n, str) and n for n in names):
            raise ValueError(f"compile: expected a bool, a submodule name or a list of them, got {scope!r}")
        targets = []
        for name in names:
            try:
                targets.append(self.model.get_submodule(name))
            except AttributeError:
                children = [n for n, _ in self.model.named_children()]
                raise ValueError(
                    f"compile: {type(self.model).__name__} has no submodule {name!r} "
                    f"(its children: {children}; nested ones by dotted name, e.g. 'encoders.image')"
                ) from None
        return targets

    def configure_model(self) -> None:
        """Compile the model (or the ``compile`` switch's submodules) once when ``compile`` is
        set (Lightning calls this hook at the start of fit, validate, test and predict)."""
        if self.compile_model and not self._model_compiled:
            for module in self.compile_targets():
                module.compile(options=self.compile_options)
            self._model_compiled = True

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(p for p in self.parameters() if p.requires_grad)
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer)
        per_step = hasattr(scheduler, "set_total_steps")
        if per_step:
            total = int(self.trainer.estimated_stepping_batches)
            scheduler.set_total_steps(total)
            warmup = getattr(scheduler, "warmup_steps", None)
            if isinstance(warmup, int) and warmup > total:
                # a warning, not an error: short runs of a config sized for the full run (smoke
                # tests, --trainer.limit_train_batches, small data) are legitimate
                warnings.warn(
                    f"the learning-rate warm-up ({type(scheduler).__name__} warmup_steps={warmup}) is longer than "
                    f"the whole run ({total} optimizer steps): the learning rate never reaches its peak; "
                    f"set --model.init_args.scheduler.init_args.warmup_steps to at most {total} (e.g. {total // 10})",
                    UserWarning,
                    stacklevel=2,
                )
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
        reseed(self.current_epoch, -1)

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
            reseed(self.current_epoch, -1)
            sampler.skip_batches(done)
            log.warning(
                "resuming in the middle of epoch %d: the first %d batch(es) of its order are skipped "
                "(already trained on before the checkpoint)", self.current_epoch, done
            )
            # Lightning warns next that a plain DataLoader cannot resume mid-epoch; this one just did
            warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended before the epoch ended")

    def on_train_batch_start(self, batch: object, batch_idx: int) -> None:
        """Reseed the RNGs from (seed, epoch, batch index); see :meth:`on_train_epoch_start`."""
        reseed(self.current_epoch, batch_idx)

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

    def default_callbacks(self, *kinds: type[L.Callback]) -> list[L.Callback]:
        """A new callback of each of ``kinds`` that the trainer does not have yet, for
        ``configure_callbacks``: a task adds its default writers itself, and Lightning would
        otherwise replace a writer the user configured by the task's."""
        callbacks = self._trainer.callbacks if self._trainer is not None else []
        return [kind() for kind in kinds if not any(isinstance(c, kind) for c in callbacks)]

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Store the data module's preprocessing (``inference_state()``: class path and the
        preprocessing arguments, tokenizer JSON, classes) as ``checkpoint["mmctx_data"]``, so
        ``mmctx test/predict`` and :func:`mmctx.load` rebuild the inputs without the training
        config. A data module without ``inference_state`` stores nothing."""
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        state = getattr(datamodule, "inference_state", None)
        if callable(state):
            checkpoint[DATA_STATE_KEY] = state()

    @property
    def output_dir(self) -> Path:
        """Where sample outputs go: the logger's run folder (beside TensorBoard's events)."""
        trainer = self.trainer
        if trainer.logger is not None and trainer.logger.log_dir is not None:
            return Path(trainer.logger.log_dir)
        return Path(trainer.default_root_dir)

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False):
        """``nn.Module.load_state_dict`` with mmctx's check first when ``strict``
        (:func:`~mmctx.trainers.checkpoints.state_mismatches`, as in
        :func:`~mmctx.trainers.checkpoints.load_state`): a checkpoint of another
        architecture (``Task.load_from_checkpoint``, ``--ckpt_path``) is refused with every
        missing, unexpected and mis-shaped key named, and nothing is loaded."""
        if strict:
            problems = state_mismatches(self.state_dict(), state_dict)
            if problems:
                raise ValueError(f"{type(self).__name__}.load_state_dict: the checkpoint does not match the task:"
                                 f"{mismatch_report(problems)}")
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    @_restricted_classmethod
    def load_from_checkpoint(cls, checkpoint_path, map_location=None, hparams_file=None, strict=None, weights_only=None,
                             **kwargs: Any):
        """Lightning's ``load_from_checkpoint``; a checkpoint whose config names a class path
        that moved (:data:`~mmctx.trainers.checkpoints.MOVED_CLASS_PATHS`) fails with a
        message naming the new path."""
        try:
            return super().load_from_checkpoint(checkpoint_path, map_location, hparams_file, strict, weights_only, **kwargs)
        except Exception:
            if isinstance(checkpoint_path, (str, Path)) and Path(checkpoint_path).is_file():
                blob = read_checkpoint(checkpoint_path, f"{cls.__name__}.load_from_checkpoint")
                if isinstance(blob, dict):
                    check_moved_class_paths(blob, f"checkpoint {checkpoint_path}")
            raise
