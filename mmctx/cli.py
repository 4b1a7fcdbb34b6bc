"""The ``mmctx`` console script: LightningCLI with fit / validate / test / predict.

Usage::

    mmctx fit  --config configs/default.yaml
    mmctx test --config configs/default.yaml --ckpt_path best

Conveniences on top of LightningCLI:

* **A config names the config it builds on** with a first key ``config: base.yaml`` (a path
  relative to the file, or a list of them; jsonargparse's own key for a nested config), and
  holds only what differs. ``--config configs/default.yaml`` loads
  ``configs/base/trainer.yaml``, ``configs/base/classification.yaml`` and then
  ``configs/default.yaml``, exactly as if the three were given as ``--config`` in that order
  (:func:`expand_config_bases`): later files override single values key by key, and replace
  lists (``trainer.callbacks``; ``callbacks+:`` appends) and dicts of modules whole.
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

import re
import sys
from pathlib import Path
from typing import Any, NoReturn

import lightning as L
import yaml
from jsonargparse import ArgumentParser, Namespace
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

__all__ = ["MMCtxCLI", "main", "expand_config_bases", "DATA_SIZES"]

#: Constructor arguments filled from the data module when a config leaves them unset.
DATA_SIZES: tuple[str, ...] = ("vocab_size", "num_classes", "classes", "pad_id", "bos_id", "eos_id")


class MMCtxCLI(LightningCLI):
    """LightningCLI with configs that name their base, data-derived sizes and ``--ckpt_path
    best|last`` resolution."""

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        """Parse the command line (or ``args``) with the bases of its config files first
        (:func:`expand_config_bases`)."""
        if args is None:
            self.config = parser.parse_args(expand_config_bases(sys.argv[1:]))
        else:
            super().parse_arguments(parser, expand_config_bases(list(args)) if isinstance(args, list) else args)

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


def expand_config_bases(args: list[str]) -> list[str]:
    """Put the configs each ``--config FILE`` builds on before it.

    A config file whose YAML has a top-level ``config:`` key (a path relative to the file, or a
    list of paths) becomes ``--config BASE ... --config FILE'``, recursively (a base may name
    its own base), where ``FILE'`` is the file's text without that key. jsonargparse merges the
    resulting ``--config`` list as documented: a later config overrides an earlier one key by
    key, an ``init_args``-only block keeps the earlier ``class_path``, ``callbacks+:`` appends.
    (jsonargparse reads the ``config:`` key itself too, but checks the rest of the file against
    the configs given before the file, not against the one it names: an ``init_args``-only
    override then fails and whole branches of the base are lost.)

    Args:
        args: command-line arguments (``fit --config configs/default.yaml ...``).

    Returns:
        The arguments with every ``--config`` / ``-c`` of a file that names a base expanded;
        anything else unchanged.
    """
    expanded: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg in {"--config", "-c"} and i + 1 < len(args):
            value, i = args[i + 1], i + 2
        elif arg.startswith("--config="):
            value, i = arg.split("=", 1)[1], i + 1
        else:
            expanded.append(arg)
            i += 1
            continue
        expanded += [f"--config={c}" for c in _config_chain(value, ())]
    return expanded


def _config_chain(value: str, seen: tuple[Path, ...]) -> list[str]:
    """The ``--config`` values that load ``value``: the configs it names first, then itself
    (its text without the ``config:`` key when it names any)."""
    path = Path(value)
    if "\n" in value or not path.is_file():
        return [value]  # a config string, or left to jsonargparse's error
    text = path.read_text()
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError:
        return [value]  # jsonargparse reports it
    if not isinstance(loaded, dict) or "config" not in loaded:
        return [value]
    if path.resolve() in seen:
        raise ValueError(f"config: {value} names itself through {' -> '.join(map(str, seen))}")
    bases = loaded["config"] if isinstance(loaded["config"], list) else [loaded["config"]]
    chain: list[str] = []
    for base in bases:
        if not isinstance(base, str):
            raise ValueError(f"{value}: `config:` must name a file or a list of files, got {base!r}")
        base_path = path.parent / base
        if not base_path.is_file():
            raise FileNotFoundError(f"{value}: `config: {base}`: no such file {base_path}")
        chain += _config_chain(str(base_path), (*seen, path.resolve()))
    rest = _without_top_level_key(text, "config")
    if yaml.safe_load(rest) is not None:  # a file holding nothing but `config:` adds nothing
        chain.append(rest)
    return chain


def _without_top_level_key(text: str, key: str) -> str:
    """``text`` without the top-level ``key:`` entry (its line and the lines of its value),
    everything else, comments and anchors included, as written."""
    kept: list[str] = []
    in_key = False
    for line in text.splitlines(keepends=True):
        if re.match(rf"{re.escape(key)}\s*:", line):
            in_key = True
        elif in_key and line.strip() and line[:1] not in {" ", "\t", "-"}:  # the next top-level entry
            in_key = False
        if not in_key:
            kept.append(line)
    return "".join(kept)


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
