"""GANTask: one manual-optimisation step updates the discriminator and the generator (and
only theirs), n_critic, frozen encoders, gradient clipping, R1, EMA, sample grids,
prediction files (PNG, WAV), checkpoint reload, and the scoring script on a tiny checkpoint."""

from __future__ import annotations

import json
import math
from pathlib import Path

import lightning as L
import pytest
import torch
from PIL import Image

from mmctx.data import DefaultDataModule
from mmctx.encoders import TextTransformerEncoder
from mmctx.fusion import ConcatFusion
from mmctx.heads import ConditionalGenerator, LogMelCodec, ProjectionDiscriminator, SpectrogramGenerator
from mmctx.models import FusionModel
from mmctx.trainers import GANTask

REPO = Path(__file__).resolve().parents[2]
DIM = 16


pytestmark = pytest.mark.usefixtures("one_thread")


def datamodule(root: Path, audio: bool = False, batch_size: int = 4) -> DefaultDataModule:
    return DefaultDataModule(
        root=str(root), num_train=40, num_val=10, num_test=10, data_seed=0,
        modalities=["text", "audio"] if audio else ["text", "image"], text_field="text" if audio else "caption",
        label_field=None, max_text_len=16, batch_size=batch_size, num_workers=0,
    )


def tiny_task(dm: DefaultDataModule, audio: bool = False, seed: int = 0, words: bool = False, **kwargs) -> GANTask:
    torch.manual_seed(seed)
    if audio:
        head = SpectrogramGenerator(DIM, num_frames=16, n_mels=16, z_dim=8, base_channels=4)
        kwargs.setdefault("spectrogram", LogMelCodec(16000, n_fft=512, hop_length=256, n_mels=16, num_frames=16,
                                                     griffin_lim_iters=4))
        kwargs.setdefault("target", "audio")
    else:
        head = ConditionalGenerator(DIM, image_size=8, z_dim=8, base_channels=4, condition="attention",
                                    attention_resolutions=[8], num_heads=2)
    model = FusionModel(
        encoders={"text": TextTransformerEncoder(dm.vocab_size, DIM, num_layers=1, num_heads=2, max_seq_len=16,
                                                 pad_id=dm.pad_id)},
        fusion=ConcatFusion({"text": DIM}, DIM),
        head=head,
    )
    disc = ProjectionDiscriminator(DIM, channels=1 if audio else 3, base_channels=4, num_layers=2,
                                   vocab_size=dm.vocab_size if words else None)
    kwargs.setdefault("generator_optimizer", lambda p: torch.optim.Adam(p, lr=1e-3))
    kwargs.setdefault("discriminator_optimizer", lambda p: torch.optim.Adam(p, lr=1e-3))
    kwargs.setdefault("sample_every_n_steps", 0)
    kwargs.setdefault("num_sample_conditions", 3)
    kwargs.setdefault("samples_per_condition", 2)
    return GANTask(model, disc, **kwargs)


def fit(task: GANTask, dm: DefaultDataModule, root: Path, batches: int = 1) -> L.Trainer:
    trainer = L.Trainer(max_epochs=1, limit_train_batches=batches, limit_val_batches=0, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=root)
    trainer.fit(task, datamodule=dm)
    return trainer


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.named_parameters()}


def changed(before: dict[str, torch.Tensor], module: torch.nn.Module) -> dict[str, bool]:
    return {k: not torch.equal(before[k], v) for k, v in module.named_parameters()}


@pytest.mark.parametrize("freeze", [False, True])
def test_one_step_updates_both_networks_and_the_encoders_unless_frozen(default_root, tmp_path, freeze):
    dm = datamodule(default_root)
    task = tiny_task(dm, freeze_encoders=freeze)
    g0, d0 = snapshot(task.generator), snapshot(task.discriminator)
    e0 = snapshot(task.conditioning_modules())
    modes = []
    task.model.encoders["text"].register_forward_hook(lambda m, args, out: modes.append(m.training))
    trainer = fit(task, dm, tmp_path)
    assert trainer.global_step == 2  # one discriminator and one generator update
    assert all(changed(g0, task.generator).values()), changed(g0, task.generator)
    d = changed(d0, task.discriminator)
    # the output bias shifts real and fake logits alike: while every logit is inside the hinge
    # margin (at the start) its gradient is exactly zero
    assert not d.pop("out.bias") and all(d.values()), d
    enc = changed(e0, task.conditioning_modules())
    if freeze:
        assert not any(enc.values())
        assert all(not p.requires_grad for p in task.conditioning_modules().parameters())
        assert modes and not any(modes)  # frozen encoders run in eval mode (no dropout)
    else:
        assert any(enc.values())
    # the EMA generator's first update is a copy of the updated generator
    ema = dict(task.generator_ema.module.named_parameters())
    for name, p in task.generator.named_parameters():
        assert torch.equal(ema[name], p), name
    for key in ("train/d_loss", "train/g_loss"):
        assert torch.isfinite(trainer.callback_metrics[key])


