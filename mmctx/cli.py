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

import os
import re
import sys
from pathlib import Path
from typing import Any, NoReturn

import lightning as L
import yaml
from jsonargparse import ArgumentParser, Namespace
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

__all__ = [
    "DATA_SIZES",
    "PREPROCESSING_ARGS",
    "MMCtxCLI",
    "UsageError",
    "check_task_fits_data",
    "expand_config_bases",
    "main",
    "restore_data_config",
    "user_error_report",
    "user_errors",
]

#: Constructor arguments filled from the data module when a config leaves them unset.
DATA_SIZES: tuple[str, ...] = ("vocab_size", "num_classes", "classes", "pad_id", "bos_id", "eos_id")


class MMCtxCLI(LightningCLI):
    """LightningCLI with configs that name their base, data-derived sizes, ``--ckpt_path
    best|last`` resolution, data settings restored from the checkpoint, and a data module
    built once per run."""

    #: the data block given in config files or on the command line (no defaults), for
    #: validate / test / predict: what the checkpoint's data settings may not contradict
    _explicit_data: Namespace | None = None
    #: the data module built before the model (to read its sizes), handed to LightningCLI
    _datamodule: L.LightningDataModule | None = None

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        """Parse the command line (or ``args``) with the bases of its config files first
        (:func:`expand_config_bases`)."""
        argv = expand_config_bases(sys.argv[1:] if args is None else list(args)) if not isinstance(
            args, (dict, Namespace)) else None
        if args is None:
            self.config = parser.parse_args(argv)
        else:
            super().parse_arguments(parser, argv if argv is not None else args)
        subcommand = self.config.get("subcommand")
        if argv is not None and subcommand in _EVAL_SUBCOMMANDS and self.config[subcommand].get("ckpt_path"):
            explicit = parser.parse_args(argv, defaults=False)[subcommand]
            self._explicit_data = explicit.get("data")

    def _add_instantiators(self) -> None:
        super()._add_instantiators()
        # the data module built in before_instantiate_classes is the run's data module
        self.parser.add_instantiator(_PrebuiltData(self), L.LightningDataModule, subclasses=True, prepend=True)

    def before_instantiate_classes(self) -> None:
        cfg = self.config[self.subcommand] if self.subcommand else self.config
        if self.subcommand in _EVAL_SUBCOMMANDS:  # keep the fit's config.yaml (its seed, its settings)
            self.save_config_kwargs = {**self.save_config_kwargs, "config_filename": f"config_{self.subcommand}.yaml"}
        if self.subcommand in {"fit", "validate", "test", "predict"} and cfg.get("ckpt_path") in {"best", "last"}:
            _resolve_checkpoint(cfg)
        if self.subcommand in _EVAL_SUBCOMMANDS and cfg.get("ckpt_path") and isinstance(cfg.get("data"), Namespace):
            checkpoint = _read_checkpoint_hparams(cfg.ckpt_path)
            if checkpoint is not None:
                self.config = restore_data_config(self.parser, self.config, self.subcommand, checkpoint,
                                                  self._explicit_data, cfg.ckpt_path)
                cfg = self.config[self.subcommand]
                check_task_fits_data(checkpoint, cfg, self.subcommand, cfg.ckpt_path)
        if cfg.get("data") is not None and cfg.get("model") is not None:
            self._datamodule = _build_datamodule(cfg.data)
            sizes = _data_sizes(self._datamodule)
            _fill_sizes(cfg.model, sizes, "model")
            data_args = cfg.data.get("init_args") if isinstance(cfg.data, Namespace) else None
            if "classes" in sizes and data_args is not None and "classes" in data_args and data_args.classes is None:
                # classes found by the data module (classes.json, or the labels) are written into
                # its config too: the saved config.yaml pins them, and the data module's logged
                # hyperparameters agree with the task's (Lightning refuses a mismatch)
                data_args.classes = sizes["classes"]


#: subcommands that evaluate or apply a checkpoint (its data settings are restored)
_EVAL_SUBCOMMANDS = ("validate", "test", "predict")


