"""Deep perceptual similarity metrics and the BAPPS experiments.

`DistanceMetric` compares two images through the activations of a loss network
(`loss_networks.FeatureExtractor`) by one of five methods, with or without
channel-wise normalisation and LPIPS linear calibration. The computation is split
where the cost is: `features` (one backbone pass per image), `views` (each method's
transform of the activations, computed once per image) and `compare` (distances
between two images' views, for any number of configurations at once).

The BAPPS experiment scores networks x methods x channel norms x variants on the
2AFC and JND validation sets (`score_2afc`, `score_jnd`), one backbone pass per
image for all configurations, into `OUT/results.csv` and the table `OUT/results.md`:

    python experiment.py --net alex squeeze vgg --method all --channel-norm both
    python experiment.py --net alex --variant lin --normalize lpips --lpips-weights official
    python experiment.py --net resnet50 --layers 2 4 5 7 --per-layer    # any torchvision net, any points
    python experiment.py --preset paper --method all                    # the original's 14-network grid

`--train` trains LPIPS calibrations (`LPIPSTraining`, the recipe of the LPIPS paper) on
BAPPS train, then evaluates each trained version the same way:

    python experiment.py --net alex --variant lin --train --repetitions 3
    python experiment.py --net vgg --variant tune --train --devices 4 --strategy ddp

The training itself lives in `training.py`, imported only by `--train`, so that
`from experiment import DistanceMetric` stays light (no Lightning).

`--net l2 ssim` (alone or beside networks) adds the classic rows of the LPIPS paper,
L2 and DSSIM in `--colorspace Lab` or `RGB` (`pixel_metrics.py`, imported only then),
scored by the same evaluation.
"""
import argparse
import contextlib
import csv
import hashlib
import io
import os
import re
import statistics
import sys
from importlib import resources
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from dataset_collector import SUBSPLITS, DatasetError, dataset_collector, retry_settings
from loss_networks import (DEFAULT_LAYERS, DEFAULT_RULE, LPIPS_NETS, NETWORKS, PRESET, FeatureExtractor,
                           WeightsUnavailableError, canonical_net, check_layers, fetch_pretrained,
                           load_state_dict_file)

METHODS = ("spatial", "sort", "mean", "spatial+sort", "spatial+mean")
PARTS = {method: tuple(method.split("+")) for method in METHODS}
ALL_CONFIGS = tuple((method, norm) for method in METHODS for norm in (True, False))
NORMALIZATIONS = {
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "lpips": ((-0.030, -0.088, -0.188), (0.458, 0.448, 0.450)),
}
RANGE_TOLERANCE = 1e-3
PRESETS = {"paper": PRESET}  # --preset: {net: extraction points}


def check_images(x, name="x"):
    """Raise ValueError unless `x` is a float tensor (N, 3, H, W) with values in [0, 1].

    One reduction (min and max together) on the common path: it runs on every batch.
    NaN fails every comparison, so NaN and infinities are told apart only on the error path.
    """
    if not torch.is_tensor(x):
        raise ValueError(f"{name} must be a torch.Tensor of shape (N, 3, H, W), got {type(x).__name__}")
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(
            f"{name} has shape {tuple(x.shape)}, expected (N, 3, H, W) RGB; add a batch dimension "
            f"with x[None] or replicate grayscale with x.expand(-1, 3, -1, -1)"
        )
    if not x.is_floating_point():
        raise ValueError(f"{name} has dtype {x.dtype}, expected floats in [0, 1]: use x.float() / 255")
    if x.numel() == 0:
        return
    lo, hi = torch.stack(torch.aminmax(x.detach())).tolist()
    if not (lo >= -RANGE_TOLERANCE and hi <= 1 + RANGE_TOLERANCE):
        raise ValueError(_range_problem(x.detach(), name, lo, hi))


def _range_problem(x, name, lo, hi):
    """The message for values outside [0, 1]: NaN and infinities located by batch item, else a rescaling hint."""
    for kind, bad in (("NaN", torch.isnan(x)), ("infinite", torch.isinf(x))):
        count = int(bad.sum())
        if count:
            items = bad.flatten(1).any(1).nonzero().flatten().tolist()
            shown = ", ".join(map(str, items[:10])) + (", ..." if len(items) > 10 else "")
            return (f"{name} has {count} {kind} value{'s' * (count > 1)}, in batch items {shown} "
                    f"(of {len(x)}): the metric needs finite values in [0, 1]; check how these images were made")
    hint = "rescale with (x + 1) / 2" if lo < 0 else "divide by 255" if hi > 2 else "clamp to [0, 1]"
    return f"{name} has values in [{lo:.4g}, {hi:.4g}], expected [0, 1]: {hint}"


def transform(f, part):
    """One method's view of activations f (N, C, H, W): as is, sorted per channel, or channel means.

    The mean view is kept at (N, C, 1, 1): every position of its broadcast is equal, so
    the mean over positions of the distance is the same.
    """
    if part == "spatial":
        return f
    if part == "sort":
        return sort_channels(f)
    if part == "mean":
        return f.mean((2, 3), keepdim=True)
    raise ValueError(f"unknown method part {part!r}; expected spatial, sort or mean")


def sort_channels(f):
    """Each channel's H*W values sorted ascending, laid back as (N, C, H, W).

    On the CPU, without gradients, numpy's vectorised sort gives the same values about
    ten times faster than torch.sort on these short rows.
    """
    flat = f.flatten(2)
    if flat.device.type == "cpu" and not flat.requires_grad and flat.dtype in (torch.float32, torch.float64):
        return torch.from_numpy(np.sort(flat.numpy(), axis=-1)).view_as(f)
    return flat.sort(dim=2).values.view_as(f)


def channel_normalize(f, eps=1e-10):
    """Divide by the L2 norm over channels at each position (LPIPS's normalize_tensor)."""
    return f / (f.square().sum(1, keepdim=True).sqrt() + eps)


def layer_distance(a0, a1, lin=None):
    """Mean over positions of the (learned, if `lin`) sum over channels of (a0 - a1)**2; shape (N,)."""
    diff = F.mse_loss(a0, a1, reduction="none")  # (a0 - a1)**2 in one pass
    return diff.mean((2, 3)).sum(1) if lin is None else lin(diff)


class LinearLayer(nn.Module):
    """LPIPS's NetLinLayer: dropout, then a bias-free 1x1 conv to one channel (kept >= 0).

    `forward` takes squared differences (N, C, H, W) and returns the mean over positions
    of the conv's output, (N,). The conv is linear, so it commutes with that mean: it is
    applied to the per-channel means, the same value for far less work. Dropout still
    acts on single elements, as in LPIPS (and is the identity in eval mode).
    """

    def __init__(self, channels):
        super().__init__()
        self.model = nn.Sequential(nn.Dropout(), nn.Conv2d(channels, 1, 1, bias=False))

    def forward(self, diff):
        dropout, conv = self.model
        # under torch.autocast the linear map would run (and return) in half precision; distances stay float32
        with torch.autocast(diff.device.type, enabled=False):
            return F.linear(dropout(diff).float().mean((2, 3)), conv.weight.flatten(1).float()).flatten()


