"""Shared test helpers: independent references (plain torch, the lpips package), generated data and runners.

The references are written here, not taken from the code under test: activations from
torchvision's own modules in float64, the five methods as the README defines them, the lpips
package's scorers. Fixtures live in conftest.py; test modules import from here, never from
each other (`python -m tests.collapse_study` imports this module as `tests.helpers`).
"""
import contextlib
import csv
import io
import os
import re
import shutil
from pathlib import Path

import lpips
import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

import distance
from experiment import main as experiment_main
from loss_networks import FeatureExtractor
from metric import UNTRAINED, DistanceMetric, score_2afc


# ---------------------------------------------------------------- front doors


def run_cli(main, argv):
    """A front door's `main(argv)` in this process, as the shell runs it: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as exit_info:  # argparse's usage errors
            code = exit_info.code
    assert "Traceback" not in err.getvalue()
    return code, out.getvalue(), err.getvalue()


def usage_error(main, argv):
    """The usage message (stderr) of a front door that refuses `argv` as argparse does, exit status 2."""
    code, _, err = run_cli(main, argv)
    assert code == 2, err
    return err


def cli_error(main, argv, pattern):
    """The one-line error of a front door that fails (status 1) on `argv`, after any progress bars; it must
    match `pattern` (re.search)."""
    code, _, err = run_cli(main, argv)
    error = err.rstrip("\n").split("\n")[-1]
    assert code == 1 and err.count(": error: ") == 1 and ": error: " in error, (code, err)
    assert re.search(pattern, error), error
    return error


# ---------------------------------------------------------------- weights


FILES = {
    "alex": (torchvision.models.alexnet, "alexnet-owt-7be5be79.pth"),
    "squeeze": (torchvision.models.squeezenet1_1, "squeezenet1_1-b8a52dc0.pth"),
    "vgg": (torchvision.models.vgg16, "vgg16-397923af.pth"),
}


def write_random_weights(home, nets=tuple(FILES)):
    """Random weights for `nets` under `home`/hub/checkpoints with torchvision's file names (net k drawn
    from seed k): {net: path of its file}."""
    folder = Path(home) / "hub" / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for seed, net in enumerate(FILES):
        if net in nets:
            constructor, name = FILES[net]
            torch.manual_seed(seed)
            paths[net] = str(folder / name)
            torch.save(constructor(weights=None).state_dict(), paths[net])
    return paths


# ---------------------------------------------------------------- the metric's references

NETS = ("alex", "squeeze", "vgg")
LPIPS_LAYERS = {"alex": [1, 4, 7, 9, 11], "squeeze": [1, 4, 7, 9, 10, 11, 12], "vgg": [3, 8, 15, 22, 29]}
CONSTRUCTORS = {"alex": torchvision.models.alexnet, "squeeze": torchvision.models.squeezenet1_1,
                "vgg": torchvision.models.vgg16}
IMAGENET = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])


def images(seed, n=2, size=48):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def reference_features(net, path, x):
    """Activations at the LPIPS layers, computed in float64 with the model's own modules."""
    model = CONSTRUCTORS[net](weights=None)
    model.load_state_dict(torch.load(path, weights_only=True))
    mean, std = (torch.tensor(v, dtype=torch.float64).view(1, 3, 1, 1) for v in IMAGENET)
    h, out = (x.double() - mean) / std, []
    with torch.no_grad():
        for i, module in enumerate(model.double().features[: LPIPS_LAYERS[net][-1] + 1]):
            h = module(h)
            if i in LPIPS_LAYERS[net]:
                out.append(h.clone())
    return out


def reference_distance(f0, f1, method, channel_norm):
    """The methods' definition, written out directly: view, normalise, squared difference."""
    def view(f, part):
        n, c, h, w = f.shape
        if part == "sort":
            f = torch.sort(f.reshape(n, c, h * w), dim=2)[0].reshape(n, c, h, w)
        if part == "mean":
            f = f.mean(dim=(2, 3), keepdim=True).expand(n, c, h, w)
        if channel_norm:
            f = f / (torch.sqrt((f ** 2).sum(dim=1, keepdim=True)) + 1e-10)
        return f

    total = 0
    for a, b in zip(f0, f1):
        for part in method.split("+"):
            total = total + ((view(a, part) - view(b, part)) ** 2).sum(dim=1).mean(dim=(1, 2))
    return total


