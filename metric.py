"""Deep perceptual similarity: `DistanceMetric` and the 2AFC / JND scores, the light core.

`DistanceMetric` compares two images through the activations of a loss network
(`loss_networks.FeatureExtractor`) by one of five methods, with or without
channel-wise normalisation and LPIPS linear calibration. The computation is split
where the cost is: `features` (one backbone pass per image), `views` (each method's
transform of the activations, computed once per image) and `compare` (distances
between two images' views, for any number of configurations at once).
`batch_distances` runs many configurations (and the pixel metrics of
`pixel_metrics.py`, which share this interface) over one batch, each image through the
backbone once. `score_2afc` and `score_jnd` score distances against human judgements.

It imports torch, numpy and `loss_networks` only, so `from metric import DistanceMetric`
is light (no Lightning, matplotlib, requests or scipy):

    metric = DistanceMetric(net="vgg", method="spatial+sort")
    d = metric(x0, x1)   # x0, x1: (N, 3, H, W) in [0, 1]; d: (N,), differentiable
    metric.layer_distances(x0, x1)   # (N, L), one column per extraction point, summing to d
    metric.distance_map(x0, x1)      # (N, 1, H, W): where they differ (lpips's spatial=True)
"""
from importlib import resources

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from loss_networks import ALIASES, FeatureExtractor, canonical_net, load_state_dict_file

METHODS = ("spatial", "sort", "mean", "spatial+sort", "spatial+mean")
PARTS = {method: tuple(method.split("+")) for method in METHODS}
ALL_CONFIGS = tuple((method, norm) for method in METHODS for norm in (True, False))
# input normalisation (mean, std): x -> (x - mean) / std, where the [-1, 1] ones first take x -> 2x - 1
NORMALIZATIONS = {
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "lpips": ((-0.030, -0.088, -0.188), (0.458, 0.448, 0.450)),
    "signed": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),  # 2x - 1 alone: what LPIPS v0.0 feeds its network
}
SIGNED_INPUTS = ("lpips", "signed")
RANGE_TOLERANCE = 1e-3
VARIANTS = ("baseline", "lin", "tune", "scratch")  # tune and scratch train the backbone too
TRAINED_VARIANTS = VARIANTS[1:]
INITS = ("lpips", "stable")  # how trained linear weights and the ranking head start (training.py)
PIXEL_METRICS = ("l2", "ssim")  # nets without a backbone: LPIPS's L2 and DSSIM (pixel_metrics.py)
COLORSPACES = ("Lab", "RGB")
# the value of what does not apply to a pixel metric (layers, variant, method, channel norm, weights)
NOT_APPLICABLE = "-"
PIXEL_CONFIG = (NOT_APPLICABLE, NOT_APPLICABLE)  # a pixel metric's one configuration
LPIPS_WEIGHTS_HELP = '"official" (LPIPS v0.1), "official-v0.0" (LPIPS v0.0) or the path of an LPIPS-format file'


class Untrained:
    """`lpips_weights=UNTRAINED`: linear layers left at PyTorch's initialisation, for a metric about to be
    trained (training.py) or tested; their distances mean nothing until then."""

    def __repr__(self):
        return "metric.UNTRAINED"


UNTRAINED = Untrained()


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


def layer_map(a0, a1, lin=None):
    """The (learned, if `lin`) sum over channels of (a0 - a1)**2 at each position: (N, 1, h, w), the map
    whose mean over positions is `layer_distance`."""
    diff = F.mse_loss(a0, a1, reduction="none")
    return diff.sum(1, keepdim=True) if lin is None else lin.per_position(diff)


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

    def per_position(self, diff):
        """The conv's output at each position, (N, 1, H, W): LPIPS's map before its mean (`spatial=True`)."""
        dropout, conv = self.model
        with torch.autocast(diff.device.type, enabled=False):
            return F.conv2d(dropout(diff).float(), conv.weight.float())


OFFICIAL_VERSIONS = {"official": "v0.1", "official-v0.0": "v0.0"}  # lpips_weights: the lpips package's folder
OFFICIAL_NETS = ("alex", "squeeze", "vgg")  # the networks the lpips package ships linear weights for


def check_official_net(net, fix):
    """Raise ValueError, ending with `fix`, unless the lpips package has linear weights for `net` (or its alias)."""
    if canonical_net(net) not in OFFICIAL_NETS:
        names = ", ".join(f"{name} ({', '.join(a for a, target in ALIASES.items() if target == name)})"
                          for name in OFFICIAL_NETS)
        raise ValueError(f"LPIPS has official linear weights only for {names}, not {net!r}; {fix}")


def official_lpips_path(net, which="official"):
    """The LPIPS linear weights shipped inside the `lpips` package: `which` "official" (v0.1) or "official-v0.0"."""
    try:
        root = resources.files("lpips")
    except ModuleNotFoundError:
        raise FileNotFoundError(f"lpips_weights={which!r} needs the lpips package: pip install lpips") from None
    return str(root / "weights" / OFFICIAL_VERSIONS[which] / f"{net}.pth")