def test_each_update_touches_only_its_own_network(default_root, tmp_path):
    dm = datamodule(default_root)
    # n_critic=2 and one batch: a discriminator update only, the generator is untouched
    task = tiny_task(dm, n_critic=2, ema_decay=0.0)
    g0, d0 = snapshot(task.generator), snapshot(task.discriminator)
    assert fit(task, dm, tmp_path).global_step == 1
    assert not any(changed(g0, task.generator).values())
    assert sum(changed(d0, task.discriminator).values()) == len(d0) - 1  # all but out.bias (see above)
    # a frozen discriminator optimizer (lr 0): the generator step leaves the discriminator as is
    task = tiny_task(dm, discriminator_optimizer=lambda p: torch.optim.SGD(p, lr=0.0))
    g0, d0 = snapshot(task.generator), snapshot(task.discriminator)
    fit(task, dm, tmp_path)
    assert all(changed(g0, task.generator).values())
    assert not any(changed(d0, task.discriminator).values())


def test_gradient_clipping_bounds_each_update(default_root, tmp_path):
    dm = datamodule(default_root)
    sgd = lambda p: torch.optim.SGD(p, lr=1.0)  # noqa: E731 - update = -clipped gradient
    task = tiny_task(dm, generator_optimizer=sgd, discriminator_optimizer=sgd, gradient_clip_val=1e-3)
    d0 = snapshot(task.discriminator)
    g0 = snapshot(task.generator)
    e0 = snapshot(task.conditioning_modules())
    fit(task, dm, tmp_path)

    def norm(before, module):
        return torch.sqrt(sum(((before[k] - v) ** 2).sum() for k, v in module.named_parameters()))

    # the discriminator's update (its parameters + the encoders') has norm <= the clip value
    d_update = torch.sqrt(norm(d0, task.discriminator) ** 2 + norm(e0, task.conditioning_modules()) ** 2)
    assert 0 < d_update <= 1e-3 * 1.01
    assert 0 < norm(g0, task.generator) <= 1e-3 * 1.01


def test_r1_mode_seeking_and_non_saturating_loss_train_finite(default_root, tmp_path):
    dm = datamodule(default_root)
    task = tiny_task(dm, loss="non_saturating", r1_gamma=10.0, r1_every=2, mode_seeking=1.0)
    trainer = fit(task, dm, tmp_path, batches=3)
    metrics = trainer.callback_metrics
    keys = ("train/r1", "train/d_loss", "train/g_loss", "train/mode_seeking_ratio")
    assert set(keys) <= set(metrics)
    assert all(torch.isfinite(metrics[k]) for k in keys)
    assert metrics["train/mode_seeking_ratio"] > 0  # two noises, one condition: two pictures


def test_word_loss_and_augmentation_train_the_word_head_and_the_generator(default_root, tmp_path):
    from mmctx.layers import DiffAugment
    from mmctx.losses import word_classification_loss

    dm = datamodule(default_root, batch_size=8)
    task = tiny_task(dm, words=True, word_loss=1.0, mode_seeking=1.0,
                     discriminator_augment=DiffAugment(["color", "translation", "cutout"]))
    head = snapshot(task.discriminator.words)
    generator = snapshot(task.generator)
    trainer = fit(task, dm, tmp_path, batches=2)
    metrics = trainer.callback_metrics
    assert all(torch.isfinite(metrics[k]) for k in ("train/d_word_loss", "train/g_word_loss", "train/g_loss"))
    assert all(changed(head, task.discriminator.words).values())
    assert any(changed(generator, task.generator).values())
    # the targets are the captions' words: a real batch's bag of words, rows summing to 1
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    targets = task.word_targets(batch)
    assert targets.shape == (8, dm.vocab_size) and torch.allclose(targets.sum(-1), torch.ones(8))
    # the word head's gradient descent on real pictures lowers their loss
    real = task.real_samples(batch)
    context = task.encode(task.condition_inputs(batch))
    _, words = task.discriminator(real, context, return_words=True)
    loss = word_classification_loss(words, targets)
    loss.backward()
    with torch.no_grad():
        for p in task.discriminator.words.parameters():
            p -= 0.5 * p.grad
        _, after = task.discriminator(real, context, return_words=True)
    assert word_classification_loss(after, targets) < loss
    with pytest.raises(ValueError, match="word head"):
        tiny_task(dm, word_loss=1.0)


