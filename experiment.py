"""Deep perceptual similarity metrics and the BAPPS experiments.

`DistanceMetric` compares two images through the activations of a loss network
(`loss_networks.FeatureExtractor`) by one of five methods, with or without
channel-wise normalisation and LPIPS linear calibration. The computation is split
where the cost is: `features` (one backbone pass per image), `views` (each method's
transform of the activations, computed once per image) and `compare` (distances
between two images' views, for any number of configurations at once).
"""
import os
from importlib import resources

import torch
import torch.nn as nn

from loss_networks import FeatureExtractor, load_state_dict_file

METHODS = ("spatial", "sort", "mean", "spatial+sort", "spatial+mean")
PARTS = {method: tuple(method.split("+")) for method in METHODS}
ALL_CONFIGS = tuple((method, norm) for method in METHODS for norm in (True, False))
NORMALIZATIONS = {
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "lpips": ((-0.030, -0.088, -0.188), (0.458, 0.448, 0.450)),
}
RANGE_TOLERANCE = 1e-3


def check_images(x, name="x"):
    """Raise ValueError unless `x` is a float tensor (N, 3, H, W) with values in [0, 1]."""
    if not torch.is_tensor(x):
        raise ValueError(f"{name} must be a torch.Tensor of shape (N, 3, H, W), got {type(x).__name__}")
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(
            f"{name} has shape {tuple(x.shape)}, expected (N, 3, H, W) RGB; add a batch dimension "
            f"with x[None] or replicate grayscale with x.expand(-1, 3, -1, -1)"
        )
    if not x.is_floating_point():
        raise ValueError(f"{name} has dtype {x.dtype}, expected floats in [0, 1]: use x.float() / 255")
    lo, hi = torch.aminmax(x.detach())
    lo, hi = lo.item(), hi.item()
    if lo < -RANGE_TOLERANCE or hi > 1 + RANGE_TOLERANCE:
        hint = "rescale with (x + 1) / 2" if lo < 0 else "divide by 255" if hi > 2 else "clamp to [0, 1]"
        raise ValueError(f"{name} has values in [{lo:.4g}, {hi:.4g}], expected [0, 1]: {hint}")


def transform(f, part):
    """One method's view of activations f (N, C, H, W): as is, sorted per channel, or channel means.

    The mean view is kept at (N, C, 1, 1): every position of its broadcast is equal, so
    the mean over positions of the distance is the same.
    """
    if part == "spatial":
        return f
    if part == "sort":
        return f.flatten(2).sort(dim=2).values.view_as(f)
    if part == "mean":
        return f.mean((2, 3), keepdim=True)
    raise ValueError(f"unknown method part {part!r}; expected spatial, sort or mean")


def channel_normalize(f, eps=1e-10):
    """Divide by the L2 norm over channels at each position (LPIPS's normalize_tensor)."""
    return f / (f.square().sum(1, keepdim=True).sqrt() + eps)


def layer_distance(a0, a1, lin=None):
    """Mean over positions of the (learned, if `lin`) sum over channels of (a0 - a1)**2; shape (N,)."""
    diff = (a0 - a1).square()
    summed = lin(diff) if lin is not None else diff.sum(1, keepdim=True)
    return summed.mean((2, 3)).flatten()


class LinearLayer(nn.Module):
    """LPIPS's NetLinLayer: dropout, then a bias-free 1x1 conv to one channel (kept >= 0)."""

    def __init__(self, channels):
        super().__init__()
        self.model = nn.Sequential(nn.Dropout(), nn.Conv2d(channels, 1, 1, bias=False))

    def forward(self, x):
        return self.model(x)


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
        mean, std = NORMALIZATIONS[normalize]
        self.register_buffer("shift", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.lins = nn.ModuleDict()
        if lin:
            channels = self._channels()
            for part in PARTS[method]:
                self.lins[part] = nn.ModuleList(LinearLayer(c) for c in channels)
            if lpips_weights is not None:
                self.load_lpips_weights(official_lpips_path(self.net.net) if lpips_weights == "official"
                                        else lpips_weights)
        self.eval()

    def _channels(self):
        with torch.no_grad():
            return [f.shape[1] for f in self.net(torch.zeros(1, 3, 64, 64))]

    def lpips_state_dict(self):
        """The linear weights in the LPIPS file format (`lin{k}.model.1.weight`)."""
        return {lpips_key(i, part, k): layer.model[1].weight.detach().clone()
                for i, part in enumerate(PARTS[self.method]) for k, layer in enumerate(self.lins[part])}

    def load_lpips_weights(self, path):
        """Load LPIPS-format linear weights from `path`, strictly (error names the keys)."""
        state = load_state_dict_file(path)
        expected = self.lpips_state_dict()
        missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
        if missing or unexpected:
            raise ValueError(f"LPIPS weights {path} do not fit {self.net.net}/{self.method}: "
                             f"missing keys {missing or 'none'}, unexpected keys {unexpected or 'none'}")
        for i, part in enumerate(PARTS[self.method]):
            for k, layer in enumerate(self.lins[part]):
                weight = state[lpips_key(i, part, k)]
                if weight.shape != layer.model[1].weight.shape:
                    raise ValueError(f"LPIPS weights {path}: {lpips_key(i, part, k)} has shape "
                                     f"{tuple(weight.shape)}, expected {tuple(layer.model[1].weight.shape)}")
                layer.model[1].weight.data.copy_(weight)

    def clamp_weights(self):
        """Keep the linear weights non-negative (LPIPS clamps after every optimiser step)."""
        with torch.no_grad():
            for layers in self.lins.values():
                for layer in layers:
                    layer.model[1].weight.clamp_(min=0)

    def features(self, x):
        """Backbone activations of images `x` in [0, 1] (normalised here)."""
        check_images(x, "images")
        if self.normalize == "lpips":
            x = 2 * x - 1
        return self.net((x - self.shift) / self.scale)

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
