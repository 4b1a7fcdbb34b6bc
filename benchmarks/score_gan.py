"""Score a caption → image GAN checkpoint on the default data: does a picture generated for
"a dog" show a dog?

1. A small CNN (plain PyTorch) learns, from *real* single-object pictures of the default
   data at the generator's resolution, two things at once: the object's category (animals,
   food, vehicles, plants; chance 25 %) and the object itself (32 pictograms; chance ~3 %).
   The single-object pictures of all three splits are pooled and split 80/20 (seeded), so
   every object is seen in training; the 20 % are its held-out real test pictures.
   ``--classifiers`` such CNNs (seeds ``seed``, ``seed + 1``, ...) vote by averaging their
   probabilities: on generated pictures one CNN's accuracy depends on its seed by up to
   ±0.08 (three seeds on one checkpoint: object 0.65 / 0.81 / 0.74), on real ones not.
   Each classifier's own accuracies are printed too (mean and range).
   The category is read from the object probabilities (summed over each category's
   objects), so a picture recognised as a dog is always counted as an animal; the
   separate 4-way category head's accuracy ("category head") is printed beside it: on
   generated pictures it disagrees with the object head on ~20 % (it called most
   generated vehicles animals), on real ones never.
2. For every distinct single-object caption ("a dog", "a bus", ...) the GAN generates
   ``--samples-per-condition`` pictures (the EMA generator unless ``--raw-generator``).
3. The table: how often the classifier recognises the condition's category / object in
   the generated pictures ("conditional accuracy"), next to its accuracy on held-out real
   pictures (the ceiling) and on uniform noise given the same conditions (the floor);
   and the sample diversity: the mean pairwise distance between pictures of one object
   (pixels in [-1, 1], RMS; and the classifier's penultimate features), generated vs real.
   A collapsed generator has a generated/real diversity ratio near 0.
4. Positions (does the generator draw a one-object caption's object where the data does, in
   any of the three thirds, at any height, or always in the same place?): each picture's
   object is located where it departs most from a background plane fitted to it
   (:func:`object_positions`), checked against the true third of the real pictures; the
   table gives the share of pictures per third, the spread of the object's height, and per
   caption the share of its samples in its most common third (1.0: every noise the same).
5. Conditioning diagnostics (where a condition gets lost): how much the generator's picture
   changes with the caption (same noise) against with the noise (same caption); whether the
   discriminator scores real pictures higher with their own caption than with another
   object's (its projection term); with a word head, how often it names the object of real
   and of generated pictures (among the object words).

The conditions are built by the checkpoint's own data module settings (its text field,
modalities, tokenizer), read from the checkpoint, with the data root given here.

    python benchmarks/score_gan.py --ckpt runs/gan_image/version_0/checkpoints/last.ckpt
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmctx.data import DefaultDataModule
from mmctx.data.builtin.asset_pack import AssetPack
from mmctx.metrics import group_diversity
from mmctx.trainers import GANTask
from mmctx.types import ModalityInput

CATEGORIES = ["animals", "food", "vehicles", "plants"]


class SmallCNN(nn.Module):
    """Picture (B, C, H, W) in [-1, 1] → category logits (B, 4), object logits (B, O), features (B, 128)."""

    def __init__(self, channels: int, num_objects: int) -> None:
        super().__init__()

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(), nn.MaxPool2d(2))

        self.features = nn.Sequential(block(channels, 32), block(32, 64), block(64, 128), nn.AdaptiveAvgPool2d(1),
                                      nn.Flatten())
        self.category = nn.Linear(128, len(CATEGORIES))
        self.object = nn.Linear(128, num_objects)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        h = self.features(x)  # (B, 128)
        return self.category(h), self.object(h), h


def load_rows(dm: DefaultDataModule) -> list[dict]:
    """Single-object rows of every split: manifest row + split + index in its data set."""
    rows = []
    for split in ("train", "val", "test"):
        manifest = dm.manifests[split]
        if manifest is None:
            continue
        dataset = dm._dataset(split)
        index = {sample_id: i for i, sample_id in enumerate(dataset.ids)}
        for line in manifest.read_text().splitlines():
            row = json.loads(line)
            if len(row["objects"]) == 1:
                rows.append({**row, "split": split, "index": index[row["id"]]})
    return rows


def real_pictures(task: GANTask, dm: DefaultDataModule, rows: list[dict]) -> Tensor:
    """Shapes: → (R, C, H, W) in [-1, 1] at the generator's size."""
    images = torch.stack([dm._dataset(r["split"])[r["index"]]["image"] for r in rows])
    return task.images_to_generator_space(images)