def test_multilabel_word_loss_teaches_the_word_head_that_generated_pictures_show_no_word(default_root, tmp_path):
    """word_loss_kind="multilabel" (Omni-GAN): the discriminator's word head is also trained on
    generated pictures, towards naming none of their words; the generator still learns."""
    from mmctx.losses import word_multilabel_loss

    dm = datamodule(default_root, batch_size=8)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    losses = {}
    for kind in ("classification", "multilabel"):
        # the generator frozen (lr 0): its pictures, drawn from fixed noise, stay the same
        task = tiny_task(dm, words=True, word_loss=1.0, word_loss_kind=kind, ema_decay=0.0,
                         generator_optimizer=lambda p: torch.optim.SGD(p, lr=0.0),
                         discriminator_optimizer=lambda p: torch.optim.Adam(p, lr=1e-2))
        context = task.encode(task.condition_inputs(batch))
        z = torch.randn(8, task.generator.z_dim, generator=torch.Generator().manual_seed(1))

        def no_word_loss(task: GANTask = task, z: torch.Tensor = z, context=context) -> float:
            with torch.no_grad():
                fake = task.generator(z, context)
                _, words = task.discriminator(fake, context, return_words=True)
            return word_multilabel_loss(words, torch.zeros_like(words, dtype=torch.bool)).item()

        before = no_word_loss()
        trainer = fit(task, dm, tmp_path, batches=3)
        assert torch.isfinite(trainer.callback_metrics["train/d_word_loss"])
        assert torch.isfinite(trainer.callback_metrics["train/g_word_loss"])
        losses[kind] = (before, no_word_loss())
    before, after = losses["multilabel"]
    assert after < before  # the word head learns to name nothing in generated pictures
    # the discriminator's word loss: multilabel adds the generated pictures' (no word) term,
    # classification never looks at them
    real_words, fake_words = torch.randn(2, 8, dm.vocab_size, generator=torch.Generator().manual_seed(2))
    targets = task.word_targets(batch)
    none = torch.zeros_like(targets, dtype=torch.bool)
    expected = word_multilabel_loss(real_words, targets > 0) + word_multilabel_loss(fake_words, none)
    assert torch.allclose(task.discriminator_word_loss(real_words, fake_words, targets), expected)
    assert torch.allclose(task.generator_word_loss(fake_words, targets), word_multilabel_loss(fake_words, targets > 0))
    classify = tiny_task(dm, words=True, word_loss=1.0)
    assert torch.allclose(classify.discriminator_word_loss(real_words, fake_words, targets),
                          classify.discriminator_word_loss(real_words, -fake_words, targets))
    with pytest.raises(ValueError, match="word_loss_kind"):
        tiny_task(dm, words=True, word_loss=1.0, word_loss_kind="softmax")


def test_implied_words_add_the_category_to_the_word_targets(default_root, tmp_path):
    dm = datamodule(default_root, batch_size=8)
    task = tiny_task(dm, words=True, word_loss=1.0, implied_words={"dog": ["animals"], "apple": ["food"]})
    fit(task, dm, tmp_path)  # the task takes the data's tokenizer; the targets are built with it
    batch = next(iter(dm.train_dataloader()))
    targets = task.word_targets(batch)
    assert torch.allclose(targets.sum(-1), torch.ones(8))
    dog, animals, apple, food = (dm.tokenizer.encode(w)[0] for w in ("dog", "animals", "apple", "food"))
    plain = tiny_task(dm, words=True, word_loss=1.0).word_targets(batch)
    counts = batch.inputs["text"].mask.sum(-1).float()  # each caption's number of words
    for i in range(8):
        n_dog = round(plain[i, dog].item() * counts[i].item())
        n_apple = round(plain[i, apple].item() * counts[i].item())
        total = counts[i] + n_dog + n_apple
        assert targets[i, animals].item() == pytest.approx(n_dog / total)
        assert targets[i, food].item() == pytest.approx(n_apple / total)
    assert any(round(plain[i, dog].item() * counts[i].item()) for i in range(8)) or any(
        round(plain[i, apple].item() * counts[i].item()) for i in range(8)), "no dog or apple in the batch"
    with pytest.raises(ValueError, match="not one token"):
        bad = tiny_task(dm, words=True, word_loss=1.0, implied_words={"dog": ["wolfhound"]})
        bad.tokenizer = dm.tokenizer
        bad.word_targets(batch)


