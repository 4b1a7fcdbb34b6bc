"""The ``mmctx`` CLI: every config parses and trains a step; fit → test --ckpt_path best;
data sizes are filled in; checkpoints reload without the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import torch

from mmctx.cli import MMCtxCLI, main

REPO = Path(__file__).resolve().parents[1]
LONG_CONTEXT = REPO / "configs" / "long_context"
#: every experiment config (a long-context variant names LONG_CONTEXT / "base.yaml" as its base)
CONFIGS = sorted((REPO / "configs").glob("*.yaml")) + sorted(set(LONG_CONTEXT.glob("*.yaml")) - {LONG_CONTEXT / "base.yaml"})


def config_id(config: Path) -> str:
    """``default``, ``long_context/memory``: the config's path under configs/, without .yaml."""
    return config.relative_to(REPO / "configs").with_suffix("").as_posix()


def data_overrides(root: Path) -> list[str]:
    return [
        f"--data.root={root}",
        "--data.num_train=40",
        "--data.num_val=10",
        "--data.num_test=10",
        "--data.data_seed=0",
        "--data.num_workers=0",
        "--data.batch_size=8",
    ]


def _teacher_checkpoint(root: Path, tmp: Path) -> Path:
    """A teacher for configs/distill.yaml: configs/default.yaml trained for one step (its
    checkpoint records its architecture, as a real `mmctx fit` run's does)."""
    main(["fit", f"--config={REPO / 'configs/default.yaml'}", "--trainer.max_epochs=1", "--trainer.limit_train_batches=1",
          "--trainer.limit_val_batches=1",
          "--trainer.enable_progress_bar=false", f"--trainer.logger.init_args.save_dir={tmp / 'teacher'}",
          *data_overrides(root)])
    return tmp / "teacher" / "default" / "version_0" / "checkpoints" / "last.ckpt"