class _PrebuiltData:
    """A jsonargparse instantiator that hands LightningCLI the data module the CLI already
    built (once, to read its sizes), with the hyperparameters LightningCLI would give it."""

    def __init__(self, cli: MMCtxCLI) -> None:
        self.cli = cli

    def __call__(self, class_type: type, *args: Any, applied_instantiation_links: dict | None = None, **kwargs: Any):
        datamodule = self.cli._datamodule
        if datamodule is None or type(datamodule) is not class_type:
            from lightning.pytorch.cli import _InstantiatorFn

            return _InstantiatorFn(self.cli, "data")(class_type, *args, applied_instantiation_links=applied_instantiation_links or {},
                                                     **kwargs)
        self.cli._datamodule = None  # handed over once
        self.cli._dump_config()
        dumped = self.cli.config_dump.get("data", {})
        hparams = {"_class_path": dumped["class_path"], **dumped.get("init_args", {}), **dumped.get("dict_kwargs", {}),
                   "_instantiator": "lightning.pytorch.cli.instantiate_module"}
        # what LightningCLI's own instantiation would have saved (save_hyperparameters under
        # its context): the final config, classes filled in, and the class path
        from lightning.fabric.utilities.data import AttributeDict

        datamodule._hparams = AttributeDict(hparams)
        datamodule._hparams_initial = AttributeDict(dict(hparams))
        return datamodule


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


def _build_datamodule(data_cfg: Namespace) -> L.LightningDataModule:
    """Build the data module from its config (cheap: constructors read no data). The CLI
    builds it once per run, here, and hands the instance to LightningCLI
    (:class:`_PrebuiltData`)."""
    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(L.LightningDataModule, "data", fail_untyped=False)
    return parser.instantiate_classes(parser.parse_object({"data": data_cfg.as_dict()})).data


def _data_sizes(datamodule: Any) -> dict[str, Any]:
    """The sizes (:data:`DATA_SIZES`) a data module knows."""
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
        raise UsageError(f"--ckpt_path {which}: no {which}.ckpt under {root}/*/checkpoints; run `mmctx fit` first")
    ckpt = found[-1]
    cfg.ckpt_path = str(ckpt)
    if which == "best":
        _warn_if_never_improved(ckpt)
    if "version" in init:
        init.version = ckpt.parent.parent.name  # log beside the training run
    print(f"--ckpt_path {which} → {ckpt}", flush=True)


class UsageError(ValueError):
    """A run that cannot be what the user meant (a flag that contradicts the checkpoint, a
    checkpoint whose task does not fit the data). The CLI prints it as one short block."""


#: Data-module arguments that decide what the model sees (the preprocessing), used when the
#: checkpoint has no ``mmctx_data`` (its data module has no ``inference_state``).
PREPROCESSING_ARGS: tuple[str, ...] = (
    "modalities", "tokenizer", "classes", "image_size", "sample_rate", "max_audio_seconds", "max_text_len",
    "text_field", "image_field", "audio_field", "caption_field", "label_field", "min_word_frequency",
    "mean", "std", "interpolation", "preprocessing",
)
#: Data-module arguments of training only: never restored from a checkpoint.
_TRAINING_ONLY_ARGS = ("augment", "label_fraction")


def _read_checkpoint_hparams(path: str | Path) -> dict[str, Any] | None:
    """The hyperparameters, data-module hyperparameters and ``mmctx_data`` of a checkpoint
    (read with ``weights_only=True``, memory-mapped), or None for a file that is not one."""
    import torch

    path = Path(path)
    if not path.is_file():
        return None
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - not a zip checkpoint: Lightning reports it when loading
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # noqa: BLE001
            return None
    if not isinstance(blob, dict):
        return None
    keys = ("hyper_parameters", "datamodule_hyper_parameters", "mmctx_data", "callbacks", "epoch")
    return {k: blob[k] for k in keys if k in blob}