def assert_close(ours, ref, rtol=1e-5, atol=0.0):
    """|ours - ref| <= atol + rtol * |ref| everywhere (tensors or numbers); the message gives the largest
    relative difference."""
    ours, ref = torch.as_tensor(ours).double(), torch.as_tensor(ref).double()
    gap = (ours - ref).abs()
    rel = (gap / ref.abs().clamp_min(1e-12)).max().item()
    assert (gap <= atol + rtol * ref.abs()).all(), f"relative difference {rel:.3g} > {rtol}: {ours} vs {ref}"


def lpips_reference(net, path, **kwargs):
    """lpips.LPIPS with random backbone, then our backbone weights copied into its slices."""
    model = lpips.LPIPS(net=net, pnet_rand=True, verbose=False, **kwargs)
    weights = torch.load(path, weights_only=True)
    for name, param in model.net.named_parameters():
        _, index, kind = name.split(".", 2)
        param.data.copy_(weights[f"features.{index}.{kind}"])
    return model


def lpips_spatial(model, in0, in1):
    """What lpips.LPIPS(spatial=True) returns, from a model built without it: LPIPS's constructor only stores
    the flag, which its forward reads, so one model serves both (vgg is slow to build)."""
    model.spatial = True
    try:
        return model(in0, in1)
    finally:
        model.spatial = False


# how lpips.LPIPS is built ({} for v0.1) for each configuration of DistanceMetric that equals it
LPIPS_PACKAGE = {"v0.1": {}, "v0.0": {"version": "0.0"}, "baseline": {"lpips": False}}
LPIPS_EQUIVALENT = {"v0.1": {"lin": True, "normalize": "lpips", "lpips_weights": "official"},
                    "v0.0": {"lin": True, "normalize": "signed", "lpips_weights": "official-v0.0"},
                    "baseline": {"normalize": "lpips"}}


# ---------------------------------------------------------------- BAPPS scoring references

SETS = [("2afc", s, ("ref", "p0", "p1"), "judge")
        for s in ("traditional", "cnn", "superres", "deblur", "color", "frameinterp")] + \
       [("jnd", s, ("p0", "p1"), "same") for s in ("traditional", "cnn")]


class OneBatch:
    """The `load_data()` interface of lpips' data loaders, serving one batch."""

    def __init__(self, **batch):
        self.batch = batch

    def load_data(self):
        return [self.batch]


def lpips_2afc(d0, d1, judge):
    """lpips.score_2afc_dataset on given distances: its `func(ref, p)` returns p itself."""
    loader = OneBatch(ref=torch.zeros(len(d0)), p0=d0, p1=d1, judge=judge)
    return lpips.score_2afc_dataset(loader, lambda ref, p: p)[0]


def lpips_jnd(d, same):
    """lpips.score_jnd_dataset on given distances: its `func(p0, p1)` returns p1 itself."""
    loader = OneBatch(p0=torch.zeros(len(d)), p1=d, same=same)
    return lpips.score_jnd_dataset(loader, lambda p0, p1: p1)[0]


def read_set(root, dataset, subsplit, keys, label):
    """One set read with PIL and numpy alone: ({key: images (N, 3, H, W)}, labels (N,)), stems sorted."""
    folder = Path(root) / ("val" if dataset == "2afc" else "jnd/val") / subsplit
    stems = sorted(p.stem for p in (folder / label).glob("*.npy"))
    images = {key: torch.stack([torch.from_numpy(np.array(Image.open(folder / key / f"{stem}.png").convert("RGB")))
                                .permute(2, 0, 1).float() / 255 for stem in stems]) for key in keys}
    labels = torch.tensor([float(np.load(folder / label / f"{stem}.npy")[0]) for stem in stems])
    return images, labels