def _text_lm(tmp: Path) -> Path:
    """A tiny random-init Llama saved as a folder, in the default tokenizer's vocabulary, for
    configs/caption_lm_frozen.yaml (whose LM a user trains first on the caption text)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from mmctx.data import default_tokenizer_path, load_tokenizer

    tok = load_tokenizer(default_tokenizer_path())
    torch.manual_seed(0)
    lm = LlamaForCausalLM(LlamaConfig(vocab_size=tok.vocab_size, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=32,
                                      bos_token_id=tok.bos_id, eos_token_id=tok.eos_id, pad_token_id=tok.pad_id))
    lm.save_pretrained(tmp / "text_lm")
    return tmp / "text_lm"


#: Configs whose data module is not the default data's: config stem -> a function of
#: (default_root, tmp_path) giving its small-data overrides. One line per config.
CONFIG_DATA_OVERRIDES: dict[str, object] = {
    # no pretraining checkpoint here: train from scratch (tests/trainers/test_pretraining.py loads one)
    "finetune_from_pretrain": lambda root, tmp: [*data_overrides(root), "--trainer.callbacks.path=null"],
    # a one-step teacher checkpoint (tests/trainers/test_distillation.py checks the loss and the frozen teacher)
    "distill": lambda root, tmp: [*data_overrides(root), f"--model.init_args.teacher_checkpoint={_teacher_checkpoint(root, tmp)}"],
    # a tiny text LM folder in place of runs/caption_text_lm (examples/multimodal_causal_lm.py --lm-dir makes it)
    "caption_lm_frozen": lambda root, tmp: [*data_overrides(root),
                                            f"--model.init_args.model.init_args.decoder.init_args.lm={_text_lm(tmp)}"],
    # the default data converted to shards in this test's folder (not beside the shared default_root)
    "streaming": lambda root, tmp: [*data_overrides(root), f"--data.shards_root={tmp / 'shards'}"],
    # a tiny long-range data set (documents of 600-800 tokens), one entry per long_context variant
    **{config_id(c): lambda root, tmp: [f"--data.root={tmp / 'long_range'}", "--data.num_train=8", "--data.num_val=4",
                                        "--data.num_test=4", "--data.min_tokens=600", "--data.max_tokens=800",
                                        "--data.batch_size=4"]
       for c in CONFIGS if c.parent == LONG_CONTEXT},
    # spoken streams (rendered in memory, no root): a few short ones
    "long_context/spoken_memory": lambda root, tmp: ["--data.num_train=4", "--data.num_val=2", "--data.num_test=2",
                                                     "--data.train_seconds=[3.0, 5.0]", "--data.eval_seconds=[4.0, 4.0]",
                                                     "--data.batch_size=2"],
}


@pytest.fixture
def fitted(monkeypatch) -> list[MMCtxCLI]:
    """The CLIs whose `fit` finished in this test (LightningCLI calls `after_fit` then)."""
    runs: list[MMCtxCLI] = []
    monkeypatch.setattr(MMCtxCLI, "after_fit", lambda cli: runs.append(cli), raising=False)
    return runs


@pytest.mark.parametrize("config", CONFIGS, ids=[config_id(c) for c in CONFIGS])
def test_every_config_runs_a_fast_dev_run(config, default_root, tmp_path, monkeypatch, fitted):
    monkeypatch.chdir(tmp_path)
    make = CONFIG_DATA_OVERRIDES.get(config_id(config))
    overrides = make(default_root, tmp_path) if make else data_overrides(default_root)
    main(["fit", f"--config={config}", "--trainer.fast_dev_run=1", "--trainer.enable_progress_bar=false",
          *overrides])
    # one training batch ran to the end, and left the weights finite
    cli = fitted[-1]
    assert cli.trainer.state.finished and cli.trainer.fast_dev_run == 1
    assert cli.trainer.fit_loop.epoch_loop.batch_progress.total.completed == 1
    assert all(torch.isfinite(p).all() for p in cli.model.parameters())
    # the config ran as a user runs it: merged onto its base (configs/base/trainer.yaml's logger)
    logger = cli.config.fit.trainer.logger
    assert logger.class_path == "lightning.pytorch.loggers.TensorBoardLogger"
    assert logger.init_args.save_dir == "runs" and logger.init_args.name not in {None, "lightning_logs"}


def test_a_config_builds_on_the_config_it_names(tmp_path, monkeypatch, capsys):
    """`config: base.yaml` (relative to the file, recursively) loads the base first, as an
    earlier --config: init_args-only overrides keep the base's class, `callbacks+:` appends,
    other keys override one by one, and the merge equals the explicit --config list."""
    import yaml

    monkeypatch.chdir(tmp_path)
    (tmp_path / "family").mkdir()
    (tmp_path / "base.yaml").write_text(
        "trainer:\n  max_epochs: 12\n  log_every_n_steps: 10\n"
        "  logger:\n    class_path: lightning.pytorch.loggers.TensorBoardLogger\n    init_args: {save_dir: runs}\n"
        "  callbacks:\n    - class_path: lightning.pytorch.callbacks.LearningRateMonitor\n")
    (tmp_path / "family" / "classify.yaml").write_text(
        "config: ../base.yaml\n"
        "model:\n  class_path: mmctx.trainers.ClassificationTask\n  init_args:\n    model:\n"
        "      class_path: mmctx.models.FusionModel\n      init_args:\n        encoders:\n          image:\n"
        "            class_path: mmctx.encoders.TimmImageEncoder\n            init_args: {backbone: resnet10t, out_dim: &d 16}\n"
        "        fusion: {class_path: mmctx.fusion.ConcatFusion, init_args: {input_dims: {image: *d}, dim: *d}}\n"
        "        head: {class_path: mmctx.heads.ClassifierHead, init_args: {dim: *d}}\n"
        "data:\n  class_path: mmctx.data.DefaultDataModule\n  init_args: {modalities: [image]}\n")
    (tmp_path / "family" / "run.yaml").write_text(
        "# a run\nconfig:\n  - classify.yaml\ntrainer:\n  max_epochs: 3\n  logger:\n    init_args: {name: run}\n"
        "  callbacks+:\n    - class_path: mmctx.trainers.RunSummary\n"
        "model:\n  init_args: {label_smoothing: 0.1}\n")

    def printed(*configs: str) -> dict:
        with pytest.raises(SystemExit):
            main(["fit", *(f"--config={c}" for c in configs), "--print_config"])
        return yaml.safe_load(capsys.readouterr().out)

    merged = printed("family/run.yaml")
    trainer = merged["trainer"]
    assert trainer["max_epochs"] == 3 and trainer["log_every_n_steps"] == 10
    assert trainer["logger"]["init_args"]["save_dir"] == "runs" and trainer["logger"]["init_args"]["name"] == "run"
    assert [c["class_path"] for c in trainer["callbacks"]] == [
        "lightning.pytorch.callbacks.LearningRateMonitor", "mmctx.trainers.RunSummary"]
    assert merged["model"]["class_path"] == "mmctx.trainers.ClassificationTask"
    assert merged["model"]["init_args"]["label_smoothing"] == 0.1
    assert merged["model"]["init_args"]["model"]["init_args"]["fusion"]["init_args"]["dim"] == 16
    # the same as naming the chain on the command line
    explicit = "\n".join(line for line in (tmp_path / "family" / "run.yaml").read_text().splitlines()
                         if line not in {"config:", "  - classify.yaml"})
    (tmp_path / "run_alone.yaml").write_text(explicit)
    (tmp_path / "classify_alone.yaml").write_text((tmp_path / "family" / "classify.yaml").read_text().split("\n", 1)[1])
    assert printed("base.yaml", "classify_alone.yaml", "run_alone.yaml") == merged

    # a loop of bases is an error that names it
    (tmp_path / "loop.yaml").write_text("config: loop.yaml\n")
    with pytest.raises(SystemExit) as exit_:
        main(["fit", "--config=loop.yaml", "--print_config"])
    assert exit_.value.code == 2 and "names itself" in capsys.readouterr().err  # one block, no traceback


def test_unknown_key_is_rejected_with_the_valid_choices(default_root, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit):
        main(["fit", f"--config={REPO / 'configs/default.yaml'}", "--model.init_args.label_smoothin=0.1"])
    err = capsys.readouterr().err
    assert "mmctx.trainers.ClassificationTask has no argument 'label_smoothin'; did you mean 'label_smoothing'?" in err
    assert "Its arguments: ['model', 'num_classes'" in err
    # a typo in a class path: the module's public names
    with pytest.raises(SystemExit):
        main(["fit", f"--config={REPO / 'configs/default.yaml'}",
              "--model.init_args.model.init_args.fusion=mmctx.fusion.CrossAttentionFusoin"])
    err = capsys.readouterr().err
    assert "mmctx.fusion has no 'CrossAttentionFusoin'; did you mean mmctx.fusion.CrossAttentionFusion" in err
    assert "It has: ['Fusion', 'ConcatFusion'" in err


def test_size_written_in_config_that_disagrees_with_data_is_an_error(default_root, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"model.init_args.num_classes = 7, but the data module says 32"):
        main(["fit", f"--config={REPO / 'configs/default.yaml'}", "--model.init_args.num_classes=7",
              "--trainer.fast_dev_run=1", *data_overrides(default_root)])


@pytest.mark.slow
def test_fit_then_test_best_checkpoint_in_a_new_process_and_reload(default_root, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    common = [f"--config={REPO / 'configs/default.yaml'}", "--trainer.enable_progress_bar=false",
              *data_overrides(default_root)]
    main(["fit", *common, "--trainer.max_epochs=2", "--trainer.limit_train_batches=2"])
    run = tmp_path / "runs" / "default" / "version_0"
    assert (run / "checkpoints" / "best.ckpt").is_file() and (run / "checkpoints" / "last.ckpt").is_file()
    assert list(run.glob("events.out.tfevents.*")), "no TensorBoard events"
    # the config saved beside the run holds the sizes filled in from the data
    saved = (run / "config.yaml").read_text()
    assert "num_classes: 32" in saved

    main(["test", *common, "--ckpt_path=best", "--seed_everything=7"])
    out = capsys.readouterr().out
    assert "=== mmctx test results ===" in out and "test/acc" in out
    # the test's config is saved beside the fit's, which keeps the fit's settings
    assert (run / "config.yaml").read_text() == saved and "seed_everything: 7" in (run / "config_test.yaml").read_text()
    rows = [json.loads(line) for line in (run / "test_predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 10 and {"id", "label", "predicted", "probs"} <= set(rows[0])
    assert (run / "confusion_matrix.txt").is_file()

    # the checkpoint rebuilds its injected modules from the saved config, without the CLI
    # and without unpickling arbitrary objects
    from mmctx.trainers import ClassificationTask

    ckpt = torch.load(run / "checkpoints" / "best.ckpt", weights_only=True, map_location="cpu")
    assert ckpt["hyper_parameters"]["model"]["class_path"] == "mmctx.models.FusionModel"
    task = ClassificationTask.load_from_checkpoint(run / "checkpoints" / "best.ckpt", map_location="cpu")
    state = ckpt["state_dict"]
    for name, value in task.state_dict().items():
        assert torch.equal(value, state[name]), name

    main(["predict", *common, "--ckpt_path=best",
          "--trainer.callbacks+=mmctx.trainers.JsonlPredictionWriter",
          f"--trainer.callbacks.output_path={tmp_path / 'pred.jsonl'}"])
    assert len((tmp_path / "pred.jsonl").read_text().splitlines()) == 10


def test_ckpt_best_without_a_fit_says_what_to_do(default_root, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        main(["test", f"--config={REPO / 'configs/default.yaml'}", "--ckpt_path=best", *data_overrides(default_root)])
    assert exit_.value.code == 2 and "run `mmctx fit` first" in capsys.readouterr().err


STRATEGIES = sorted((REPO / "configs" / "strategies").glob("*.yaml"))


@pytest.mark.parametrize("strategy", STRATEGIES, ids=[c.stem for c in STRATEGIES])
def test_strategy_configs_merge_into_an_experiment_and_build(strategy, default_root, tmp_path, monkeypatch, capsys):
    """The scale-out fragments (DDP, FSDP, multi-node) merge into an experiment config; the DDP
    one also trains (tests/trainers/test_ddp.py). FSDP and multi-node need GPUs, not here: their
    strategy is built to check the class paths."""
    import yaml
    from jsonargparse import ArgumentParser

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as done:
        main(["fit", f"--config={REPO / 'configs/default.yaml'}", f"--config={strategy}", "--print_config",
              *data_overrides(default_root)])
    assert done.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)["trainer"]
    wanted = yaml.safe_load(strategy.read_text())["trainer"]
    for key, value in wanted.items():
        if key != "strategy":
            assert printed[key] == value, key
    if isinstance(wanted["strategy"], dict):  # a class_path block: build it
        parser = ArgumentParser()
        parser.add_argument("--strategy", type=L.pytorch.strategies.Strategy)
        built = parser.instantiate_classes(parser.parse_object({"strategy": wanted["strategy"]})).strategy
        assert type(built).__name__ == wanted["strategy"]["class_path"].rsplit(".", 1)[1]
        for wrapped in wanted["strategy"]["init_args"].get("auto_wrap_policy", []):  # resolved to classes
            assert f".{wrapped.rsplit('.', 1)[1]}'>" in repr(built.kwargs["auto_wrap_policy"]), wrapped
    else:
        assert printed["strategy"] == wanted["strategy"]


def test_manifest_data_module_with_classes_json_fits(default_root, tmp_path, monkeypatch, fitted):
    """Classes read from classes.json (the data module's `classes` left unset) are filled into
    the task and logged as the data module's hyperparameter too, so Lightning finds no conflict."""
    data = tmp_path / "manifests"
    data.mkdir()
    for folder in ("images", "audio"):
        (data / folder).symlink_to(default_root / folder)
    for split in ("train", "val"):
        (data / f"{split}.jsonl").write_text((default_root / f"{split}.jsonl").read_text())
    from mmctx.data import DEFAULT_CLASSES

    # reversed: an order the labels alone (sorted) would not give, so the file must be what is read
    classes = list(reversed(DEFAULT_CLASSES))
    (data / "classes.json").write_text(json.dumps(classes))
    monkeypatch.chdir(tmp_path)
    main(["fit", f"--config={REPO / 'configs/image_only.yaml'}", "--data=mmctx.data.MultimodalDataModule",
          f"--data.train_manifest={data / 'train.jsonl'}", f"--data.val_manifest={data / 'val.jsonl'}",
          "--data.modalities=[image]", "--data.num_workers=0", "--data.batch_size=8", "--trainer.fast_dev_run=1"])
    cli = fitted[-1]
    assert cli.trainer.state.finished
    # the task, its classifier head, the data module and the saved config all have the file's classes
    assert cli.model.classes == classes and cli.model.num_classes == len(classes)
    assert cli.model.hparams["classes"] == classes
    assert cli.model.model.head.num_classes == len(classes)
    assert cli.datamodule.classes == classes and cli.datamodule.hparams["classes"] == classes
    assert cli.config.fit.data.init_args.classes == classes


# ---------------------------------------------------------------------------- issue 14: runs that repeat nothing


def _default_copy(default_root: Path, tmp_path: Path) -> Path:
    """A private copy of the small default data (a fit with another image_size regenerates it)."""
    import shutil

    return Path(shutil.copytree(default_root, tmp_path / "data"))


@pytest.mark.slow
def test_test_and_predict_restore_the_fit_data_settings(default_root, tmp_path, monkeypatch, capsys):
    """Fit with --data.image_size 48; `test` and `predict` with no data flags use 48 (and the
    fit's data), predict writes predictions.jsonl beside the checkpoint, mmctx.load gives the
    same captions for the same files, and a conflicting flag fails naming both values."""
    import mmctx

    monkeypatch.chdir(tmp_path)
    root = _default_copy(default_root, tmp_path)
    config = f"--config={REPO / 'configs/caption_image.yaml'}"
    quiet = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]
    main(["fit", config, *quiet, *data_overrides(root), "--data.image_size=48", "--trainer.max_epochs=3",
          "--model.init_args.scheduler.init_args.warmup_steps=0"])
    run = tmp_path / "runs" / "caption_image" / "version_0"
    ckpt = run / "checkpoints" / "last.ckpt"
    saved = torch.load(ckpt, weights_only=True, map_location="cpu")
    assert saved["mmctx_data"]["init_args"]["image_size"] == 48
    capsys.readouterr()

    main(["predict", config, *quiet, f"--ckpt_path={ckpt}"])
    out = capsys.readouterr().out
    assert "image_size=48" in out and f"wrote 10 predictions to {run / 'predictions.jsonl'}" in out
    rows = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]
    assert [r["input"] for r in rows] == [f"test-{i:05d}" for i in range(10)]

    main(["test", config, *quiet, "--ckpt_path=last"])
    tested = [json.loads(line) for line in (run / "captions_test.jsonl").read_text().splitlines()]
    assert [r["generated"] for r in tested] == [r["caption"] for r in rows]

    # the Python API: the same captions for the same files (exact ids: same preprocessing)
    images = [str(root / json.loads(line)["image"]) for line in (root / "test.jsonl").read_text().splitlines()]
    predictor = mmctx.load(ckpt)
    assert predictor.caption(images=images, batch_size=8) == [r["caption"] for r in rows]
    with pytest.raises(TypeError, match=r"offers \.caption\(\)"):
        predictor.classify(images=images)

    # a value that contradicts the checkpoint's: one block naming both, no traceback
    with pytest.raises(SystemExit) as done:
        main(["predict", config, *quiet, f"--ckpt_path={ckpt}", "--data.image_size=56"])
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert "--data.image_size: the checkpoint was trained with 48, this run gives 56" in err
    assert "Traceback" not in err
    # an equal value is fine
    main(["predict", config, *quiet, f"--ckpt_path={ckpt}", "--data.image_size=48"])