def official_lpips_path(net):
    """The LPIPS v0.1 linear weights shipped inside the `lpips` package."""
    try:
        root = resources.files("lpips")
    except ModuleNotFoundError:
        raise FileNotFoundError("lpips_weights='official' needs the lpips package: pip install lpips") from None
    return str(root / "weights" / "v0.1" / f"{net}.pth")


def lpips_key(part_index, part, layer):
    """Key of one linear layer in the LPIPS file format; a second part gets its own prefix."""
    return f"lin{layer}.model.1.weight" if part_index == 0 else f"{part}_lin{layer}.model.1.weight"


class DistanceMetric(nn.Module):
    """Deep perceptual distance between image batches in [0, 1]: `metric(x0, x1)` -> (N,)."""

    def __init__(self, net="alex", method="spatial", channel_norm=True, lin=False, normalize="imagenet",
                 pretrained=True, weights=None, lpips_weights=None, layers=None):
        super().__init__()
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")
        if normalize not in NORMALIZATIONS:
            raise ValueError(f"unknown normalize {normalize!r}; expected one of {', '.join(NORMALIZATIONS)}")
        if lpips_weights is not None and not lin:
            raise ValueError("lpips_weights are linear-layer weights: pass lin=True with them")
        self.method, self.channel_norm, self.lin, self.normalize = method, bool(channel_norm), lin, normalize
        self.net = FeatureExtractor(net, layers=layers, pretrained=pretrained, weights=weights)
        self._register_input_affine(normalize)
        self.lins = nn.ModuleDict()
        if lin:
            channels = self.net.channels()
            for part in PARTS[method]:
                self.lins[part] = nn.ModuleList(LinearLayer(c) for c in channels)
            if lpips_weights is not None:
                self.load_lpips_weights(official_lpips_path(self.net.net) if lpips_weights == "official"
                                        else lpips_weights)
        self.eval()

    def _register_input_affine(self, normalize):
        # x -> (x - mean) / std (after x -> 2x - 1 for "lpips") as one fused x * gain + offset
        mean, std = (torch.tensor(v, dtype=torch.float64).view(1, 3, 1, 1) for v in NORMALIZATIONS[normalize])
        factor, start = (2.0, -1.0) if normalize == "lpips" else (1.0, 0.0)
        self.register_buffer("gain", (factor / std).float(), persistent=False)
        self.register_buffer("offset", ((start - mean) / std).float(), persistent=False)

    def lpips_state_dict(self):
        """The linear weights in the LPIPS file format (`lin{k}.model.1.weight`)."""
        return {lpips_key(i, part, k): layer.model[1].weight.detach().clone()
                for i, part in enumerate(PARTS[self.method]) for k, layer in enumerate(self.lins[part])}

    def load_lpips_weights(self, path):
        """Load LPIPS-format linear weights from `path`, strictly (error names the keys).

        LPIPS weights are >= 0 (training clamps them): negative or non-finite values mean
        a wrong or damaged file, and nothing of it is loaded.
        """
        state = load_state_dict_file(path)
        expected = self.lpips_state_dict()
        missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
        if missing or unexpected:
            raise ValueError(f"LPIPS weights {path} do not fit {self.net.net}/{self.method}: "
                             f"missing keys {missing or 'none'}, unexpected keys {unexpected or 'none'}")
        for key, current in expected.items():
            weight = state[key]
            if weight.shape != current.shape:
                raise ValueError(f"LPIPS weights {path}: {key} has shape {tuple(weight.shape)}, "
                                 f"expected {tuple(current.shape)}")
            if not torch.isfinite(weight).all() or (weight < 0).any():
                raise ValueError(f"LPIPS weights {path}: {key} has negative or non-finite values (min "
                                 f"{weight.min().item():.4g}); LPIPS linear weights are finite and >= 0: "
                                 f"is this the right file?")
        for i, part in enumerate(PARTS[self.method]):
            for k, layer in enumerate(self.lins[part]):
                layer.model[1].weight.data.copy_(state[lpips_key(i, part, k)])

    def clamp_weights(self):
        """Keep the linear weights non-negative (LPIPS clamps after every optimiser step)."""
        with torch.no_grad():
            for layers in self.lins.values():
                for layer in layers:
                    layer.model[1].weight.clamp_(min=0)

    def features(self, x):
        """Backbone activations of images `x` in [0, 1] (normalised here).

        `x` is cast to the metric's dtype: float32 unless the metric was converted (with
        `metric.double()` a float64 input is computed in float64).
        """
        check_images(x, "images")
        return self.net(torch.addcmul(self.offset, x.to(self.offset.dtype), self.gain))

    def configs(self, method=None, channel_norm=None):
        """[(method, channel_norm)], defaulting to the metric's own configuration."""
        method = self.method if method is None else method
        channel_norm = self.channel_norm if channel_norm is None else bool(channel_norm)
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")
        if self.lin and method != self.method:
            raise ValueError(f"this metric has linear weights for {self.method!r} only, not {method!r}")
        return [(method, channel_norm)]

    def views(self, feats, configs):
        """{(part, channel_norm): per-layer tensors} for every part the configurations need."""
        needed = {(part, norm) for method, norm in configs for part in PARTS[method]}
        # half-precision activations (torch.autocast) would overflow in channel norm's sum of squares
        feats = [f.float() if f.dtype in (torch.float16, torch.bfloat16) else f for f in feats]
        out = {}
        for part in dict.fromkeys(part for part, _ in sorted(needed)):
            raw = [transform(f, part) for f in feats]
            for norm in (True, False):
                if (part, norm) in needed:
                    out[part, norm] = [channel_normalize(t) for t in raw] if norm else raw
        return out

    def compare(self, v0, v1, configs):
        """{(method, channel_norm): distances (N,)} between two images' views; shared parts computed once."""
        totals = {}
        for method, norm in configs:
            for part in PARTS[method]:
                if (part, norm) not in totals:
                    lins = self.lins[part] if self.lin else [None] * len(v0[part, norm])
                    totals[part, norm] = sum(layer_distance(a0, a1, lin)
                                             for a0, a1, lin in zip(v0[part, norm], v1[part, norm], lins))
        return {(method, norm): sum(totals[part, norm] for part in PARTS[method]) for method, norm in configs}

    def distance(self, f0, f1, method=None, channel_norm=None):
        """Distance (N,) between two lists of activations from `features`."""
        if len(f0) != len(f1) or any(a.shape != b.shape for a, b in zip(f0, f1)):
            raise ValueError("the two feature lists differ in length or shape: were the images the same size?")
        configs = self.configs(method, channel_norm)
        return self.compare(self.views(f0, configs), self.views(f1, configs), configs)[configs[0]]

    def all_methods(self, x0, x1):
        """{(method, channel_norm): (N,)} for all five methods x both norms, one backbone pass per input."""
        if self.lin:
            raise ValueError("all_methods compares the baseline configurations: use a metric with lin=False")
        check_same_shape(x0, x1)
        v0 = self.views(self.features(x0), ALL_CONFIGS)
        v1 = self.views(self.features(x1), ALL_CONFIGS)
        return self.compare(v0, v1, ALL_CONFIGS)

    def forward(self, x0, x1):
        check_same_shape(x0, x1)
        return self.distance(self.features(x0), self.features(x1))