def expected_scores(bapps, features, compare):
    """lpips' scoring (and accuracy in plain torch) of every set, with features computed in one call.

    `features(x)` returns a list of per-image tensors; `compare(f0, f1)` -> {config: distances (N,)}.
    """
    sets = [(dataset, subsplit, *read_set(bapps, dataset, subsplit, keys, label))
            for dataset, subsplit, keys, label in SETS]
    everything = features(torch.cat([images[key] for *_, images, _ in sets for key in images]))
    start, expected = 0, {}
    for dataset, subsplit, images, labels in sets:
        feats = {}
        for key in images:
            feats[key] = [f[start:start + len(labels)] for f in everything]
            start += len(labels)
        if dataset == "2afc":
            d0, d1 = compare(feats["ref"], feats["p0"]), compare(feats["ref"], feats["p1"])
            for config in d0:
                expected[(*config, dataset, subsplit, "score")] = lpips_2afc(d0[config], d1[config], labels)
                agree = (d0[config] < d1[config]) == (labels < 0.5)
                expected[(*config, dataset, subsplit, "accuracy")] = agree.double().mean().item()
        else:
            d = compare(feats["p0"], feats["p1"])
            for config in d:
                expected[(*config, dataset, subsplit, "map")] = lpips_jnd(d[config], labels)
    return expected


def assert_scores_equal(ours, expected):
    assert set(ours) == set(expected)
    for key, value in expected.items():
        assert ours[key] == pytest.approx(value, abs=1e-9), key


class ForwardCounter:
    """A global forward hook counting the images each FeatureExtractor sees while evaluating."""

    def __init__(self):
        self.images, self.extractors = {}, {}
        self.handle = torch.nn.modules.module.register_module_forward_hook(self.hook)

    def hook(self, module, inputs, output):
        if isinstance(module, FeatureExtractor):
            # construction probes the channel counts outside inference mode; evaluation runs inside it
            kind = "eval" if torch.is_inference_mode_enabled() else "other"
            self.images[module.net, kind] = self.images.get((module.net, kind), 0) + inputs[0].shape[0]
            self.extractors.setdefault(module.net, set()).add(id(module))

    def remove(self):
        self.handle.remove()


# ---------------------------------------------------------------- experiment.py runs and results.csv

LIMIT = ["--limit", "2"]
IMAGES_PER_NET = 6 * 2 * 3 + 2 * 2 * 2  # every image of the first two examples of every set, once


def run_experiment(args, bapps, out, *extra):
    """experiment.main in this process on the tree `bapps`, into `out`: its exit status."""
    return experiment_main(["--data-root", bapps, "--no-download", "--out", str(out), "--num-workers", "0",
                            "--batch-size", "5", *args, *extra])


def read_results_csv(out):
    """The rows of OUT/results.csv (dicts)."""
    with open(Path(out) / "results.csv", newline="") as file:
        return list(csv.DictReader(file))


def values(rows, **match):
    """{(method, channel_norm, dataset, subsplit, measure): float} of the rows matching `match`."""
    return {(r["method"], r["channel_norm"] == "true", r["dataset"], r["subsplit"], r["measure"]): float(r["value"])
            for r in rows if all(r[k] == v for k, v in match.items())}


def table_row(config, version, values_by_set, weights="w.pth@00000000", limit="all", data="bapps:00000000"):
    """results.csv rows of one configuration (net, variant, method, channel_norm) and version."""
    net, variant, method, norm = config
    return [{"net": net, "layers": "1-2", "variant": variant, "method": method, "channel_norm": norm,
             "normalize": "imagenet", "version": str(version), "dataset": dataset, "subsplit": subsplit,
             "measure": measure, "value": repr(value), "n": "10", "limit": limit, "weights": weights,
             "ci_low": "", "ci_high": "", "data": data}
            for (dataset, subsplit, measure), value in values_by_set.items()]


def table_cells(table):
    return [[c.strip() for c in line.strip("|").split("|")] for line in table.splitlines()[2:]
            if line.startswith("|")]


# ---------------------------------------------------------------- analysis.py image folders