def test_checkpoint_task_that_does_not_fit_the_data_names_both():
    from jsonargparse import Namespace

    from mmctx.cli import UsageError, check_task_fits_data

    checkpoint = {"hyper_parameters": {"_class_path": "mmctx.trainers.CaptioningTask",
                                       "model": {"class_path": "m", "init_args": {"encoders": {"image": {}}}}}}
    data = Namespace(class_path="mmctx.data.DefaultDataModule",
                     init_args=Namespace(modalities=["audio"], caption_field="caption"))
    with pytest.raises(UsageError, match=r"reads \['image'\], but the data \(mmctx.data.DefaultDataModule\) gives \['audio'\]"):
        check_task_fits_data(checkpoint, Namespace(data=data), "predict", "x.ckpt")
    data.init_args.modalities, data.init_args.caption_field = ["image"], None
    check_task_fits_data(checkpoint, Namespace(data=data), "predict", "x.ckpt")  # predict needs no captions
    with pytest.raises(UsageError, match="scored against captions.*caption_field=None"):
        check_task_fits_data(checkpoint, Namespace(data=data), "test", "x.ckpt")


def test_best_checkpoint_whose_metric_never_improved_warns(tmp_path):
    from mmctx.cli import _warn_if_never_improved

    folder = tmp_path / "checkpoints"
    folder.mkdir()
    state = {"Checkpoint{'monitor': 'val/acc'}": {"monitor": "val/acc", "best_model_score": torch.tensor(0.0)}}
    torch.save({"epoch": 0, "callbacks": state}, folder / "best.ckpt")
    torch.save({"epoch": 5, "callbacks": state}, folder / "last.ckpt")
    with pytest.warns(UserWarning, match=r"val/acc never improved after epoch 0 \(stayed at 0\).*epoch 5"):
        _warn_if_never_improved(folder / "best.ckpt")