def test_generator_word_loss_is_kept_with_mode_seeking(default_root, tmp_path):
    # the discriminator frozen (lr 0) so only the generator's own loss can differ between runs;
    # SGD so any change of the generator's gradient changes its update (Adam's first step is
    # ±lr whatever the gradient's size)
    dm = datamodule(default_root, batch_size=8)
    after = []
    for word_loss in (0.0, 0.0, 5.0):
        task = tiny_task(dm, words=True, word_loss=word_loss, mode_seeking=1.0, ema_decay=0.0,
                         generator_optimizer=lambda p: torch.optim.SGD(p, lr=0.1),
                         discriminator_optimizer=lambda p: torch.optim.SGD(p, lr=0.0))
        fit(task, dm, tmp_path)
        after.append(snapshot(task.generator))
    same = [torch.equal(after[0][k], after[1][k]) for k in after[0]]
    assert all(same)  # the run is deterministic
    moved = [not torch.equal(after[0][k], after[2][k]) for k in after[0]]
    assert any(moved)  # the word loss reaches the generator beside the mode-seeking term


def test_mode_seeking_pairs_share_a_condition_and_push_samples_apart(default_root):
    from mmctx.trainers.gan import _pairs

    dm = datamodule(default_root)
    task = tiny_task(dm)
    dm.setup("fit")
    context = task.encode(task.condition_inputs(next(iter(dm.train_dataloader()))))
    paired = _pairs(context, 2)
    assert torch.equal(paired.x[:2], paired.x[2:]) and torch.equal(paired.x[:2], context.x[:2])
    # the term's gradient increases the distance between the two samples of a condition
    z = torch.randn(4, 8, requires_grad=False)
    fake = task.generator(z, paired)
    ratio = (fake[:2] - fake[2:]).abs().flatten(1).mean(1) / (z[:2] - z[2:]).abs().mean(1)
    (1.0 / (ratio.mean() + 1e-5)).backward()
    with torch.no_grad():
        for p in task.generator.parameters():
            if p.grad is not None:
                p -= 1e-2 * p.grad
        after = task.generator(z, paired)
    assert (after[:2] - after[2:]).abs().mean() > (fake[:2] - fake[2:]).abs().mean()


def test_sample_grid_png_and_predict_writes_images(default_root, tmp_path):
    dm = datamodule(default_root)
    task = tiny_task(dm, sample_every_n_steps=2, num_predict_samples=2, predict_dir=str(tmp_path / "gen"))
    trainer = fit(task, dm, tmp_path, batches=2)
    grids = sorted((tmp_path / "samples").glob("*.png"))
    assert [g.name for g in grids] == ["final.png", "step_000002.png", "step_000004.png"]
    with Image.open(tmp_path / "samples_last.png") as im:  # 3 conditions x 2 samples of 8x8, 2-pixel gaps
        assert im.size == (2 * 10 + 2, 3 * 10 + 2)
    rows = (tmp_path / "samples_conditions.txt").read_text().splitlines()
    assert len(rows) == 4 and "'a " in rows[1]  # the val captions, decoded
    predictions = trainer.predict(task, datamodule=dm)
    flat = [row for batch in predictions for row in batch]
    assert len(flat) == 10 and len(flat[0]["files"]) == 2
    assert all(Path(f).is_file() and f.endswith(".png") for row in flat for f in row["files"])
    # fixed noise: the same conditions give the same samples
    batch = next(iter(dm.test_dataloader()))
    z = task.noise(8, torch.Generator().manual_seed(1))
    assert torch.equal(task.generate(batch, 2, z=z), task.generate(batch, 2, z=z))
    assert task.generate(batch, 2, z=z).shape == (8, 3, 8, 8)