def _plain(value: Any) -> Any:
    """``value`` as plain JSON-like data, for comparing a config value with a saved one."""
    if isinstance(value, Namespace):
        value = value.as_dict()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def restore_data_config(parser: Any, config: Namespace, subcommand: str, checkpoint: dict[str, Any],
                        explicit: Namespace | None, ckpt_path: str | Path) -> Namespace:
    """The config with the data settings the checkpoint was trained with.

    Every data-module argument the checkpoint recorded (``datamodule_hyper_parameters``,
    and the preprocessing of ``mmctx_data``) that the config files and command line do not
    set is taken from the checkpoint; with another data-module class, only the
    preprocessing arguments it shares. An explicit value of a preprocessing argument
    (image size, tokenizer, modalities, ...) that differs from the checkpoint's is a
    :class:`UsageError` naming both; other explicit values (data paths, batch size) win.
    """
    saved = dict(checkpoint.get("datamodule_hyper_parameters") or {})
    state = checkpoint.get("mmctx_data") or {}
    saved_class = saved.get("_class_path") or state.get("class_path")
    saved_args = {k: v for k, v in saved.items() if not k.startswith("_") and k not in _TRAINING_ONLY_ARGS}
    state_args = dict(state.get("init_args") or {})
    if state.get("classes") is not None:
        state_args.setdefault("classes", state["classes"])
    preprocessing = set(state_args) | set(PREPROCESSING_ARGS)
    saved_args.update(state_args)
    if not saved_args:
        return config
    data = config[subcommand].data
    init = data.get("init_args") or Namespace()
    same_class = data.get("class_path") == saved_class
    given = explicit.get("init_args") if isinstance(explicit, Namespace) else None
    given = given if isinstance(given, Namespace) else Namespace()
    overrides: dict[str, Any] = {}
    conflicts: list[str] = []
    for name, value in saved_args.items():
        if name not in init or (not same_class and name not in preprocessing):
            continue
        if name in given:
            if name in preprocessing and _plain(given[name]) != _plain(value):
                conflicts.append(f"--data.{name}: the checkpoint was trained with {_plain(value)!r}, "
                                 f"this run gives {_plain(given[name])!r}")
            continue
        if _plain(init[name]) != _plain(value):
            overrides[name] = _plain(value)
    if conflicts:
        raise UsageError(
            f"checkpoint {ckpt_path}: the data settings contradict the ones it was trained with:\n  "
            + "\n  ".join(conflicts)
            + "\n  fix: leave them out (the checkpoint's values are used), or train with the new values"
        )
    if overrides:
        update = {subcommand: {"data": {"class_path": data.class_path, "init_args": overrides}}}
        config = parser.parse_object(update, config)
        shown = ", ".join(f"{k}={v!r}" for k, v in overrides.items() if k in preprocessing)
        if shown:
            print(f"data settings from the checkpoint: {shown}", flush=True)
    return config


def check_task_fits_data(checkpoint: dict[str, Any], cfg: Namespace, subcommand: str, ckpt_path: str | Path) -> None:
    """Raise :class:`UsageError` when the checkpoint's task cannot read the data: none of the
    modalities the data gives has an encoder in the model, or ``test``/``validate`` of a
    captioning (classification) task on data without captions (labels)."""
    hparams = checkpoint.get("hyper_parameters") or {}
    task = str(hparams.get("_class_path", "the task"))
    data = cfg.get("data")
    init = data.get("init_args") if isinstance(data, Namespace) else None
    if init is None:
        return
    where = f"checkpoint {ckpt_path}: its task {task}"
    data_class = data.get("class_path", "the data module")
    model = hparams.get("model")
    encoders = model.get("init_args", {}).get("encoders") if isinstance(model, dict) else None
    modalities = init.get("modalities")
    if isinstance(encoders, dict) and encoders and modalities is not None and not set(modalities) & set(encoders):
        raise UsageError(f"{where} reads {sorted(encoders)}, but the data ({data_class}) gives {list(modalities)}; "
                         f"fix: --data.modalities={sorted(encoders)}")
    if subcommand in {"test", "validate"}:
        if task.endswith("CaptioningTask") and "caption_field" in init and init.caption_field is None:
            raise UsageError(f"{where} is scored against captions, but the data ({data_class}) has caption_field=None; "
                             "fix: --data.caption_field=caption (or use `mmctx predict`)")
        if task.endswith("ClassificationTask") and "label_field" in init and init.label_field is None:
            raise UsageError(f"{where} is scored against labels, but the data ({data_class}) has label_field=None; "
                             "fix: --data.label_field=label (or use `mmctx predict`)")