def test_warmup_longer_than_the_run_warns_naming_both(default_root, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.warns(UserWarning, match=r"warmup_steps=\d+\) is longer than the whole run \(1 optimizer steps\)"):
        main(["fit", f"--config={REPO / 'configs/default.yaml'}", "--trainer.fast_dev_run=1",
              "--trainer.enable_progress_bar=false", *data_overrides(default_root)])


def test_the_data_module_is_built_once_per_run(default_root, tmp_path, monkeypatch, fitted):
    from mmctx.data import DefaultDataModule

    import functools

    built = []
    original = DefaultDataModule.__init__

    @functools.wraps(original)  # jsonargparse reads the signature through __wrapped__
    def counting(self, *args, **kwargs):
        built.append(self)
        original(self, *args, **kwargs)

    monkeypatch.setattr(DefaultDataModule, "__init__", counting)
    monkeypatch.chdir(tmp_path)
    main(["fit", f"--config={REPO / 'configs/default.yaml'}", "--trainer.fast_dev_run=1",
          "--trainer.enable_progress_bar=false", *data_overrides(default_root)])
    assert len(built) == 1 and fitted[-1].datamodule is built[0]
    # its hyperparameters are LightningCLI's (class path and the filled-in classes)
    assert fitted[-1].datamodule.hparams["_class_path"] == "mmctx.data.DefaultDataModule"


def test_bad_input_is_one_block_without_traceback(default_root, tmp_path, monkeypatch, capsys):
    data = tmp_path / "manifests"
    data.mkdir()
    (data / "images").symlink_to(default_root / "images")
    rows = (default_root / "train.jsonl").read_text().splitlines()
    bad = json.loads(rows[2])
    bad["image"] = "images/missing.png"
    rows[2] = json.dumps(bad)
    (data / "train.jsonl").write_text("\n".join(rows) + "\n")
    monkeypatch.chdir(tmp_path)
    args = ["fit", f"--config={REPO / 'configs/image_only.yaml'}", "--data=mmctx.data.MultimodalDataModule",
            f"--data.train_manifest={data / 'train.jsonl'}", "--data.modalities=[image]", "--data.num_workers=0",
            "--trainer.fast_dev_run=1", "--data.classes=null"]
    with pytest.raises(SystemExit) as done:
        main(args)
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert f"manifest: {data / 'train.jsonl'}" in err and "line:     3" in err and "field:    image" in err
    assert "--data.on_error skip" in err and "Traceback" not in err
    # --debug: the traceback (the error itself)
    from mmctx.data import ManifestError

    with pytest.raises(ManifestError):
        main([*args, "--debug"])


def test_bad_input_raised_in_a_dataloader_worker_is_unwrapped():
    from mmctx.cli import user_error_report

    wrapped = RuntimeError(
        "Caught MediaError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
        '  File "x.py", line 1, in f\n    raise\nmmctx.data.manifest.ManifestError: /d/train.jsonl:7: '
        "field 'image': unreadable image: cannot identify image file")
    report = user_error_report(RuntimeError("outer").with_traceback(None).__class__("outer"))
    assert report is None
    outer = ValueError("lightning")
    outer.__cause__ = wrapped
    wrapped_manifest = RuntimeError(str(wrapped).replace("Caught MediaError", "Caught ManifestError"))
    outer.__cause__ = wrapped_manifest
    report = user_error_report(outer)
    assert "line:     7" in report and "field:    image" in report and "unreadable image" in report
    assert "Traceback" not in report.split("(the Python traceback")[0]


@pytest.mark.slow
def test_the_readme_jobs_never_touch_the_network(default_root, tmp_path, monkeypatch, no_network, fitted):
    """`make demo`'s two experiments (fit, then test from the checkpoint) with every socket
    blocked: nothing tries to connect (no hub, no download)."""
    monkeypatch.chdir(tmp_path)
    for name in ("default", "caption_image"):
        main(["fit", f"--config={REPO / 'configs' / f'{name}.yaml'}", "--trainer.max_epochs=1",
              "--trainer.limit_train_batches=1", "--trainer.limit_val_batches=1", "--trainer.enable_progress_bar=false",
              *data_overrides(default_root)])
        assert fitted[-1].trainer.state.finished
        main(["test", f"--config={REPO / 'configs' / f'{name}.yaml'}", "--ckpt_path=best",
              "--trainer.limit_test_batches=1", "--trainer.enable_progress_bar=false", *data_overrides(default_root)])
    assert no_network == []


def test_a_config_copied_out_of_configs_still_finds_its_base(tmp_path):
    """`cp configs/examples/image_classification.yaml my_task.yaml` (the README's step 2): its
    `config: ../base/classification.yaml` is found in the checkout's configs/ folder; a base
    that exists nowhere is an error naming both places it looked."""
    from mmctx.cli import CONFIGS_DIR, expand_config_bases

    copy = tmp_path / "my_task.yaml"
    copy.write_text((REPO / "configs" / "examples" / "image_classification.yaml").read_text())
    args = expand_config_bases(["fit", "--config", str(copy)])
    configs = [a.split("=", 1)[1] for a in args if a.startswith("--config=")]
    # trainer.yaml (names no base: passed as a file), then classification.yaml's and the copy's
    # own text without their `config:` lines
    assert configs[0] == str(CONFIGS_DIR / "base" / "trainer.yaml") and len(configs) == 3
    assert "mmctx.trainers.ClassificationTask" in configs[1] and "train_manifest" in configs[2]
    (tmp_path / "lost.yaml").write_text("config: ../nowhere/base.yaml\ntrainer: {max_epochs: 1}\n")
    with pytest.raises(ValueError, match=r"no such file .*nowhere/base.yaml \(nor .*configs/nowhere/base.yaml\)"):
        expand_config_bases(["fit", "--config", str(tmp_path / "lost.yaml")])