def test_spectrogram_task_trains_and_predicts_png_and_wav(default_root, tmp_path):
    dm = datamodule(default_root, audio=True)
    task = tiny_task(dm, audio=True, num_predict_samples=1, predict_dir=str(tmp_path / "gen"))
    trainer = fit(task, dm, tmp_path)
    assert torch.isfinite(trainer.callback_metrics["train/g_loss"])
    with Image.open(tmp_path / "samples_last.png") as im:  # spectrograms drawn mels high x frames wide
        assert im.size == (2 * 18 + 2, 3 * 18 + 2)
    trainer.predict(task, datamodule=dm)
    wavs = sorted((tmp_path / "gen").glob("*.wav"))
    assert len(wavs) == 10 and len(list((tmp_path / "gen").glob("*.png"))) == 10
    import soundfile as sf

    wave, rate = sf.read(wavs[0])
    assert rate == 16000 and wave.shape == (15 * 256,) and abs(wave).max() > 0


def test_checkpoint_reload_and_bad_arguments(default_root, tmp_path):
    dm = datamodule(default_root)
    task = tiny_task(dm)
    trainer = fit(task, dm, tmp_path)
    trainer.save_checkpoint(tmp_path / "gan.ckpt")
    fresh = tiny_task(dm, seed=1)
    loaded = GANTask.load_from_checkpoint(tmp_path / "gan.ckpt", model=fresh.model, discriminator=fresh.discriminator)
    batch = next(iter(dm.test_dataloader()))
    z = task.noise(8)
    assert torch.allclose(loaded.generate(batch, 2, z=z), task.generate(batch, 2, z=z))
    # the encoders of another run initialise a new task's
    other = tiny_task(dm, seed=2, init_encoders_from=str(tmp_path / "gan.ckpt"))
    for (name, a), b in zip(other.model.encoders.named_parameters(), task.model.encoders.parameters()):
        assert torch.equal(a, b), name
    with pytest.raises(ValueError, match="loss"):
        tiny_task(dm, loss="wgan")
    with pytest.raises(ValueError, match="spectrogram"):
        tiny_task(dm, target="audio")
    with pytest.raises(ValueError, match="n_critic"):
        tiny_task(dm, n_critic=0)


@pytest.mark.slow
def test_score_gan_runs_on_a_tiny_checkpoint(default_root, tmp_path, monkeypatch, capsys):
    import importlib.util

    from mmctx.cli import main

    monkeypatch.chdir(tmp_path)
    main(["fit", f"--config={REPO / 'configs/gan_image.yaml'}", "--trainer.max_steps=4",
          "--trainer.enable_progress_bar=false", f"--data.root={default_root}", "--data.num_train=40",
          "--data.num_val=10", "--data.num_test=10", "--data.num_workers=0", "--data.batch_size=8",
          "--model.init_args.model.init_args.head.init_args.base_channels=8",
          "--model.init_args.discriminator.init_args.base_channels=8"])
    run = tmp_path / "runs" / "gan_image" / "version_0"
    ckpt = run / "checkpoints" / "last.ckpt"
    assert ckpt.is_file() and (run / "samples" / "final.png").is_file() and (run / "samples_last.png").is_file()
    # `mmctx predict` with the GAN checkpoint: PNGs for the test captions, in the run folder
    main(["predict", f"--config={REPO / 'configs/gan_image.yaml'}", "--ckpt_path=last",
          "--trainer.enable_progress_bar=false", f"--data.root={default_root}", "--data.num_train=40",
          "--data.num_val=10", "--data.num_test=10", "--data.num_workers=0", "--data.batch_size=8",
          "--model.init_args.model.init_args.head.init_args.base_channels=8",
          "--model.init_args.discriminator.init_args.base_channels=8"])
    assert len(list((run / "generated").glob("test-*_[0-3].png"))) == 10 * 4
    spec = importlib.util.spec_from_file_location("score_gan", REPO / "benchmarks" / "score_gan.py")
    score_gan = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(score_gan)
    results = score_gan.main(["--ckpt", str(ckpt), "--epochs", "2", "--samples-per-condition", "3",
                              "--classifiers", "2", "--json", str(tmp_path / "score.json")])
    out = capsys.readouterr().out
    assert "generated" in out and "real" in out and "noise" in out
    assert {"real", "generated", "noise", "diagnostics"} <= set(results)
    for name in ("real", "generated", "noise"):
        assert 0.0 <= results[name]["category_acc"] <= 1.0 and 0.0 <= results[name]["category_head_acc"] <= 1.0
    # every condition's category is scored: 8 objects (3 samples each) per category
    assert set(results["generated"]["per_category_acc"]) == {"animals", "food", "vehicles", "plants"}
    assert len(results["generated"]["single_classifiers"]["object_acc"]) == 2
    diag = results["diagnostics"]  # the config's discriminator has a word head: all of them
    assert diag["generator_caption_distance"] > 0 and diag["generator_noise_distance"] > 0
    for key in ("d_prefers_matching", "d_words_real_acc", "d_words_generated_acc"):
        assert 0.0 <= diag[key] <= 1.0
    assert "conditioning:" in out and "positions of the object" in out
    pos = results["positions"]  # the real pictures' true thirds are in the manifest
    assert pos["estimator_real_third_acc"] >= 0.9
    for name in ("real", "generated"):
        assert sum(pos[name]["thirds"]) == pytest.approx(1.0) and 1 / 3 - 1e-6 <= pos[name]["same_third"] <= 1.0
    assert json.loads((tmp_path / "score.json").read_text())["generated"]["n"] > 0