def lpips_key(part_index, part, layer):
    """Key of one linear layer in the LPIPS file format; a second part gets its own prefix."""
    return f"lin{layer}.model.1.weight" if part_index == 0 else f"{part}_lin{layer}.model.1.weight"


def check_flag(name, value):
    """Raise TypeError unless `value` is a bool (numpy's too): a string such as "off" or "false" is truthy, so it
    would silently mean on."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r} ({type(value).__name__}): pass "
                        f"{name}=True or {name}=False")


class DistanceMetric(nn.Module):
    """Deep perceptual distance between image batches in [0, 1]: `metric(x0, x1)` -> (N,).

    `normalize`: "imagenet", "lpips" (2x - 1, then LPIPS's scaling layer) or "signed" (2x - 1
    alone, LPIPS v0.0's input). `lpips_weights` (needed with `lin=True`): a path to an LPIPS-format
    file, "official" (the lpips package's v0.1 weights), "official-v0.0" (its v0.0 weights), or
    `UNTRAINED` (PyTorch's initialisation, for training). `channel_norm`, `lin` and `pretrained` are bools.
    Beside the value: `layer_distances` (each extraction point's term, lpips's `retPerLayer`)
    and `distance_map` (where the images differ, lpips's `spatial=True`).
    """

    def __init__(self, net="alex", method="spatial", channel_norm=True, lin=False, normalize="imagenet",
                 pretrained=True, weights=None, lpips_weights=None, layers=None):
        super().__init__()
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")
        if normalize not in NORMALIZATIONS:
            raise ValueError(f"unknown normalize {normalize!r}; expected one of {', '.join(NORMALIZATIONS)}")
        for name, value in (("channel_norm", channel_norm), ("lin", lin), ("pretrained", pretrained)):
            check_flag(name, value)
        if lpips_weights is not None and not lin:
            raise ValueError("lpips_weights are linear-layer weights: pass lin=True with them")
        if lin and lpips_weights is None:
            raise ValueError(f"lin=True needs lpips_weights: {LPIPS_WEIGHTS_HELP} (untrained linear layers give "
                             f"meaningless, even negative, distances; for training: lpips_weights=metric.UNTRAINED)")
        self.method, self.channel_norm, self.lin, self.normalize = method, bool(channel_norm), bool(lin), normalize
        self.net = FeatureExtractor(net, layers=layers, pretrained=pretrained, weights=weights)
        self._register_input_affine(normalize)
        self.lins = nn.ModuleDict()
        if lin:
            channels = self.net.channels()
            for part in PARTS[method]:
                self.lins[part] = nn.ModuleList(LinearLayer(c) for c in channels)
            if lpips_weights is not UNTRAINED:
                self.load_lpips_weights(official_lpips_path(self.net.net, lpips_weights)
                                        if lpips_weights in OFFICIAL_VERSIONS else lpips_weights)
        self.eval()

    def _register_input_affine(self, normalize):
        # x -> (x - mean) / std (after x -> 2x - 1 for the signed inputs) as one fused x * gain + offset
        mean, std = (torch.tensor(v, dtype=torch.float64).view(1, 3, 1, 1) for v in NORMALIZATIONS[normalize])
        factor, start = (2.0, -1.0) if normalize in SIGNED_INPUTS else (1.0, 0.0)
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

    def part_lins(self, part, count):
        """The linear layers of one part of the method, one per extraction point (None each without `lin`)."""
        return self.lins[part] if self.lin else [None] * count

    def compare_layers(self, v0, v1, configs):
        """{(method, channel_norm): distances (N, L)} between two images' views, one column per extraction
        point; a + method's column is the sum of both parts at that point. Shared parts computed once."""
        parts = {}
        for method, norm in configs:
            for part in PARTS[method]:
                if (part, norm) not in parts:
                    a0s, a1s = v0[part, norm], v1[part, norm]
                    parts[part, norm] = torch.stack([layer_distance(a0, a1, lin) for a0, a1, lin
                                                     in zip(a0s, a1s, self.part_lins(part, len(a0s)))], 1)
        return {(method, norm): sum(parts[part, norm] for part in PARTS[method]) for method, norm in configs}

    def compare(self, v0, v1, configs):
        """{(method, channel_norm): distances (N,)} between two images' views: the sums of `compare_layers`."""
        return {config: layers.sum(1) for config, layers in self.compare_layers(v0, v1, configs).items()}

    def distance(self, f0, f1, method=None, channel_norm=None):
        """Distance (N,) between two lists of activations from `features`."""
        if len(f0) != len(f1) or any(a.shape != b.shape for a, b in zip(f0, f1)):
            raise ValueError("the two feature lists differ in length or shape: were the images the same size?")
        configs = self.configs(method, channel_norm)
        return self.compare(self.views(f0, configs), self.views(f1, configs), configs)[configs[0]]

    def pair_views(self, x0, x1, method=None, channel_norm=None):
        """(configuration, views of x0, views of x1) for one configuration (default: the metric's own)."""
        check_same_shape(x0, x1)
        configs = self.configs(method, channel_norm)
        return configs[0], self.views(self.features(x0), configs), self.views(self.features(x1), configs)

    def layer_distances(self, x0, x1, method=None, channel_norm=None):
        """Each extraction point's distance, (N, L), summing to the metric's value (lpips's `retPerLayer`).

        For spatial+sort and spatial+mean a column is the sum of both parts at that point.
        Differentiable.
        """
        config, v0, v1 = self.pair_views(x0, x1, method, channel_norm)
        return self.compare_layers(v0, v1, [config])[config]

    def distance_map(self, x0, x1, method=None, channel_norm=None):
        """Where the images differ, (N, 1, H, W): each layer's map (`layer_map`: the distance before its mean
        over positions) upsampled bilinearly (align_corners=False) to the input size, summed over layers;
        lpips's `spatial=True`. Differentiable.

        A map position is a position of the method's view: for `spatial` a place in the image; for
        `sort` a rank (the k-th smallest value of each channel, laid out row by row over the layer's
        grid), so the map tells where in that order the images differ, not where in the image; `mean`
        has one position per layer and adds that layer's distance everywhere. spatial+sort and
        spatial+mean add both parts' maps. Bilinear upsampling keeps the mean only roughly: the map's
        mean is close to the metric's value, equal for `mean`.
        """
        (method, norm), v0, v1 = self.pair_views(x0, x1, method, channel_norm)
        total = 0
        for part in PARTS[method]:
            a0s, a1s = v0[part, norm], v1[part, norm]
            for a0, a1, lin in zip(a0s, a1s, self.part_lins(part, len(a0s))):
                total = total + F.interpolate(layer_map(a0, a1, lin), size=x0.shape[2:], mode="bilinear",
                                              align_corners=False)
        return total

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


def agreements_2afc(d0, d1, judge):
    """Per triplet, float64 tensors (N,): the agreement with the people and whether the majority's choice was made.

    `judge` is the fraction of people who found p1 closer to the reference. The agreement
    is `(d0 < d1) * (1 - judge) + (d1 < d0) * judge + (d0 == d1) * 0.5` (a tie agrees with
    half of the people); the second is `(d0 < d1) == (judge < 0.5)`. Their means are
    `score_2afc`; the bootstrap resamples them.
    """
    d0, d1, judge = _as_vector(d0), _as_vector(d1), _as_vector(judge)
    if not len(d0) == len(d1) == len(judge) or len(d0) == 0:
        raise ValueError(f"score_2afc needs equally long, non-empty d0, d1, judge; got lengths "
                         f"{len(d0)}, {len(d1)}, {len(judge)}")
    agreement = (d0 < d1) * (1 - judge) + (d1 < d0) * judge + (d0 == d1) * 0.5
    return agreement, ((d0 < d1) == (judge < 0.5)).double()


def score_2afc(d0, d1, judge):
    """Agreement with the human 2AFC judgements, LPIPS's definition: (score, accuracy) in [0, 1], the means of
    `agreements_2afc`."""
    score, accuracy = agreements_2afc(d0, d1, judge)
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


# ---------------------------------------------------------------- many configurations


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


def batch_distances(metrics, images, pairs, by_layer=False):
    """{config: [distances (N,) per pair]} for one batch of `images` ({name: tensor}); with `by_layer`,
    each extraction point's distances (N, L) instead (`DistanceMetric.compare_layers`).

    `metrics` maps configurations to the DistanceMetric holding their weights, all sharing
    one FeatureExtractor: each image goes through it once and its views are made once,
    whatever the number of pairs and configurations. A configuration is (method,
    channel_norm), over every point of that extractor, or (method, channel_norm, points)
    over some of them (one configuration per point: `--per-layer`).
    """
    views = {name: metrics_views(metrics, images[name])
             for name in dict.fromkeys(name for pair in pairs for name in pair)}
    return compare_views(metrics, views, pairs, by_layer)


def metrics_views(metrics, x):
    """The views of images `x` that every configuration of `metrics` needs, from one backbone pass."""
    feature_metric = _shared_feature_metric(metrics)
    return feature_metric.views(feature_metric.features(x), list(dict.fromkeys(config[:2] for config in metrics)))


def compare_views(metrics, views, pairs, by_layer=False):
    """{config: [distances (N,), or (N, L) `by_layer`, per pair]} between precomputed views ({name:
    `metrics_views`})."""
    feature_metric, groups = _shared_feature_metric(metrics), {}
    for config, metric in metrics.items():
        points = config_points(config)
        every = points is None or points == feature_metric.net.layers
        positions = None if every else tuple(feature_metric.net.layers.index(p) for p in points)
        groups.setdefault((id(metric), positions), (metric, positions, []))[2].append(config)
    distances = {config: [None] * len(pairs) for config in metrics}
    for metric, positions, group in groups.values():
        for i, (a, b) in enumerate(pairs):
            compare = metric.compare_layers if by_layer else metric.compare
            found = compare(select_points(views[a], positions), select_points(views[b], positions),
                            [config[:2] for config in group])
            for config in group:
                distances[config][i] = found[config[:2]]
    return distances