class Ensemble(nn.Module):
    """Classifiers voting by averaged probabilities: picture → category probabilities (via the
    object probabilities summed per category), category-head probabilities, object
    probabilities, features (the first classifier's).

    ``object_category`` (O,) maps each object index to its category index.
    """

    def __init__(self, nets: list[SmallCNN], object_category: Tensor) -> None:
        super().__init__()
        self.nets = nn.ModuleList(nets)
        self.register_buffer("object_category", object_category)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        outs = [net(x) for net in self.nets]
        cat_head = torch.stack([o[0].softmax(-1) for o in outs]).mean(0)  # (B, 4)
        obj = torch.stack([o[1].softmax(-1) for o in outs]).mean(0)  # (B, O)
        cat = obj.new_zeros(len(x), cat_head.shape[-1]).index_add_(1, self.object_category, obj)  # (B, 4)
        return cat, cat_head, obj, outs[0][2]


def train_classifier(x: Tensor, cat: Tensor, obj: Tensor, num_objects: int, epochs: int, seed: int) -> SmallCNN:
    torch.manual_seed(seed)
    net = SmallCNN(x.shape[1], num_objects)
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=1e-4)
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        net.train()
        for idx in torch.randperm(len(x), generator=g).split(64):
            batch = x[idx]
            if torch.rand(1, generator=g).item() < 0.5:  # the objects are not symmetric, but positions vary
                batch = batch + 0.05 * torch.randn(batch.shape, generator=g)
            c_logits, o_logits, _ = net(batch)
            loss = F.cross_entropy(c_logits, cat[idx]) + F.cross_entropy(o_logits, obj[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return net.eval()


@torch.no_grad()
def classify(net: Ensemble, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Shapes: (N, C, H, W) → category (N,), category-head category (N,), object (N,), features (N, 128)."""
    outs = [net(chunk) for chunk in x.split(256)]
    return tuple(torch.cat([o[i] for o in outs]).argmax(-1) if i < 3 else torch.cat([o[i] for o in outs])
                 for i in range(4))


def object_positions(x: Tensor, share: float = 0.08) -> Tensor:
    """Where each picture's object is: the residual-weighted centroid of the ``share`` of its
    pixels that depart most from a colour plane (per channel ``a + b·u + c·v``) fitted to the
    picture by least squares, refitted without the worst quarter of the pixels (the object).
    The data's backgrounds are one pastel colour or a linear gradient, so the plane is the
    background and the residual is the object.

    Shapes: x (N, C, H, W) → (N, 2) centroid (u, v) in [0, 1] (u: left → right, v: top → bottom)
    """
    N, _, H, W = x.shape
    v, u = torch.meshgrid(torch.linspace(0, 1, H), torch.linspace(0, 1, W), indexing="ij")
    design = torch.stack([torch.ones(H * W), u.flatten(), v.flatten()], dim=1)  # (P, 3)
    y = x.flatten(2).transpose(1, 2).float()  # (N, P, C)
    weight = torch.ones(N, H * W, 1)
    for _ in range(2):
        coef = torch.linalg.lstsq(design * weight, y * weight).solution  # (N, 3, C)
        residual = (y - design @ coef).norm(dim=-1)  # (N, P)
        weight = (residual <= residual.quantile(0.75, dim=1, keepdim=True)).float().unsqueeze(-1)
    k = max(1, round(share * H * W))
    top, idx = residual.topk(k, dim=1)  # (N, k)
    coords = design[:, 1:][idx]  # (N, k, 2)
    return (coords * top.unsqueeze(-1)).sum(1) / top.sum(1, keepdim=True).clamp_min(1e-8)


def position_stats(pos: Tensor, groups: list[int]) -> dict:
    """Thirds and spread of object positions ``pos`` (N, 2) from :func:`object_positions`;
    ``groups`` (N,) the caption (object) of each picture."""
    third = (pos[:, 0] * 3).long().clamp(0, 2)  # (N,)
    counts = torch.bincount(third, minlength=3).float()
    g = torch.tensor(groups)
    top_share = [torch.bincount(third[g == k], minlength=3).max().item() / int((g == k).sum())
                 for k in sorted(set(groups))]
    return {"thirds": (counts / counts.sum()).tolist(), "height_std": pos[:, 1].std().item(),
            "same_third": sum(top_share) / len(top_share)}


def condition_batch(task: GANTask, dm: DefaultDataModule, rows: list[dict]) -> dict[str, ModalityInput]:
    """The GAN's condition inputs for ``rows``, built like its training batches."""
    items = [dm._dataset(r["split"])[r["index"]] for r in rows]
    return task.condition_inputs(dm._collate()(items))


@torch.no_grad()
def conditioning_diagnostics(task: GANTask, dm: DefaultDataModule, rows: list[dict], cond_rows: list[dict],
                             seed: int, num_real: int = 256, k: int = 8) -> dict[str, float]:
    """Where the condition gets lost (see the module docstring, 4.)."""
    g = torch.Generator().manual_seed(seed + 2)
    O = len(cond_rows)
    z = torch.randn(k, task.generator.z_dim, generator=g).repeat(O, 1)  # row o·k + j: caption o, noise j
    x = task.generate(condition_batch(task, dm, cond_rows), k, z=z).flatten(1).view(O, k, -1)
    by_noise = torch.cdist(x, x) / x.shape[-1] ** 0.5  # (O, k, k): one caption, two noises
    xt = x.transpose(0, 1)  # (k, O, P)
    by_caption = torch.cdist(xt, xt) / x.shape[-1] ** 0.5  # (k, O, O): one noise, two captions
    out = {"generator_caption_distance": (by_caption.sum() / (k * O * (O - 1))).item(),
           "generator_noise_distance": (by_noise.sum() / (O * k * (k - 1))).item()}
    real_rows = rows[:num_real]
    batch = dm._collate()([dm._dataset(r["split"])[r["index"]] for r in real_rows])
    real = task.real_samples(batch)
    context = task.encode(task.condition_inputs(batch))
    objs = [r["objects"][0] for r in real_rows]
    perm = torch.arange(len(objs)).roll(1)  # each picture with its neighbour's caption
    other = torch.tensor([objs[int(perm[i])] != objs[i] for i in range(len(objs))])
    swapped = type(context)(context.x[perm], context.mask[perm], context.modality[perm], context.names)
    matching = task.discriminator(real, context)[other]
    mismatching = task.discriminator(real, swapped)[other]
    out["d_matching_logit"] = matching.mean().item()
    out["d_mismatching_logit"] = mismatching.mean().item()
    out["d_prefers_matching"] = (matching > mismatching).float().mean().item()
    if getattr(task.discriminator, "words", None) is not None and dm.tokenizer is not None:
        ids = torch.tensor([dm.tokenizer.encode(o)[-1] for o in objs])  # the object's word
        candidates = torch.tensor(sorted(set(ids.tolist())))
        fake = task.generate(task.condition_inputs(batch), 1)
        for name, pictures in (("real", real), ("generated", fake)):
            _, words = task.discriminator(pictures, context, return_words=True)
            named = candidates[words[:, candidates].argmax(-1)]
            out[f"d_words_{name}_acc"] = (named == ids).float().mean().item()
    return out


def main(argv: list[str] | None = None) -> dict[str, dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", required=True, help="GAN checkpoint (trained with mmctx fit)")
    parser.add_argument("--root", default=None, help="default data folder (default: the checkpoint's)")
    parser.add_argument("--epochs", type=int, default=15, help="classifier epochs")
    parser.add_argument("--classifiers", type=int, default=5, help="classifiers (seeds) voting")
    parser.add_argument("--samples-per-condition", type=int, default=16)
    parser.add_argument("--raw-generator", action="store_true", help="sample the generator, not its EMA")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args(argv)
    start = time.perf_counter()

    task = GANTask.load_from_checkpoint(args.ckpt, map_location="cpu").eval()
    ckpt = torch.load(args.ckpt, map_location="cpu", weights_only=True)
    saved = ckpt.get("datamodule_hyper_parameters", {})
    dm_args = {k: v for k, v in saved.items() if not k.startswith("_")}  # LightningCLI adds _class_path etc.
    if args.root is not None:
        dm_args["root"] = args.root
    dm_args.update(num_workers=0)
    dm = DefaultDataModule(**dm_args)
    dm.prepare_data()
    if task.target != "image":
        raise SystemExit(f"score_gan: {args.ckpt} generates {task.target!r}, not images")

    rows = load_rows(dm)
    objects = sorted({r["objects"][0] for r in rows})
    obj_index = {o: i for i, o in enumerate(objects)}
    pack = AssetPack()
    category_of = {r["objects"][0]: CATEGORIES.index(pack.by_name[r["objects"][0]].category) for r in rows}
    x_real = real_pictures(task, dm, rows)
    cat = torch.tensor([category_of[r["objects"][0]] for r in rows])
    obj = torch.tensor([obj_index[r["objects"][0]] for r in rows])
    perm = torch.randperm(len(rows), generator=torch.Generator().manual_seed(args.seed))
    n_test = max(1, len(rows) // 5)
    test_idx, train_idx = perm[:n_test], perm[n_test:]
    if args.classifiers < 1:
        raise SystemExit(f"score_gan: --classifiers must be >= 1, got {args.classifiers}")
    nets = [train_classifier(x_real[train_idx], cat[train_idx], obj[train_idx], len(objects), args.epochs,
                             args.seed + i) for i in range(args.classifiers)]
    net = Ensemble(nets, torch.tensor([category_of[o] for o in objects])).eval()

    # one condition per distinct object: its first single-object row (any split)
    first: dict[str, dict] = {}
    for r in rows:
        first.setdefault(r["objects"][0], r)
    cond_rows = [first[o] for o in objects]
    k = args.samples_per_condition
    inputs = condition_batch(task, dm, cond_rows)
    z = torch.randn(len(cond_rows) * k, task.generator.z_dim, generator=torch.Generator().manual_seed(args.seed))
    x_gen = task.generate(inputs, k, z=z, use_ema=not args.raw_generator)  # (O·k, C, H, W)
    gen_obj = torch.arange(len(objects)).repeat_interleave(k)
    gen_cat = torch.tensor([category_of[o] for o in objects]).repeat_interleave(k)
    x_noise = torch.rand(x_gen.shape, generator=torch.Generator().manual_seed(args.seed + 1)) * 2 - 1

    results: dict[str, dict] = {}
    for name, x, c, o in (
        ("real", x_real[test_idx], cat[test_idx], obj[test_idx]),
        ("generated", x_gen, gen_cat, gen_obj),
        ("noise", x_noise, gen_cat, gen_obj),
    ):
        pc, ph, po, feats = classify(net, x)
        results[name] = {
            "n": len(x),
            "category_acc": (pc == c).float().mean().item(),
            "category_head_acc": (ph == c).float().mean().item(),
            "object_acc": (po == o).float().mean().item(),
            "per_category_acc": {cat_name: (pc[c == i] == i).float().mean().item()
                                 for i, cat_name in enumerate(CATEGORIES) if bool((c == i).any())},
            "pixel_diversity": group_diversity(x, o.tolist()),
            "feature_diversity": group_diversity(feats, o.tolist()),
        }
        # each classifier alone (the spread the vote removes): accuracies of its own predictions
        singles = [classify(Ensemble([one], net.object_category), x)[:3] for one in nets]
        results[name]["single_classifiers"] = {
            key: [(p[j] == t).float().mean().item() for p in singles]
            for key, j, t in (("category_acc", 0, c), ("category_head_acc", 1, c), ("object_acc", 2, o))
        }
    # the real diversity over all of an object's real pictures (more than the 20 % test part)
    *_, real_feats = classify(net, x_real)
    results["real"]["pixel_diversity"] = group_diversity(x_real, obj.tolist())
    results["real"]["feature_diversity"] = group_diversity(real_feats, obj.tolist())

    generator = "raw generator" if args.raw_generator else "EMA generator"
    print(f"\nGAN score: {args.ckpt} ({generator}, {len(objects)} single-object captions x {k} samples; "
          f"classifier on {len(train_idx)} real single-object pictures at "
          f"{tuple(x_real.shape[-2:])}, {args.epochs} epochs, {args.classifiers} voting)\n")
    head = ("pictures", "n", "category acc", "object acc", "category head", "pixel diversity", "feature diversity")
    labels = {"real": "real (held-out)", "generated": "generated", "noise": "uniform noise"}
    body = [
        (labels[name], str(r["n"]), f"{r['category_acc']:.1%}", f"{r['object_acc']:.1%}",
         f"{r['category_head_acc']:.1%}", f"{r['pixel_diversity']:.3f}", f"{r['feature_diversity']:.3f}")
        for name, r in results.items()
    ]
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(head)]
    for cells in (head, tuple("-" * w for w in widths), *body):
        print("| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |")
    ratio = results["generated"]["pixel_diversity"] / results["real"]["pixel_diversity"]
    print(f"\nchance: category {1 / len(CATEGORIES):.1%}, object {1 / len(objects):.1%}; "
          f"diversity = mean pairwise RMS distance among pictures of one object (generated/real pixel ratio "
          f"{ratio:.2f}); {time.perf_counter() - start:.0f} s")
    print("generated, category acc per category: " + ", ".join(
        f"{k} {v:.1%}" for k, v in results["generated"]["per_category_acc"].items()))
    if args.classifiers > 1:
        for name in ("real", "generated"):
            singles = results[name]["single_classifiers"]
            print(f"{name}, each classifier alone (mean, min-max of {args.classifiers}): " + "; ".join(
                f"{key.removesuffix('_acc').replace('_', ' ')} {sum(v) / len(v):.1%} ({min(v):.1%}-{max(v):.1%})"
                for key, v in singles.items()))
    slots = torch.tensor([["left", "middle", "right"].index(r["slots"][0]) for r in rows])
    real_pos = object_positions(x_real)
    real_third = (real_pos[:, 0] * 3).long().clamp(0, 2)
    positions = {"estimator_real_third_acc": (real_third == slots).float().mean().item(),
                 "real": position_stats(real_pos, obj.tolist()),
                 "generated": position_stats(object_positions(x_gen), gen_obj.tolist())}
    results["positions"] = positions
    print(f"positions of the object (estimated; the true third of {positions['estimator_real_third_acc']:.0%} of "
          "real pictures): " + "; ".join(
              f"{name} left/middle/right " + "/".join(f"{t:.0%}" for t in p["thirds"])
              + f", height std {p['height_std']:.2f}, a caption's most common third {p['same_third']:.0%}"
              for name, p in (("real", positions["real"]), ("generated", positions["generated"]))))
    diag = conditioning_diagnostics(task, dm, rows, cond_rows, args.seed)
    results["diagnostics"] = diag
    line = (f"conditioning: generator pixel RMS change with the caption {diag['generator_caption_distance']:.3f} "
            f"vs with the noise {diag['generator_noise_distance']:.3f}; discriminator on real pictures: own caption "
            f"{diag['d_matching_logit']:.2f} vs another's {diag['d_mismatching_logit']:.2f} (own higher in "
            f"{diag['d_prefers_matching']:.0%})")
    if "d_words_real_acc" in diag:
        line += (f"; its word head names the object of {diag['d_words_real_acc']:.0%} of real and "
                 f"{diag['d_words_generated_acc']:.0%} of generated pictures")
    print(line)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