def test_score_gan_ensemble_averages_probabilities_and_reads_the_category_from_the_objects():
    import importlib.util

    spec = importlib.util.spec_from_file_location("score_gan", REPO / "benchmarks" / "score_gan.py")
    score_gan = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(score_gan)

    class Fixed(torch.nn.Module):  # a "classifier" with fixed category and object logits
        def __init__(self, cat: list[float], obj: list[float]) -> None:
            super().__init__()
            self.cat, self.obj = torch.tensor([cat]), torch.tensor([obj])

        def forward(self, x):
            return self.cat.expand(len(x), -1), self.obj.expand(len(x), -1), torch.zeros(len(x), 2)

    # objects 0, 1 are animals (category 0), object 2 is food (category 1)
    a = Fixed([0.0, 0.0, 0.0, 0.0], [math.log(4.0), math.log(3.0), math.log(3.0)])  # object probs .4 .3 .3
    b = Fixed([0.0, math.log(3.0), 0.0, 0.0], [0.0, 0.0, math.log(2.0)])  # object probs .25 .25 .5
    ens = score_gan.Ensemble([a, b], torch.tensor([0, 0, 1]))
    cat, cat_head, obj, _ = ens(torch.zeros(2, 3, 4, 4))
    assert torch.allclose(obj[0], torch.tensor([0.325, 0.275, 0.4]))  # the mean of the two
    # the category: the animals' summed probability .6 beats the most probable object's (food) .4
    assert torch.allclose(cat[0], torch.tensor([0.6, 0.4, 0.0, 0.0]))
    assert torch.allclose(cat_head[0], torch.tensor([1 / 4 + 1 / 6, 1 / 4 + 1 / 2, 1 / 4 + 1 / 6, 1 / 4 + 1 / 6]) / 2)
    pc, ph, po, _ = score_gan.classify(ens, torch.zeros(3, 3, 4, 4))
    assert pc.tolist() == [0, 0, 0] and ph.tolist() == [1, 1, 1] and po.tolist() == [2, 2, 2]


def test_score_gan_object_positions_find_an_object_on_a_gradient_background():
    import importlib.util

    spec = importlib.util.spec_from_file_location("score_gan", REPO / "benchmarks" / "score_gan.py")
    score_gan = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(score_gan)
    g = torch.Generator().manual_seed(0)
    u = torch.linspace(0, 1, 32)
    x = torch.empty(6, 3, 32, 32)
    corners = [(4, 20), (12, 2), (22, 12), (2, 1), (14, 11), (23, 4)]  # (row, column) of a 9x9 object
    for i, (r, c) in enumerate(corners):
        a, b, d = (torch.rand(3, 1, 1, generator=g) * 0.6 for _ in range(3))
        x[i] = 0.2 + a * u.view(1, 1, 32) - b * u.view(1, 32, 1) + 0.02 * torch.randn(3, 32, 32, generator=g)
        x[i, :, r : r + 9, c : c + 9] = -0.8 + d  # a dark square
    pos = score_gan.object_positions(x)  # (N, 2): (u, v) in [0, 1]
    centres = torch.tensor([[(c + 4) / 31, (r + 4) / 31] for r, c in corners])
    assert (pos - centres).abs().max() < 0.06
    stats = score_gan.position_stats(pos, [0, 0, 0, 1, 1, 1])
    # centre columns 24, 6, 16 (caption 0: right, left, middle), 5, 15, 8 (caption 1: left, middle, left)
    assert stats["thirds"] == pytest.approx([1 / 2, 1 / 3, 1 / 6])
    assert stats["same_third"] == pytest.approx((1 / 3 + 2 / 3) / 2)