def check_same_shape(x0, x1):
    """The two inputs of a comparison have one shape (their values are checked by `features`)."""
    if torch.is_tensor(x0) and torch.is_tensor(x1) and x0.shape != x1.shape:
        raise ValueError(f"x0 and x1 differ in shape: {tuple(x0.shape)} vs {tuple(x1.shape)}; "
                         f"resize them to the same (N, 3, H, W)")


# ---------------------------------------------------------------- scoring


def _as_vector(values):
    return torch.as_tensor(values).detach().flatten().cpu().double()


def score_2afc(d0, d1, judge):
    """Agreement with the human 2AFC judgements, LPIPS's definition: (score, accuracy) in [0, 1].

    `judge` is the fraction of people who found p1 closer to the reference. The score is
    the mean of `(d0 < d1) * (1 - judge) + (d1 < d0) * judge + (d0 == d1) * 0.5` (a tie
    agrees with half of the people); the accuracy the mean of `(d0 < d1) == (judge < 0.5)`.
    """
    d0, d1, judge = _as_vector(d0), _as_vector(d1), _as_vector(judge)
    if not len(d0) == len(d1) == len(judge) or len(d0) == 0:
        raise ValueError(f"score_2afc needs equally long, non-empty d0, d1, judge; got lengths "
                         f"{len(d0)}, {len(d1)}, {len(judge)}")
    score = (d0 < d1) * (1 - judge) + (d1 < d0) * judge + (d0 == d1) * 0.5
    accuracy = ((d0 < d1) == (judge < 0.5)).double()
    return score.mean().item(), accuracy.mean().item()


def score_jnd(d, same):
    """JND mAP: the area under the precision-recall curve of "a small distance means the same".

    Pairs are ranked by distance, ascending (ties keep their input order); a pair counts
    `same` as a true positive and `1 - same` as a false one (`same` is the fraction of
    people who saw no difference), and the area is taken under the monotone precision
    envelope (`voc_ap`), as LPIPS's `score_jnd_dataset` does. When every pair is the same,
    precision is 1 everywhere and the mAP 1.0. When no pair is (`same` sums to 0), recall
    and so the mAP are undefined: the result is nan rather than a number that would pass
    for a score.
    """
    d, same = _as_vector(d), _as_vector(same)
    if len(d) != len(same) or len(d) == 0:
        raise ValueError(f"score_jnd needs equally long, non-empty d and same; got lengths {len(d)}, {len(same)}")
    positives = same.sum()
    if positives == 0:
        return float("nan")
    same = same[torch.argsort(d, stable=True)]
    true_pos, false_pos = same.cumsum(0), (1 - same).cumsum(0)
    return voc_ap(true_pos / positives, true_pos / (true_pos + false_pos))


def voc_ap(recall, precision):
    """Area under the precision envelope (the best precision at this or a higher recall), VOC style."""
    zero, one = torch.zeros(1, dtype=torch.float64), torch.ones(1, dtype=torch.float64)
    recall = torch.cat([zero, _as_vector(recall), one])
    envelope = torch.cat([zero, _as_vector(precision), zero]).flip(0).cummax(0).values.flip(0)
    steps = torch.nonzero(recall[1:] != recall[:-1]).flatten()
    return ((recall[steps + 1] - recall[steps]) * envelope[steps + 1]).sum().item()


# ---------------------------------------------------------------- evaluation

VARIANTS = ("baseline", "lin", "tune", "scratch")
CHANNEL_NORMS = {"on": (True,), "off": (False,), "both": (True, False)}
PIXEL_METRICS = ("l2", "ssim")  # nets without a backbone: LPIPS's L2 and DSSIM (pixel_metrics.py)
COLORSPACES = ("Lab", "RGB")
# results.csv value of the columns that do not apply to a pixel metric (layers, variant, method,
# channel_norm, weights); its one configuration
NOT_APPLICABLE = "-"
PIXEL_CONFIG = (NOT_APPLICABLE, NOT_APPLICABLE)
BAPPS_SETS = {"val": ("2afc", "val"), "jnd": ("jnd", "jnd/val")}  # --splits name: (dataset column, BAPPS split)
PAIRS = {"2afc": (("ref", "p0"), ("ref", "p1")), "jnd": (("p0", "p1"),)}
LABELS = {"2afc": "judge", "jnd": "same"}


def requested_configs(methods, channel_norm="on"):
    """[(method, channel_norm)] for method names (or "all") and "on", "off" or "both"."""
    methods = METHODS if "all" in methods else tuple(dict.fromkeys(methods))
    return [(method, norm) for method in methods for norm in CHANNEL_NORMS[channel_norm]]


def build_metrics(net, variant, configs, normalize="imagenet", lpips_weights=None, pretrained=True, seed=0,
                  colorspace="Lab", layers=None):
    """{config: DistanceMetric} for `configs`, all running one FeatureExtractor.

    A configuration is (method, channel_norm), over `layers` (default: the net's), or
    (method, channel_norm, points) for some of the extraction points (see
    `batch_distances`). A pixel metric (`l2`, `ssim`) is a `pixel_metrics.PixelMetric` in
    `colorspace` instead. One baseline metric computes every configuration. `lin` needs a
    metric per configuration for its linear weights (`lpips_weights`, loaded strictly into
    each); they all run one backbone with every point, so each image still goes through it
    once (their own copies, read from the memory-mapped weights file, are dropped). Random
    backbones (`pretrained=False`) are drawn from `seed`, so a net's random weights do not
    depend on what was built before.
    """
    if net in PIXEL_METRICS:
        from pixel_metrics import PixelMetric  # scipy, only when asked for
        return dict.fromkeys(configs, PixelMetric(net, colorspace))
    points = sorted({p for config in configs for p in config_points(config) or ()}) or layers
    if variant == "baseline":
        return dict.fromkeys(configs, DistanceMetric(net, *configs[0][:2], normalize=normalize, layers=points,
                                                     pretrained=seeded(pretrained, seed)))
    if variant != "lin":
        raise ValueError(f"variant {variant!r} trains the network: it needs --train")
    metrics = {}
    for config in configs:
        metrics[config] = DistanceMetric(net, *config[:2], lin=True, normalize=normalize, lpips_weights=lpips_weights,
                                         layers=config_points(config) or layers, pretrained=seeded(pretrained, seed))
    shared = next(iter(metrics.values())).net
    if points is not None and shared.layers != points:
        shared = FeatureExtractor(net, layers=points, pretrained=seeded(pretrained, seed))
    for metric in metrics.values():
        metric.net = shared
    return metrics


