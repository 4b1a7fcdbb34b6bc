"""The ``mmctx`` console script: LightningCLI with fit / validate / test / predict.

Usage::

    mmctx fit  --config configs/default.yaml
    mmctx test --config configs/default.yaml --ckpt_path best

Two conveniences on top of LightningCLI:

* **Sizes the data knows** — ``vocab_size``, ``num_classes``, ``classes`` and the special
  token ids ``pad_id``, ``bos_id``, ``eos_id`` — are
  never written in a config. Any ``init_args`` entry with one of these names, anywhere in
  the model's tree of ``class_path`` blocks, that the config leaves unset is filled from the
  data module's attribute of the same name; a value set in the config that disagrees with
  the data is an error naming both. (jsonargparse's ``link_arguments`` does the same for
  fixed paths, but fails when an optional branch — e.g. a text encoder — is absent.)
  Classes a manifest data module finds itself (``classes.json`` or the labels) are written
  into its own config as well, so the saved ``config.yaml`` pins them.
* ``--ckpt_path best`` / ``last`` for ``validate``, ``test`` and ``predict`` in a new
  process: the newest ``best.ckpt`` / ``last.ckpt`` under the logger's run folders is used,
  and the run logs into that same folder, beside the training logs. ``mmctx fit --ckpt_path
  last`` resumes a killed run the same way: its checkpoints and TensorBoard events go on in
  the run's own folder, and optimizer, scheduler, epoch, data order and random draws are as
  in an uninterrupted run (see ``mmctx.data.GlobalBatchSampler`` and
  ``mmctx.trainers.MMCtxTask.on_train_start``).
* Checkpoints are written atomically (``mmctx.trainers.AtomicCheckpointIO`` is the default
  ``trainer.plugins``), so a kill never leaves a half-written ``last.ckpt``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, NoReturn

import lightning as L
from jsonargparse import ArgumentParser, Namespace
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

__all__ = ["MMCtxCLI", "main", "DATA_SIZES"]

#: Constructor arguments filled from the data module when a config leaves them unset.
DATA_SIZES: tuple[str, ...] = ("vocab_size", "num_classes", "classes", "pad_id", "bos_id", "eos_id")


class MMCtxCLI(LightningCLI):
    """LightningCLI with data-derived sizes and ``--ckpt_path best|last`` resolution."""

    def before_instantiate_classes(self) -> None:
        cfg = self.config[self.subcommand] if self.subcommand else self.config
        if cfg.get("data") is not None and cfg.get("model") is not None:
            sizes = _data_sizes(cfg.data)
            _fill_sizes(cfg.model, sizes, "model")
            data_args = cfg.data.get("init_args") if isinstance(cfg.data, Namespace) else None
            if "classes" in sizes and data_args is not None and "classes" in data_args and data_args.classes is None:
                # classes found by the data module (classes.json, or the labels) are written into
                # its config too: the saved config.yaml pins them, and the data module's logged
                # hyperparameters agree with the task's (Lightning refuses a mismatch)
                data_args.classes = sizes["classes"]
        if self.subcommand in {"fit", "validate", "test", "predict"} and cfg.get("ckpt_path") in {"best", "last"}:
            _resolve_checkpoint(cfg)


class MMCtxArgumentParser(LightningArgumentParser):
    """LightningCLI's parser whose errors also name the valid choices: for an unknown init
    argument of a class, that class's arguments (closest first); for a class path that does
    not exist, the public names of its module."""

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        hints = _hints(message)
        super().error(f"{message}\n{hints}" if hints else message, ex)


def _hints(message: str) -> str:
    """'did you mean' lines for the unknown options and class paths named in ``message``."""
    import difflib
    import importlib
    import inspect
    import re

    hints: dict[str, str] = {}
    for class_path, option in re.findall(r"class_path '([\w.]+)':\s+Option '(\w+)' is not accepted", message):
        module, _, name = class_path.rpartition(".")
        try:
            params = [p for p in inspect.signature(getattr(importlib.import_module(module), name)).parameters if p != "self"]
        except (ImportError, AttributeError, TypeError, ValueError):
            continue
        close = difflib.get_close_matches(option, params, n=3, cutoff=0.5)
        hints[option] = f"{class_path} has no argument {option!r}" + (
            f"; did you mean {' or '.join(map(repr, close))}?" if close else "") + f" Its arguments: {params}"
    for module, name in re.findall(r"module '([\w.]+)' has no attribute '(\w+)'", message):
        try:
            public = list(getattr(importlib.import_module(module), "__all__", []))
        except ImportError:
            continue
        close = difflib.get_close_matches(name, public, n=3, cutoff=0.5)
        hints[f"{module}.{name}"] = f"{module} has no {name!r}" + (
            f"; did you mean {' or '.join(f'{module}.{c}' for c in close)}?" if close else "") + f" It has: {public}"
    return "\n".join(hints.values())


def _data_sizes(data_cfg: Namespace) -> dict[str, Any]:
    """Build the data module from its config (cheap: constructors read no data) and read
    the sizes it knows."""
    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(L.LightningDataModule, "data", fail_untyped=False)
    init = parser.instantiate_classes(parser.parse_object({"data": data_cfg.as_dict()}))
    datamodule = init.data
    sizes: dict[str, Any] = {}
    for name in DATA_SIZES:
        try:
            value = getattr(datamodule, name)
        except AttributeError:
            continue
        if value is not None:
            sizes[name] = list(value) if isinstance(value, (list, tuple)) else value
    return sizes


def _fill_sizes(node: Any, sizes: dict[str, Any], path: str) -> None:
    """Fill unset data-size arguments in every ``class_path`` block under ``node``."""
    if isinstance(node, Namespace):
        if "class_path" in node and isinstance(node.get("init_args"), Namespace):
            init_args = node.init_args
            for name, value in sizes.items():
                if name not in init_args:
                    continue
                current = init_args[name]
                if current is None:
                    init_args[name] = value
                elif current != value:
                    raise ValueError(
                        f"config: {path}.init_args.{name} = {current!r}, but the data module says {value!r}; "
                        f"remove it from the config (it is filled in from the data)"
                    )
            _fill_sizes(init_args, sizes, f"{path}.init_args")
        else:
            for key, value in vars(node).items():  # direct children (keys() would flatten)
                _fill_sizes(value, sizes, f"{path}.{key}")
    elif isinstance(node, dict):
        for key, value in node.items():
            _fill_sizes(value, sizes, f"{path}.{key}")
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            _fill_sizes(value, sizes, f"{path}[{i}]")


def _resolve_checkpoint(cfg: Namespace) -> None:
    """Turn ``ckpt_path: best|last`` into the newest such checkpoint of this experiment."""
    which = cfg.ckpt_path
    logger = cfg.trainer.get("logger")
    if isinstance(logger, list):
        logger = logger[0] if logger else None
    init = logger.get("init_args") if isinstance(logger, Namespace) else None
    save_dir = init.get("save_dir") if init is not None else None
    if save_dir is None:
        raise ValueError(f"--ckpt_path {which}: needs trainer.logger with a save_dir (e.g. TensorBoardLogger)")
    root = Path(save_dir) / str(init.get("name") or "lightning_logs")
    found = sorted(root.glob(f"*/checkpoints/{which}.ckpt"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise FileNotFoundError(f"--ckpt_path {which}: no {which}.ckpt under {root}/*/checkpoints; run `mmctx fit` first")
    ckpt = found[-1]
    cfg.ckpt_path = str(ckpt)
    if "version" in init:
        init.version = ckpt.parent.parent.name  # log beside the training run
    print(f"--ckpt_path {which} → {ckpt}", flush=True)


def main(args: list[str] | None = None) -> None:
    """Entry point of the ``mmctx`` console script."""
    MMCtxCLI(
        L.LightningModule,
        L.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        auto_configure_optimizers=False,
        save_config_kwargs={"overwrite": True},
        parser_class=MMCtxArgumentParser,
        trainer_defaults={"plugins": [{"class_path": "mmctx.trainers.AtomicCheckpointIO"}]},
        args=args,
    )


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