def test_init_encoders_from_reports_missing_unexpected_and_misshaped_keys(default_root, tmp_path):
    """The GAN loads its conditioning encoders through the one checked loader (it used to
    skip the shape and unexpected-key checks)."""
    dm = datamodule(default_root)
    state = {f"model.{k}": v for k, v in tiny_task(dm).model.state_dict().items()}
    wide = dict(state, **{"model.fusion.norm.weight": torch.ones(DIM + 4)})
    torch.save({"state_dict": wide}, tmp_path / "wide.ckpt")
    with pytest.raises(ValueError, match=r"GANTask: init_encoders_from: .* does not match[\s\S]*"
                                         rf"shape mismatch fusion\.norm\.weight: checkpoint \({DIM + 4},\) vs model \({DIM},\)"):
        tiny_task(dm, init_encoders_from=str(tmp_path / "wide.ckpt"))
    extra = dict(state, **{"model.encoders.text.extra.weight": torch.ones(2)})
    torch.save({"state_dict": extra}, tmp_path / "extra.ckpt")
    with pytest.raises(ValueError, match=r"not in the model: encoders\.text\.extra\.weight"):
        tiny_task(dm, init_encoders_from=str(tmp_path / "extra.ckpt"))
    partial = {k: v for k, v in state.items() if not k.startswith("model.fusion.proj")}
    torch.save({"state_dict": partial}, tmp_path / "partial.ckpt")
    with pytest.raises(ValueError, match=r"missing in checkpoint: fusion\.proj\.text\.weight"):
        tiny_task(dm, init_encoders_from=str(tmp_path / "partial.ckpt"))
    # weights of parts the GAN does not condition on (another encoder, the head) are ignored
    other = dict(state, **{"model.encoders.image.proj.weight": torch.ones(3, 3)})
    torch.save({"state_dict": other}, tmp_path / "other.ckpt")
    loaded = tiny_task(dm, seed=3, init_encoders_from=str(tmp_path / "other.ckpt"))
    assert torch.equal(loaded.model.fusion.norm.weight, state["model.fusion.norm.weight"])


@pytest.mark.slow
def test_score_gan_spectrogram_runs_on_a_tiny_checkpoint(default_root, tmp_path, monkeypatch, capsys):
    import importlib.util

    from mmctx.cli import main

    monkeypatch.chdir(tmp_path)
    main(["fit", f"--config={REPO / 'configs/gan_spectrogram.yaml'}", "--trainer.max_steps=2",
          "--trainer.enable_progress_bar=false", f"--data.root={default_root}", "--data.num_train=40",
          "--data.num_val=10", "--data.num_test=10", "--data.num_workers=0", "--data.batch_size=8",
          "--model.init_args.model.init_args.head.init_args.base_channels=4",
          "--model.init_args.discriminator.init_args.base_channels=4"])
    ckpt = tmp_path / "runs" / "gan_spectrogram" / "version_0" / "checkpoints" / "last.ckpt"
    spec = importlib.util.spec_from_file_location("score_gan_spectrogram",
                                                  REPO / "benchmarks" / "score_gan_spectrogram.py")
    score = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(score)
    results = score.main(["--ckpt", str(ckpt), "--epochs", "1", "--samples-per-condition", "3",
                          "--max-real", "30", "--json", str(tmp_path / "score.json")])
    out = capsys.readouterr().out
    assert "generated" in out and "real (held-out)" in out and "uniform noise" in out
    assert set(results) == {"real", "generated", "noise"}
    assert results["real"]["n"] == 6 and results["generated"]["n"] == 3 * len(results["generated"]["per_word_acc"])
    for row in results.values():
        assert 0.0 <= row["word_acc"] <= 1.0 and row["diversity"] >= 0.0
    # the generated and noise rows are judged against the same conditions; the real diversity is not zero
    assert results["noise"]["n"] == results["generated"]["n"] and results["real"]["diversity"] > 0
    assert json.loads((tmp_path / "score.json").read_text())["generated"]["n"] > 0