def seeded(pretrained, seed):
    """`pretrained`, having seeded torch's generator with `seed` when the backbone about to be built is random."""
    if not pretrained:
        torch.manual_seed(seed)
    return pretrained


def config_points(config):
    """The extraction points of a configuration (method, channel_norm[, points]); None: all of its metric's."""
    return list(config[2]) if len(config) > 2 else None


def select_points(views, positions):
    """Views cut down to the layers at `positions` of their list (None: all)."""
    if positions is None:
        return views
    return {key: [layers[i] for i in positions] for key, layers in views.items()}


def _shared_feature_metric(metrics):
    first = next(iter(metrics.values()))
    if any(m.net is not first.net or m.normalize != first.normalize for m in metrics.values()):
        raise ValueError("metrics evaluated together must share one FeatureExtractor and normalisation "
                         "(see build_metrics); evaluate the others separately")
    return first


def batch_distances(metrics, images, pairs):
    """{config: [distances (N,) per pair]} for one batch of `images` ({name: tensor}).

    `metrics` maps configurations to the DistanceMetric holding their weights, all sharing
    one FeatureExtractor: each image goes through it once and its views are made once,
    whatever the number of pairs and configurations. A configuration is (method,
    channel_norm), over every point of that extractor, or (method, channel_norm, points)
    over some of them (one configuration per point: `--per-layer`).
    """
    views = {name: metrics_views(metrics, images[name])
             for name in dict.fromkeys(name for pair in pairs for name in pair)}
    return compare_views(metrics, views, pairs)


def metrics_views(metrics, x):
    """The views of images `x` that every configuration of `metrics` needs, from one backbone pass."""
    feature_metric = _shared_feature_metric(metrics)
    return feature_metric.views(feature_metric.features(x), list(dict.fromkeys(config[:2] for config in metrics)))


def compare_views(metrics, views, pairs):
    """{config: [distances (N,) per pair]} between precomputed views ({name: `metrics_views`})."""
    feature_metric, groups = _shared_feature_metric(metrics), {}
    for config, metric in metrics.items():
        points = config_points(config)
        every = points is None or points == feature_metric.net.layers
        positions = None if every else tuple(feature_metric.net.layers.index(p) for p in points)
        groups.setdefault((id(metric), positions), (metric, positions, []))[2].append(config)
    distances = {config: [None] * len(pairs) for config in metrics}
    for metric, positions, group in groups.values():
        for i, (a, b) in enumerate(pairs):
            found = metric.compare(select_points(views[a], positions), select_points(views[b], positions),
                                   [config[:2] for config in group])
            for config in group:
                distances[config][i] = found[config[:2]]
    return distances


def set_distances(metrics, loader, dataset, device="cpu", desc=None):
    """Distances of every configuration on one BAPPS set, each image through the backbone once.

    Returns ({config: [distances (N,) per pair]}, labels (N,)), on the CPU: 2AFC pairs
    are (ref, p0), (ref, p1) with labels `judge` (a reference serves both comparisons);
    JND has (p0, p1) with labels `same`. See `batch_distances` for `metrics`.
    """
    pairs = PAIRS[dataset]
    distances, labels = {config: [[] for _ in pairs] for config in metrics}, []
    with torch.inference_mode():
        for batch in tqdm(loader, desc=desc, unit="batch"):
            images = {name: batch[name].to(device, non_blocking=True) for pair in pairs for name in pair}
            for config, per_pair in batch_distances(metrics, images, pairs).items():
                for i, d in enumerate(per_pair):
                    distances[config][i].append(d.float().cpu())
            labels.append(batch[LABELS[dataset]].flatten().float())
    return {config: [torch.cat(d) for d in per_pair] for config, per_pair in distances.items()}, torch.cat(labels)


def evaluate(metrics, loader, dataset, device="cpu", desc=None):
    """{(method, channel_norm): {measure: value}} on one BAPPS set ("2afc": score, accuracy; "jnd": map)."""
    distances, labels = set_distances(metrics, loader, dataset, device, desc)
    if dataset == "2afc":
        return {config: dict(zip(("score", "accuracy"), score_2afc(d0, d1, labels)))
                for config, (d0, d1) in distances.items()}
    return {config: {"map": score_jnd(d, labels)} for config, (d,) in distances.items()}


def bapps_sets(root="datasets/BAPPS", splits=tuple(BAPPS_SETS), subsplits=None, download=True, limit=None):
    """[(dataset, subsplit, Dataset)] of the requested BAPPS sets, 2AFC before JND, subsplits in BAPPS order.

    `subsplits` (default all) applies to each split that has them; `limit` keeps the
    first examples of each set.
    """
    sets = []
    for split in splits:
        dataset, bapps_split = BAPPS_SETS[split]
        for subsplit in SUBSPLITS[bapps_split]:
            if subsplits is None or subsplit in subsplits:
                data = dataset_collector("BAPPS", bapps_split, subsplit, root=root, download=download)
                if limit is not None:
                    data = Subset(data, range(min(limit, len(data))))
                sets.append((dataset, subsplit, data))
    return sets


def make_loader(data, batch_size=50, num_workers=0, device="cpu"):
    """An ordered DataLoader over one set; pinned memory only when feeding a GPU."""
    return DataLoader(data, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                      pin_memory=torch.device(device).type == "cuda")


def evaluate_net(net, args, sets, device, version=0, build=None):
    """Score `net` on `sets` for each configuration of `args` missing from OUT/results.csv.

    The configurations are --method x --channel-norm over the net's extraction points
    (`args.points[net]`), all of them at once or, with `args.per_layer`, one point each.
    `build(configs)` returns {config: metric} (default: `build_metrics` with the flags
    of `args`); it runs only if something is missing, so a finished net is never even
    loaded. A configuration counts as done only when computed on the same data (`n`,
    `--limit`) with the same weights (`weights_identity`). Rows are saved after each set;
    `args.overwrite` recomputes everything.
    """
    path = results_path(args.out)
    if net in PIXEL_METRICS:
        configs = [PIXEL_CONFIG]
    else:
        point_sets = [(p,) for p in args.points[net]] if args.per_layer else [tuple(args.points[net])]
        configs = [(*config, point_set) for point_set in point_sets
                   for config in requested_configs(args.method, args.channel_norm)]
    done = set() if args.overwrite else {result_key(row) for row in read_results(path)}
    run = run_columns(net, args, version)
    todo = []
    for dataset, subsplit, data in sets:
        missing = [config for config in configs
                   if result_key(config_row(run, config, dataset, subsplit, len(data))) not in done]
        if missing:
            todo.append((dataset, subsplit, data, missing))
    if not todo:
        print(f"{net}: every requested result is already in {path}; --overwrite recomputes them")
        return
    needed = list(dict.fromkeys(config for *_, missing in todo for config in missing))
    metrics = build(needed) if build is not None else build_metrics(
        net, args.variant, needed, args.normalize, args.lpips_weights, pretrained=not args.random_init,
        seed=args.seed, colorspace=args.colorspace)
    for metric in metrics.values():
        metric.to(device).eval()
    for dataset, subsplit, data, missing in todo:
        loader = make_loader(data, args.batch_size, args.num_workers, device)
        scores = evaluate({config: metrics[config] for config in missing}, loader, dataset, device,
                          desc=f"{net} {dataset}/{subsplit}")
        save_results(path, score_rows(run, dataset, subsplit, scores, len(data)))