ANALYSIS_SIZE = 48
CASES = [
    ("same", "a/tex.png", "a/tex_copy.png", "closer_than_refs"),
    ("rotate", "a/tex.png", "a/tex_rot90.png", "closer_than_refs"),
    ("stain", "a/tex.png", "a/tex_global.png", "closer_than:a/tex_stain.png"),
    ("alpha", "b/pic.png", "b/pic_alpha.png", "closer_than_refs"),
]
REFS = ("ref/black.png", "ref/noise.png", "ref/white.png")
MAGENTA = (255, 0, 255)


def texture(seed, size=ANALYSIS_SIZE):
    """A smooth random RGB picture (uint8), upsampled from coarse noise."""
    coarse = np.random.default_rng(seed).integers(0, 256, (6, 6, 3), dtype=np.uint8)
    return np.array(Image.fromarray(coarse).resize((size, size), Image.BICUBIC))


def save_array(folder, rel, array):
    path = folder / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def write_manifest(folder, rows):
    with open(folder / "manifest.csv", "w", newline="") as f:
        csv.writer(f).writerows([("category", "image", "variant", "rule"), *rows])


def make_folder(folder):
    """The CASES: a byte copy, a rotation, a stain against a global offset, and an RGBA variant whose
    transparent half hides magenta where its image is white."""
    tex = texture(0)
    save_array(folder, "a/tex.png", tex)
    shutil.copy(folder / "a/tex.png", folder / "a/tex_copy.png")
    save_array(folder, "a/tex_rot90.png", np.ascontiguousarray(np.rot90(tex)))
    stained = tex.copy()
    stained[10:18, 10:18] = (255, 0, 0)
    save_array(folder, "a/tex_stain.png", stained)
    save_array(folder, "a/tex_global.png", np.clip(tex.astype(int) + 12, 0, 255).astype(np.uint8))
    pic = texture(1)
    pic[:, : ANALYSIS_SIZE // 2] = 255
    save_array(folder, "b/pic.png", pic)
    alpha = np.full((ANALYSIS_SIZE, ANALYSIS_SIZE, 1), 255, np.uint8)
    alpha[:, : ANALYSIS_SIZE // 2] = 0
    hidden = pic.copy()
    hidden[:, : ANALYSIS_SIZE // 2] = MAGENTA
    save_array(folder, "b/pic_alpha.png", np.concatenate([hidden, alpha], axis=2))
    for name, value in (("black", 0), ("white", 255)):
        save_array(folder, f"ref/{name}.png", np.full((ANALYSIS_SIZE, ANALYSIS_SIZE, 3), value, np.uint8))
    noise = np.random.default_rng(2).integers(0, 256, (ANALYSIS_SIZE, ANALYSIS_SIZE, 3), dtype=np.uint8)
    save_array(folder, "ref/noise.png", noise)
    write_manifest(folder, CASES)
    return folder


def load_white(path):
    """The image as (1, 3, H, W) in [0, 1], alpha over white (written here, not the project's loader)."""
    rgba = np.asarray(Image.open(path).convert("RGBA"), dtype=np.float32) / 255
    rgb = rgba[..., :3] * rgba[..., 3:] + (1 - rgba[..., 3:])
    return torch.from_numpy(rgb).permute(2, 0, 1)[None].contiguous()


def load_dropping_alpha(path):
    rgb = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255
    return torch.from_numpy(rgb).permute(2, 0, 1)[None].contiguous()


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# ---------------------------------------------------------------- distance.py folders

PICTURE_SIZE = 32
PAIRED = ("a.png", "sub/b.png", "sub/deeper/c.png", "gray.png", "alpha.png")
HEADER = ["path0", "path1", "distance", "net", "layers", "variant", "method", "channel_norm", "normalize"]


def picture(seed, size=PICTURE_SIZE, channels=3):
    """A smooth random picture (uint8), upsampled from coarse noise."""
    coarse = np.random.default_rng(seed).integers(0, 256, (4, 4, channels), dtype=np.uint8)
    image = Image.fromarray(coarse.squeeze(-1) if channels == 1 else coarse)
    return image.resize((size, size) if isinstance(size, int) else size, Image.BICUBIC)


def save_picture(folder, name, image):
    path = Path(folder) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return str(path)


def fill(folder, offset, names=PAIRED, extra=()):
    """Pictures under `folder` (grayscale and RGBA for those so named), seeds shifted by `offset`."""
    for i, name in enumerate((*names, *extra)):
        channels = 1 if name.startswith("gray") else 4 if name.startswith("alpha") else 3
        save_picture(folder, name, picture(offset + i, channels=channels))
    return str(folder)


def run_distance(argv, capsys):
    """main(argv) in this process: (exit code, stdout, stderr)."""
    code = distance.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def read_csv_rows(path_or_text):
    """The rows (lists) of a CSV file, or of CSV text."""
    text = Path(path_or_text).read_text() if os.path.exists(str(path_or_text)) else path_or_text
    return list(csv.reader(io.StringIO(text)))


# ---------------------------------------------------------------- training: triplets judged by a hidden metric
# The hidden metric is a DistanceMetric with linear weights on the same (random) backbone as the
# learner, where only some channels of one layer count: its judgements are reachable by training
# the linear weights, and differ from the uncalibrated baseline (all channels of all layers).

RECOVERY = {"train": 600, "held_out": 300, "size": 64, "batch_size": 25, "lr": 1e-2, "epochs": 4}


def smooth_images(n, size, generator):
    """Random images in [0, 1] with structure at several scales."""
    out = torch.zeros(n, 3, size, size)
    for cells in (2, 4, 8, size):
        coarse = torch.rand(n, 3, cells, cells, generator=generator)
        out += torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    return out / 4


def distort(ref, strength, generator):
    """Each image plus noise of a random colour and grain at `strength` (N, 1, 1, 1), clipped to [0, 1]."""
    n, _, size, _ = ref.shape
    colour = torch.randn(n, 3, 1, 1, generator=generator)
    colour = colour / colour.norm(dim=1, keepdim=True)
    grain = torch.randint(1, 4, (n,), generator=generator)
    noise = torch.stack([
        torch.nn.functional.interpolate(torch.randn(1, 1, size // 2 ** g, size // 2 ** g, generator=generator),
                                        size=(size, size), mode="nearest")[0]
        for g in grain.tolist()])
    return (ref + strength * colour * noise).clamp(0, 1)


def hidden_metric(net="alex", method="spatial", channel_norm=True, channels=8, layers=None, seed=0, layer=0):
    """A metric in which only `channels` random channels of one layer count."""
    metric = DistanceMetric(net, method=method, channel_norm=channel_norm, lin=True, lpips_weights=UNTRAINED,
                            layers=layers)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for lins in metric.lins.values():
            for k, lin in enumerate(lins):
                weight = lin.model[1].weight
                weight.zero_()
                if k == layer % len(lins):
                    chosen = torch.randperm(weight.shape[1], generator=generator)[:channels]
                    weight[0, chosen] = 1.0
    return metric.eval()


def judged_triplets(metric, n, size=32, seed=0):
    """{ref, p0, p1, judge} tensors: judge is 1 where the hidden metric finds p1 closer to ref."""
    generator = torch.Generator().manual_seed(seed)
    ref = smooth_images(n, size, generator)
    # one strength for both: which of the two is closer depends on which channels count
    strength = 0.05 + 0.2 * torch.rand(n, 1, 1, 1, generator=generator)
    p0, p1 = distort(ref, strength, generator), distort(ref, strength, generator)
    with torch.no_grad():
        judge = (metric(ref, p1) < metric(ref, p0)).float()
    return {"ref": ref, "p0": p0, "p1": p1, "judge": judge[:, None]}


class Triplets(torch.utils.data.Dataset):
    """A dict of equally long tensors as a dataset of dict items (as the BAPPS datasets yield)."""

    def __init__(self, tensors):
        self.tensors = tensors

    def __len__(self):
        return len(next(iter(self.tensors.values())))

    def __getitem__(self, i):
        return {k: v[i] for k, v in self.tensors.items()}


def agreement(metric, triplets):
    """2AFC score of `metric` on the judged triplets (the fraction of judgements it agrees with)."""
    metric.eval()
    with torch.no_grad():
        d0, d1 = metric(triplets["ref"], triplets["p0"]), metric(triplets["ref"], triplets["p1"])
    return score_2afc(d0, d1, triplets["judge"])[0]