def _warn_if_never_improved(best: Path) -> None:
    """Warn when ``best.ckpt`` is the run's first evaluated epoch although the run went on
    (the ``last.ckpt`` beside it is later): the monitored metric never improved, and the
    "best" model is the first one."""
    import warnings

    best_blob = _read_checkpoint_hparams(best)
    last_blob = _read_checkpoint_hparams(best.with_name("last.ckpt"))
    if best_blob is None or last_blob is None:
        return
    best_epoch, last_epoch = best_blob.get("epoch"), last_blob.get("epoch")
    if not isinstance(best_epoch, int) or not isinstance(last_epoch, int) or best_epoch != 0 or last_epoch <= 0:
        return
    monitor, score = "the monitored metric", None
    for key, state in (best_blob.get("callbacks") or {}).items():
        if isinstance(state, dict) and state.get("monitor") and "best_model_score" in state:
            monitor, score = state["monitor"], state["best_model_score"]
            break
    shown = f" (stayed at {float(score):.4g})" if score is not None else ""
    warnings.warn(
        f"--ckpt_path best: {monitor} never improved after epoch 0{shown} in a run that went on to epoch "
        f"{last_epoch}; {best} is the epoch-0 model. Check the metric (or use --ckpt_path last)",
        UserWarning,
        stacklevel=2,
    )


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
        raise UsageError(f"config: {value} names itself through {' -> '.join(map(str, seen))}")
    bases = loaded["config"] if isinstance(loaded["config"], list) else [loaded["config"]]
    chain: list[str] = []
    for base in bases:
        if not isinstance(base, str):
            raise UsageError(f"{value}: `config:` must name a file or a list of files, got {base!r}")
        base_path = _find_base(path, base)
        chain += _config_chain(str(base_path), (*seen, path.resolve()))
    rest = _without_top_level_key(text, "config")
    if yaml.safe_load(rest) is not None:  # a file holding nothing but `config:` adds nothing
        chain.append(rest)
    return chain


#: The repository's configs/ folder (a checkout or an editable install), where a copied
#: config's ``config: ../base/...`` is looked up when it is not beside the copy.
CONFIGS_DIR = Path(__file__).resolve().parents[1] / "configs"


def _find_base(path: Path, base: str) -> Path:
    """The file ``base`` names from the config at ``path``: relative to that config, else (a
    config copied out of ``configs/``, e.g. ``configs/examples/x.yaml`` → ``my_task.yaml``)
    the same relative name inside :data:`CONFIGS_DIR` (``../base/trainer.yaml`` →
    ``configs/base/trainer.yaml``)."""
    beside = path.parent / base
    if beside.is_file():
        return beside
    parts = [p for p in Path(base).parts if p not in {"..", "."}]
    in_repo = CONFIGS_DIR.joinpath(*parts) if parts and not Path(base).is_absolute() else None
    if in_repo is not None and in_repo.is_file():
        return in_repo
    raise UsageError(
        f"{path}: `config: {base}`: no such file {beside}"
        + (f" (nor {in_repo})" if in_repo is not None else "")
        + "; name the base by an absolute path, or keep the config inside mmctx's configs/ folder"
    )


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
    """Entry point of the ``mmctx`` console script.

    ``mmctx caption CKPT FILE...`` and ``mmctx classify CKPT FILE...`` run a checkpoint on
    files (:mod:`mmctx.inference.commands`); everything else is LightningCLI. A bad input
    (a manifest row, a file's content) or a run that cannot be what the user meant is
    printed as one short block, without a traceback, and exits with status 2; ``--debug``
    (anywhere on the command line) or ``MMCTX_DEBUG=1`` shows the traceback instead.
    """
    from_argv = args is None
    argv = list(sys.argv[1:] if from_argv else args)
    debug = "--debug" in argv or os.environ.get("MMCTX_DEBUG", "") not in {"", "0"}
    argv = [a for a in argv if a != "--debug"]
    if argv and argv[0] in {"caption", "classify"}:
        from mmctx.inference.commands import run_command

        with user_errors(debug):
            run_command(argv)
        return
    if from_argv:
        sys.argv[1:] = argv  # LightningCLI reads sys.argv itself
    with user_errors(debug):
        MMCtxCLI(
            L.LightningModule,
            L.LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            auto_configure_optimizers=False,
            save_config_kwargs={"overwrite": True},
            parser_class=MMCtxArgumentParser,
            trainer_defaults={"plugins": [{"class_path": "mmctx.trainers.AtomicCheckpointIO"}]},
            args=None if from_argv else argv,
        )