# ---------------------------------------------------------------- results

RESULT_COLUMNS = ("net", "layers", "variant", "method", "channel_norm", "normalize", "version",
                  "dataset", "subsplit", "measure", "value", "n", "limit", "weights")
KEY_COLUMNS = tuple(column for column in RESULT_COLUMNS if column not in ("measure", "value"))
# what a results.csv written before a column existed means by it: rows that can never be reused
# (the data and weights they were computed on are unknown), but are kept and shown
OLD_FILE_DEFAULTS = {"layers": lambda row: layers_text(DEFAULT_LAYERS.get(row["net"], ())),
                     "limit": lambda row: "unknown", "weights": lambda row: "unknown"}
TABLE_KEY = ("net", "layers", "variant", "method", "channel_norm", "normalize", "limit", "weights")
TABLE_ORDER = {"net": (*PIXEL_METRICS, *NETWORKS), "variant": VARIANTS, "method": METHODS,
               "channel_norm": ("true", "false"), "normalize": tuple(NORMALIZATIONS)}
TABLE_NOTE = ("2AFC score and JND mAP in %. A mean is over the subsplits present in its row; "
              "a configuration with several trained versions shows mean ± standard deviation over them. "
              "examples: all, or the first N of each set (--limit); weights: the backbone file and the linear "
              "weights, each with the start of its SHA-256. l2, ssim: LPIPS's L2 and DSSIM in Lab or RGB, "
              f"where '{NOT_APPLICABLE}' marks what does not apply to them.")


def results_path(out):
    return Path(out) / "results.csv"


def layers_text(layers):
    """Extraction points as written in results.csv: `1-4-7-9-11`, `5` for one point."""
    return "-".join(str(layer) for layer in layers)


_FILE_HASHES = {}


def file_identity(path):
    """`<file name>@<first 8 hex digits of its SHA-256>`: names weights by their content."""
    stat = os.stat(path)
    cache_key = (os.path.realpath(path), stat.st_size, stat.st_mtime_ns)
    if cache_key not in _FILE_HASHES:
        with open(path, "rb") as file:
            _FILE_HASHES[cache_key] = hashlib.file_digest(file, "sha256").hexdigest()[:8]
    return f"{Path(path).name}@{_FILE_HASHES[cache_key]}"


def lin_identity(path, lpips_weights):
    """The linear weights' part of `weights`; a trained version is named by its training's folder."""
    name = file_identity(path)
    if lpips_weights == "official":
        return "official:" + name
    folder = Path(path).parent
    return f"{folder.parent.name}/{folder.name}/{name}" if re.fullmatch(r"version_\d+", folder.name) else name


def weights_identity(net, lpips_weights=None, pretrained=True, seed=0):
    """What a result was computed with: the backbone weights file (or random init) and the linear weights.

    Files are named by the start of their SHA-256, so a result is reused only for the same weights.
    """
    backbone = file_identity(fetch_pretrained(net)) if pretrained else f"random:seed{seed}"
    if lpips_weights is None:
        return backbone
    path = official_lpips_path(net) if lpips_weights == "official" else lpips_weights
    return f"{backbone} lin={lin_identity(path, lpips_weights)}"


def run_columns(net, args, version=0):
    """The columns every results row of one evaluation of `net` with the flags `args` shares."""
    limit = "all" if args.limit is None else str(args.limit)
    if net in PIXEL_METRICS:  # no backbone: nothing trained, no variant or weights
        return {"net": net, "variant": NOT_APPLICABLE, "normalize": args.colorspace.lower(), "version": "0",
                "limit": limit, "weights": NOT_APPLICABLE}
    return {"net": net, "variant": args.variant, "normalize": args.normalize, "version": str(version), "limit": limit,
            "weights": weights_identity(net, args.lpips_weights,
                                        pretrained=args.variant != "scratch" and not args.random_init,
                                        seed=args.seed + version)}


def config_row(run, config, dataset, subsplit, n):
    """The key columns of a results row, as written in results.csv; config is (method, channel_norm, points),
    or a pixel metric's PIXEL_CONFIG, which has no points."""
    method, norm, *points = config
    return {**run, "layers": layers_text(points[0]) if points else NOT_APPLICABLE, "method": method,
            "channel_norm": {True: "true", False: "false"}.get(norm, norm), "dataset": dataset,
            "subsplit": subsplit, "n": str(n)}


def result_key(row):
    """What identifies a computed configuration, its data and its weights: everything but measure and value."""
    return tuple(row[column] for column in KEY_COLUMNS)


def score_rows(run, dataset, subsplit, scores, n):
    """results.csv rows for `evaluate`'s {config: {measure: value}} on one set of n examples."""
    return [{**config_row(run, config, dataset, subsplit, n), "measure": measure, "value": repr(value)}
            for config, measures in scores.items() for measure, value in measures.items()]


def read_results(path):
    """The rows of a results.csv (dicts of strings); [] when there is no file yet.

    A file written before a column existed is read with that column's meaning for old
    rows (`OLD_FILE_DEFAULTS`). A line that is cut, has extra fields or a value that is
    not a number is an error naming the file and the line: such a file is never used.
    """
    if not os.path.exists(path):
        return []
    with open(path, newline="") as file:
        reader = csv.DictReader(file)
        columns = tuple(reader.fieldnames or ())
        required = [c for c in RESULT_COLUMNS if c not in OLD_FILE_DEFAULTS]
        if not set(required) <= set(columns) <= set(RESULT_COLUMNS):
            raise ValueError(f"{path} has the columns {','.join(columns)}, not {','.join(RESULT_COLUMNS)}: "
                             f"it is not a results file of this program; move it away or choose another --out")
        return [checked_row(row, path, reader.line_num, len(columns)) for row in reader]


def checked_row(row, path, line, width):
    """A row of `path` completed with OLD_FILE_DEFAULTS; ValueError naming the line if it is damaged."""
    if None in row or None in row.values():
        raise ValueError(f"{path}, line {line}: the line is cut or has extra fields (the header has {width}); "
                         f"repair or delete that line, or choose another --out")
    for column, kind in (("value", float), ("n", int)):
        try:
            kind(row[column])
        except ValueError:
            raise ValueError(f"{path}, line {line}: {column} {row[column]!r} is not a number; repair or delete "
                             f"that line, or choose another --out") from None
    for column, default in OLD_FILE_DEFAULTS.items():
        if column not in row:
            row[column] = default(row)
    return row