class user_errors:  # noqa: N801 - used as a context manager, like contextlib's
    """Print a bad-input error (:class:`~mmctx.data.ManifestError`, a media file's
    content, also when raised in a DataLoader worker) or a :class:`UsageError` as one short
    block on stderr and exit with status 2; re-raise it with ``debug``, and anything else
    always."""

    def __init__(self, debug: bool = False) -> None:
        self.debug = debug

    def __enter__(self) -> user_errors:
        return self

    def __exit__(self, kind: type | None, error: BaseException | None, tb: Any) -> bool:
        if error is None or self.debug or not isinstance(error, Exception):
            return False
        report = user_error_report(error)
        if report is None:
            return False
        print(report, file=sys.stderr, flush=True)
        raise SystemExit(2) from None


_WORKER = re.compile(r"Caught (\w+) in DataLoader worker process \d+\.")
_ROW = re.compile(r"^(?P<manifest>.+?):(?P<line>\d+): (?:field '(?P<field>[^']+)': )?(?P<reason>.*)$", re.S)
_FIXES: dict[str, str] = {
    "too many bad rows": "fix the data, or raise --data.max_bad_fraction",
    "no good rows": "check the manifest's fields and paths (--data.image_field, --data.audio_field, --data.text_field)",
    "manifest not found": "check the manifest path (--data.train_manifest, --data.val_manifest, ...)",
    "unknown label": "add the label to --data.classes (or to classes.json beside the train manifest)",
    "missing label": "give every row a label, or none (--data.label_field=null)",
}
_ROW_FIX = "correct or remove that row, or add --data.on_error skip to drop bad rows (counted and reported)"


def _bad_input(error: BaseException) -> tuple[str, str] | None:
    """``(kind, message)`` of a bad-input error, or of the one a DataLoader worker raised
    (re-raised in the main process with the worker's traceback as its message)."""
    from mmctx.data.manifest import ManifestError
    from mmctx.data.media import MediaError

    text = str(error)
    worker = _WORKER.match(text)
    if worker and worker.group(1) in {"ManifestError", "MediaError"}:
        last = list(re.finditer(rf"^[\w.]*{worker.group(1)}: ", text, re.M))
        message = text[last[-1].end():].strip() if last else text
        return "invalid", message
    if isinstance(error, (ManifestError, MediaError)):
        return getattr(error, "kind", "invalid"), text
    return None


def user_error_report(error: BaseException) -> str | None:
    """The short block the CLI prints for ``error`` (or an error it was raised from), or
    None when it is not a bad input or a :class:`UsageError`."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, UsageError):
            return f"mmctx: {current}\n(the Python traceback: add --debug, or set MMCTX_DEBUG=1)"
        bad = _bad_input(current)
        if bad is not None:
            return _format_bad_input(*bad)
        current = current.__cause__ or current.__context__
    return None


def _format_bad_input(kind: str, message: str) -> str:
    row = _ROW.match(message)
    lines = ["mmctx: bad input"]
    if row:
        lines += [f"  manifest: {row['manifest']}", f"  line:     {row['line']}"]
        if row["field"]:
            lines.append(f"  field:    {row['field']}")
        lines.append(f"  reason:   {row['reason']}")
    else:
        lines.append(f"  reason:   {message}")
    reason = row["reason"] if row else message
    fix = _FIXES.get(kind) or next((f for k, f in _FIXES.items() if k in reason), None)
    lines.append(f"  fix:      {fix or (_ROW_FIX if row else 'correct the data (see the reason above)')}")
    lines.append("(the Python traceback: add --debug, or set MMCTX_DEBUG=1)")
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