def save_results(path, rows):
    """Merge `rows` into results.csv (a measurement already there is replaced), atomically.

    A file in an older format is rewritten with every column.
    """
    merged = read_results(path)
    index = {result_key(row) + (row["measure"],): i for i, row in enumerate(merged)}
    for row in rows:
        key = result_key(row) + (row["measure"],)
        if key in index:
            merged[index[key]] = row
        else:
            index[key] = len(merged)
            merged.append(row)
    text = io.StringIO()
    writer = csv.DictWriter(text, RESULT_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(merged)
    write_atomic(path, text.getvalue())


def write_atomic(path, data):
    """Write `data` (str or bytes) to a temporary file beside `path`, then rename it over `path`.

    An interrupted or failed write leaves the old file as it was and no temporary file.
    """
    with atomic_open(path) as file:
        file.write(data.encode() if isinstance(data, str) else data)


@contextlib.contextmanager
def atomic_open(path, mode="wb", **kwargs):
    """`open` a temporary file beside `path` and rename it over `path` when the block ends without error.

    An interrupted or failed block leaves the old file as it was and no temporary file,
    so output written piece by piece is complete or absent.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, mode, **kwargs) as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _cell(values):
    present = [v for v in values if v is not None]
    if not present:
        return "–"
    if len(present) == 1:
        return f"{100 * present[0]:.1f}"
    return f"{100 * statistics.fmean(present):.1f} ± {100 * statistics.stdev(present):.1f}"


def _set_mean(run, dataset):
    values = [value for (kind, _), value in run.items() if kind == dataset]
    return statistics.fmean(values) if values else None


def _table_order(config):
    return tuple((TABLE_ORDER[column].index(value) if value in TABLE_ORDER.get(column, ()) else
                  len(TABLE_ORDER.get(column, ())), _points_order(value) if column == "layers" else value)
                 for column, value in zip(TABLE_KEY, config))


def _points_order(layers):
    # numerically: a net's rows 1, 1-4-7-11, 4, 7, 11 rather than 1, 1-4-7-11, 11, 4, 7
    return tuple(int(point) for point in layers.split("-") if point.isdigit())


def weights_group(weights):
    """`weights` with a trained version's own file left out, so that a training's versions share a row."""
    return re.sub(r"/version_\d+/\S*$", "/version_*", weights)


def table_runs(rows):
    """{table row key: [{(dataset, subsplit): value} per version]} of the scores and mAPs in `rows`.

    Rows of different data (limit) or weights never share a table row; within a trained
    family (`weights_group`), a version evaluated with several files shows the latest.
    """
    runs, latest = {}, {}
    for row in rows:
        if (row["dataset"], row["measure"]) in (("2afc", "score"), ("jnd", "map")):
            config = tuple(weights_group(row[c]) if c == "weights" else row[c] for c in TABLE_KEY)
            runs.setdefault(config, {}).setdefault((row["version"], row["weights"]), {})[
                row["dataset"], row["subsplit"]] = float(row["value"])
            latest.setdefault(config, {})[row["version"]] = row["weights"]
    return {config: [runs[config][version, weights] for version, weights in latest[config].items()]
            for config in runs}


def results_table(rows):
    """Markdown table, LPIPS-paper layout: a row per configuration, data and weights; the six 2AFC val
    subsplits, their mean and the JND mAP (mean over the JND subsplits); versions as mean ± std."""
    runs = table_runs(rows)
    header = ["net", "layers", "variant", "method", "channel norm", "normalize", "examples", "weights", "versions",
              *SUBSPLITS["val"], "2AFC mean", "JND mAP"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for config in sorted(runs, key=_table_order):
        versions = runs[config]
        columns = [[run.get(("2afc", subsplit)) for run in versions] for subsplit in SUBSPLITS["val"]]
        columns += [[_set_mean(run, "2afc") for run in versions], [_set_mean(run, "jnd") for run in versions]]
        lines.append("| " + " | ".join([*config, str(len(versions)), *map(_cell, columns)]) + " |")
    return "\n".join(lines + ["", TABLE_NOTE]) + "\n"


def report(out):
    """Write OUT/results.md from OUT/results.csv and print it."""
    table = results_table(read_results(results_path(out)))
    write_atomic(Path(out) / "results.md", table)
    print(table)


# ---------------------------------------------------------------- command line


def build_parser():
    parser = argparse.ArgumentParser(
        description="Score deep perceptual similarity metrics on the BAPPS validation sets (2AFC and JND). "
                    "Results go to OUT/results.csv (configurations already there are skipped) and the "
                    "table to OUT/results.md.")
    parser.add_argument("--net", nargs="+", metavar="NET",
                        help="loss networks, loaded one at a time: alex, squeeze, vgg (aliases alexnet, squeezenet, "
                             "squeezenet1_1, vgg16) or any torchvision classifier of the registry under its "
                             "torchvision name: vgg11/13/16/19[_bn], resnet18/34/50/101/152, wide_resnet50_2/101_2, "
                             "resnext50_32x4d/101_32x8d, densenet121/161/169/201, squeezenet1_0, "
                             "shufflenet_v2_x1_0/x2_0, mobilenet_v2, mobilenet_v3_large/small, "
                             "mnasnet0_5/0_75/1_0/1_3, efficientnet_b0..b7, regnet_x_*/regnet_y_* (400mf, 800mf, "
                             "1_6gf, 3_2gf, 8gf, 16gf, 32gf), googlenet, inception_v3; and the pixel metrics l2, "
                             "ssim (LPIPS's L2 and DSSIM, see --colorspace), alone or beside networks; default: "
                             "alex (with --preset: the preset's networks)")
    parser.add_argument("--layers", nargs="+", type=int, metavar="I",
                        help="extraction points, for every --net: point k is the k-th child module of the net's "
                             "`features` (of the whole model for ResNets, ResNeXts, Wide ResNets, ShuffleNets, "
                             "GoogLeNet and Inception v3, without their classification head and auxiliary "
                             "classifiers; of `layers` for MNASNet; of `stem` then `trunk_output` for RegNets), "
                             "as the original repository counts them; the activation is taken after it. "
                             f"Default: {DEFAULT_RULE}")
    parser.add_argument("--per-layer", action="store_true",
                        help="one configuration per extraction point instead of one with all of them (like the "
                             "original's --no_multilayer); all come from one backbone pass per image")
    parser.add_argument("--preset", choices=tuple(PRESETS),
                        help="paper: the original repository's grid, 14 networks at four points each: "
                             + ", ".join(f"{net} {'-'.join(map(str, points))}" for net, points in PRESET.items())
                             + "; whole, or point by point with --per-layer; --net picks some of them")
    parser.add_argument("--random-init", action="store_true",
                        help="randomly initialised backbones (torchvision's init, drawn from --seed) instead of "
                             "the ImageNet weights: the untrained-network control of DPS studies; their rows "
                             "have weights random:seed<seed>")
    parser.add_argument("--method", nargs="+", default=["spatial"], choices=[*METHODS, "all"], metavar="METHOD",
                        help=f"how activations are compared: {', '.join(METHODS)}, or all (the five); "
                             f"default: spatial")
    parser.add_argument("--channel-norm", choices=tuple(CHANNEL_NORMS), default="on",
                        help="normalise activations over channels; both: evaluate with and without "
                             "(default: %(default)s)")
    parser.add_argument("--variant", choices=VARIANTS, default="baseline",
                        help="baseline: plain sum over channels; lin: LPIPS linear weights from --lpips-weights; "
                             "tune, scratch: trained backbones, need --train (default: %(default)s)")
    parser.add_argument("--normalize", choices=tuple(NORMALIZATIONS), default="imagenet",
                        help="input normalisation; lpips: the one LPIPS's weights were trained with "
                             "(default: %(default)s)")
    parser.add_argument("--colorspace", choices=COLORSPACES, default="Lab",
                        help="where the pixel metrics l2 and ssim compare, as LPIPS's --colorspace: Lab (the 8-bit "
                             "image in CIE Lab, range 100) or RGB; their rows have normalize lab or rgb and "
                             f"'{NOT_APPLICABLE}' in layers, variant, method, channel_norm and weights "
                             "(default: %(default)s)")
    parser.add_argument("--lpips-weights", metavar="PATH|official",
                        help="linear weights for --variant lin: 'official' (LPIPS v0.1, shipped with the lpips "
                             "package) or an LPIPS-format file; a file in a folder version_K gives its rows "
                             "version K")
    parser.add_argument("--data-root", default="datasets/BAPPS", help="BAPPS folder (default: %(default)s)")
    parser.add_argument("--no-download", action="store_true",
                        help="fail instead of downloading BAPPS parts missing under --data-root")
    parser.add_argument("--splits", nargs="+", choices=tuple(BAPPS_SETS), default=list(BAPPS_SETS),
                        help="BAPPS parts to evaluate: val (2AFC), jnd (JND); default: both")
    parser.add_argument("--subsplits", nargs="+", metavar="NAME",
                        help="only these subsplits, in each split that has them "
                             f"(val: {' '.join(SUBSPLITS['val'])}; jnd: {' '.join(SUBSPLITS['jnd/val'])}); "
                             "default: all")
    parser.add_argument("--limit", type=int, metavar="N", help="only the first N examples of each set")
    parser.add_argument("--batch-size", type=int, default=50, help="examples per batch (default: %(default)s)")
    parser.add_argument("--num-workers", type=int, default=min(4, os.cpu_count() or 1),
                        help="DataLoader worker processes, 0: load in the main process (default: %(default)s)")
    parser.add_argument("--device", default="auto",
                        help="auto (cuda when available, else cpu), cpu, cuda, cuda:N (default: %(default)s)")
    parser.add_argument("--out", default="logs/perceptual_metric",
                        help="folder of results.csv and results.md (default: %(default)s)")
    parser.add_argument("--overwrite", action="store_true", help="recompute configurations already in results.csv")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    add_training_flags(parser)
    return parser


def parse_args(argv=None):
    """Parsed and checked flags (nets canonical); a bad combination exits with a usage error."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.points = network_points(args)
        args.net = list(args.points)
        check_args(args)
    except ValueError as err:
        parser.error(str(err))
    return args


def network_points(args):
    """{canonical net: its extraction points} for --net, --layers and --preset, checked."""
    nets = list(dict.fromkeys(net if net in PIXEL_METRICS else canonical_net(net) for net in args.net or ()))
    pixel = {net: None for net in nets if net in PIXEL_METRICS}  # no extraction points
    nets = [net for net in nets if net not in PIXEL_METRICS]
    if args.preset is None:
        return {**pixel, **{net: check_layers(net, args.layers) for net in nets or ([] if pixel else ["alex"])}}
    grid = PRESETS[args.preset]
    if args.layers is not None:
        raise ValueError(f"--preset {args.preset} sets the extraction points of each network: drop --layers, "
                         f"or drop --preset and pass --net and --layers")
    outside = [net for net in nets if net not in grid]
    if outside:
        raise ValueError(f"--preset {args.preset} has no {', '.join(outside)}; its networks: {', '.join(grid)}")
    return {**pixel, **{net: list(grid[net]) for net in nets or grid}}


def check_args(args):
    """Raise ValueError, saying the fix, for flags that cannot run together."""
    pixel = [net for net in args.net if net in PIXEL_METRICS]
    if pixel and args.train:
        raise ValueError(f"--train trains networks; the pixel metrics ({', '.join(pixel)}) have nothing to "
                         f"train: evaluate them in a run without --train")
    if args.variant in ("tune", "scratch") and not args.train:
        raise ValueError(f"--variant {args.variant} trains the backbone: it needs --train")
    if args.variant == "baseline" and args.lpips_weights:
        raise ValueError("--variant baseline has no linear layers: drop --lpips-weights or use --variant lin")
    if args.variant == "lin" and not args.lpips_weights and not args.train:
        raise ValueError("--variant lin without training evaluates given linear weights: pass --lpips-weights "
                         "official (LPIPS v0.1) or --lpips-weights PATH (an LPIPS-format file), or --train")
    check_training_args(args)
    check_network_args(args)
    valid = [s for split in args.splits for s in SUBSPLITS[BAPPS_SETS[split][1]]]
    unknown = [s for s in args.subsplits or () if s not in valid]
    if unknown:
        raise ValueError(f"--subsplits {' '.join(unknown)}: no such subsplit in --splits {' '.join(args.splits)}; "
                         f"valid: {' '.join(dict.fromkeys(valid))}")
    for flag, value, least in (("--limit", args.limit, 1), ("--batch-size", args.batch_size, 1),
                               ("--num-workers", args.num_workers, 0)):
        if value is not None and value < least:
            raise ValueError(f"{flag} must be at least {least}, got {value}")
    pick_device(args.device)
    if not args.no_download:
        retry_settings()


def check_network_args(args):
    """Raise ValueError, saying the fix, for --layers, --per-layer and --random-init that cannot run."""
    official_nets = [net for net, points in args.points.items() if net not in PIXEL_METRICS
                     and (points != DEFAULT_LAYERS.get(net) or net not in LPIPS_NETS)]
    if args.lpips_weights == "official" and official_nets:
        raise ValueError(f"--lpips-weights official holds LPIPS's weights for alex, squeeze and vgg at their "
                         f"default points, not for {', '.join(official_nets)} at "
                         f"{'; '.join(layers_text(args.points[net]) for net in official_nets)}: train weights "
                         f"with --train, or pass an LPIPS-format file that fits")
    if args.per_layer and args.variant == "lin" and args.lpips_weights and not args.train:
        check_single_point_weights(official_lpips_path(args.net[0]) if args.lpips_weights == "official"
                                   else args.lpips_weights)
    if args.random_init and args.train:
        raise ValueError("--random-init evaluates untrained backbones; to train from a random backbone use "
                         "--variant scratch --train")


def check_single_point_weights(path):
    """Raise ValueError unless the LPIPS-format file `path` (if it exists) holds linear weights for one point."""
    if not os.path.isfile(path):
        return  # the evaluation says which file is missing
    count = len({re.sub(r"^(?:\w+_)?lin(\d+)\..*", r"\1", key) for key in load_state_dict_file(path)})
    if count > 1:
        raise ValueError(f"--per-layer scores each extraction point on its own, but {path} holds linear "
                         f"weights for {count} points: pass weights trained for one point (--layers P "
                         f"--variant lin --train), or drop --per-layer")


def pick_device(name="auto"):
    """torch.device for --device: auto is cuda when there is one, else cpu; ValueError for any other kind
    (mps only where it is available) or a CUDA device this machine lacks."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    usage = "use auto, cpu, cuda or cuda:N"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"--device {name!r} is not a device: {usage}") from None
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ValueError(f"--device {name}: there are {torch.cuda.device_count()} CUDA devices here; "
                         f"use --device cpu or auto")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"--device {name}: MPS (Apple GPU) is not available here; {usage}")
    if device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"--device {name}: {device.type} devices are not supported; {usage}")
    return device


def device_arg(name):
    """argparse type for --device: `pick_device`, its error turned into a usage error."""
    try:
        return pick_device(name)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err).removeprefix("--device ")) from None


def positive_int(text):
    """argparse type: a whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def weights_version(lpips_weights):
    """The version a linear-weights file was trained as (its folder `version_K`), else 0."""
    if lpips_weights in (None, "official"):
        return 0
    match = re.fullmatch(r"version_(\d+)", Path(lpips_weights).parent.name)
    return int(match.group(1)) if match else 0


def main(argv=None):
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    device = pick_device(args.device)
    if args.train:
        import training  # Lightning, only when training
    try:
        sets = bapps_sets(args.data_root, args.splits, args.subsplits, not args.no_download, args.limit)
        train_data = training.training_set(args) if args.train else None
        for net in args.net:
            if args.train:
                training.train_net(net, args, sets, train_data, device)
            else:
                evaluate_net(net, args, sets, device, version=weights_version(args.lpips_weights))
    except (DatasetError, WeightsUnavailableError, OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"interrupted: finished sets are saved in {results_path(args.out)}; "
              f"rerun the same command to compute the rest", file=sys.stderr)
        return 130
    if not args.train or training.is_global_zero():
        report(args.out)
    return 0

# ---------------------------------------------------------------- training flags
# The training code is in training.py; these are the CLI's flags for it.

TRAINED_VARIANTS = ("lin", "tune", "scratch")
INITS = ("lpips", "stable")
TRAINING_NAMES = ("RankingHead", "lr_factor", "LPIPSTraining", "version_dir", "save_lpips_weights",
                  "train_version", "train_net")


def __getattr__(name):
    """`experiment.LPIPSTraining` and the other training names, importing Lightning only when asked."""
    if name in TRAINING_NAMES:
        import training
        return getattr(training, name)
    raise AttributeError(f"module 'experiment' has no attribute {name!r}")


def add_training_flags(parser):
    """The --train flags: the LPIPS recipe by default, Lightning's scaling options passed through."""
    group = parser.add_argument_group(
        "training", "--train learns --variant lin (linear weights on the frozen backbone), tune (also the "
        "pretrained backbone) or scratch (also a randomly initialised backbone) on BAPPS train with the LPIPS "
        "recipe, then evaluates each trained version. Checkpoints and lin.pth (LPIPS format, for "
        "--lpips-weights and lpips.LPIPS(model_path=...)) go to OUT/<net>[_<points>]_<variant>_<method>_"
        "<cn|nocn>_<normalize>/version_K (<points> such as 1-4-7-11 when not the net's default); an "
        "interrupted training resumes from there, a finished one is reused. With --per-layer each point is "
        "trained on its own. results.csv names each version's rows by its lin.pth, so they never mix with rows "
        "of other weights (such as --lpips-weights official); a version trained anew replaces the old one in "
        "the table.")
    group.add_argument("--train", action="store_true", help="train, then evaluate")
    group.add_argument("--train-subsplits", nargs="+", choices=SUBSPLITS["train"], default=list(SUBSPLITS["train"]),
                       metavar="NAME", help=f"BAPPS train subsplits (default: {' '.join(SUBSPLITS['train'])})")
    group.add_argument("--epochs", type=int, default=10,
                       help="epochs in all: the first half at --lr, the second decaying linearly to 0 "
                            "(default: %(default)s)")
    group.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate (default: %(default)s)")
    group.add_argument("--repetitions", type=int, default=1, metavar="K",
                       help="train K independent versions, version_0..K-1 with seeds --seed + k; the table shows "
                            "their mean ± standard deviation (default: %(default)s)")
    group.add_argument("--init", choices=INITS, default="lpips",
                       help="lpips: the recipe's initialisation; stable: non-negative linear weights and a zero "
                            "output layer in the ranking head, which avoids trainings that stall with the linear "
                            "weights at the clamp on small data (see LPIPSTraining.initialise) "
                            "(default: %(default)s)")
    group.add_argument("--logger", choices=("wandb", "csv", "tensorboard"), default="wandb",
                       help="training logs under OUT; wandb without an API key logs offline "
                            "(default: %(default)s)")
    group.add_argument("--devices", help="Lightning Trainer devices: a number, a list such as 0,1, or auto "
                                         "(default: as --device)")
    group.add_argument("--num-nodes", type=int, default=1, help="Lightning Trainer num_nodes (default: 1)")
    group.add_argument("--strategy", default="auto", help="Lightning strategy, e.g. ddp (default: auto)")
    group.add_argument("--precision", help="Lightning precision, e.g. 16-mixed, bf16-mixed (default: 32-true)")


def check_training_args(args):
    """Raise ValueError, saying the fix, for training flags that cannot run together."""
    if not args.train:
        return
    if args.variant not in TRAINED_VARIANTS:
        raise ValueError(f"--train learns linear weights: use --variant {', '.join(TRAINED_VARIANTS)}")
    if args.lpips_weights:
        raise ValueError("--train learns the linear weights: drop --lpips-weights")
    for flag, value in (("--epochs", args.epochs), ("--repetitions", args.repetitions),
                        ("--num-nodes", args.num_nodes)):
        if value < 1:
            raise ValueError(f"{flag} must be at least 1, got {value}")
    if args.lr <= 0:
        raise ValueError(f"--lr must be positive, got {args.lr}")


if __name__ == "__main__":
    sys.exit(main())
