"""Loss networks: torchvision classifiers as feature extractors at chosen extraction points.

The registry is the original repository's: AlexNet, VGG, ResNet, Wide ResNet, ResNeXt,
DenseNet, SqueezeNet, ShuffleNet, MobileNet, MNASNet, EfficientNet, RegNet, GoogLeNet and
Inception v3, under torchvision's names; `alex`, `squeeze` and `vgg` (AlexNet,
SqueezeNet 1.1, VGG-16) keep their LPIPS names.

Extraction points are counted as the original counts them: point k is the k-th child
module, in order, of `features` (most nets), of the whole model (ResNet, Wide ResNet,
ResNeXt, ShuffleNet, GoogLeNet, Inception v3), of `layers` (MNASNet), or of `stem` and
then `trunk_output` (RegNet). Of the whole model, the classification head (`avgpool`,
`dropout`, `fc`) and the auxiliary classifiers (`aux1`, `aux2`, `AuxLogits`) are not
points: they branch off the trunk or end it. (Inception v3's `AuxLogits` is the original's
point 15, past which its sequential extraction fails; here Mixed_7a-7c are points 15-17.)
An activation is taken after its module. Default points: the LPIPS layers for alex/squeeze/vgg, the points of the
original's experiment grid (`PRESET`) for its other networks, and for every other
network the last point of each quarter (`default_layers`).

Pretrained weights are torchvision's `IMAGENET1K_V1` files (what the original's
`pretrained=True` loaded), cached as `$TORCH_HOME/hub/checkpoints/<torchvision file
name>`; a file already there is used without network. Every state dict is loaded
strictly, with `torch.load(..., weights_only=True)`. GoogLeNet and Inception v3 are
built as torchvision builds them for its own files (with the auxiliary classifiers those
files hold); their `transform_input` step lives in `forward`, which extraction
bypasses, so they get the same input normalisation as every other network.
"""
import difflib
import math
import operator
import os
import re
import zipfile
from contextlib import contextmanager
from functools import lru_cache
from urllib.error import URLError

import torch
import torch.nn as nn
from torchvision.models import get_model_builder, get_model_weights

SHORT_NAMES = {"alexnet": "alex", "squeezenet1_1": "squeeze", "vgg16": "vgg"}  # torchvision name: LPIPS name
ALIASES = {**SHORT_NAMES, "squeezenet": "squeeze"}
REGISTRY = (
    "alexnet squeezenet1_1 vgg16 "
    "vgg11 vgg11_bn vgg13 vgg13_bn vgg16_bn vgg19 vgg19_bn "
    "resnet18 resnet34 resnet50 resnet101 resnet152 wide_resnet50_2 wide_resnet101_2 "
    "resnext50_32x4d resnext101_32x8d "
    "densenet121 densenet161 densenet169 densenet201 "
    "squeezenet1_0 shufflenet_v2_x1_0 shufflenet_v2_x2_0 "
    "mobilenet_v2 mobilenet_v3_large mobilenet_v3_small "
    "mnasnet0_5 mnasnet0_75 mnasnet1_0 mnasnet1_3 "
    "efficientnet_b0 efficientnet_b1 efficientnet_b2 efficientnet_b3 "
    "efficientnet_b4 efficientnet_b5 efficientnet_b6 efficientnet_b7 "
    "regnet_x_400mf regnet_x_800mf regnet_x_1_6gf regnet_x_3_2gf regnet_x_8gf regnet_x_16gf regnet_x_32gf "
    "regnet_y_400mf regnet_y_800mf regnet_y_1_6gf regnet_y_3_2gf regnet_y_8gf regnet_y_16gf regnet_y_32gf "
    "googlenet inception_v3"
).split()
# canonical name: (torchvision builder, the ImageNet weights that pretrained=True loaded)
NETWORKS = {SHORT_NAMES.get(name, name): (get_model_builder(name), get_model_weights(name).IMAGENET1K_V1)
            for name in REGISTRY}
LPIPS_NETS = ("alex", "squeeze", "vgg")
# the original repository's experiment grid: 14 networks, each at four points
PRESET = {
    "alex": [1, 4, 7, 11], "vgg11": [1, 4, 9, 19], "vgg": [3, 8, 15, 29], "vgg16_bn": [5, 12, 22, 42],
    "vgg19": [3, 8, 17, 35], "densenet121": [2, 4, 6, 10], "resnet18": [2, 4, 5, 7], "resnet50": [2, 4, 5, 7],
    "googlenet": [0, 5, 8, 15], "inception_v3": [2, 7, 9, 14], "squeeze": [1, 3, 7, 12],
    "resnext50_32x4d": [2, 4, 5, 7], "efficientnet_b0": [0, 1, 4, 7], "efficientnet_b7": [0, 1, 4, 7],
}
DEFAULT_LAYERS = {
    "alex": [1, 4, 7, 9, 11],
    "squeeze": [1, 4, 7, 9, 10, 11, 12],
    "vgg": [3, 8, 15, 22, 29],
    **{net: points for net, points in PRESET.items() if net not in LPIPS_NETS},
}
DEFAULT_RULE = ("alex, squeeze, vgg: the LPIPS layers; the other networks of --preset paper: their points "
                "there; every other network: the last point of each quarter of its points, "
                "ceil(k * P / 4) - 1 for k = 1..4 with P points")
WHOLE_MODEL = ("resnet", "wide_resnet", "resnext", "shufflenet", "googlenet", "inception")
NOT_POINTS = ("avgpool", "dropout", "fc", "aux1", "aux2", "AuxLogits")
AUX_NETS = ("googlenet", "inception_v3")
# torchvision's DenseNet files name layers `norm.1` where the model has `norm1` (torchvision renames them too)
LEGACY_DENSENET_KEY = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|"
                                 r"running_var))$")


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights are neither cached nor downloadable."""


def canonical_net(name):
    """`alexnet` -> `alex` etc.; unknown names raise ValueError listing close names."""
    key = str(name).lower()
    key = ALIASES.get(key, key)
    if key not in NETWORKS:
        close = difflib.get_close_matches(key, [*NETWORKS, *ALIASES], n=5, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise ValueError(f"unknown network {name!r}; {hint}networks: torchvision's classifier names "
                         f"(resnet50, efficientnet_b0, regnet_y_400mf, ...; all: {', '.join(NETWORKS)}) "
                         f"and the aliases {', '.join(ALIASES)}")
    return key


def layers_text(layers):
    """Extraction points as results files write them: `1-4-7-9-11`, `5` for one point."""
    return "-".join(str(layer) for layer in layers)


def torchvision_name(net):
    """torchvision's name of a network (`alex` -> `alexnet`)."""
    net = canonical_net(net)
    return next((name for name, short in SHORT_NAMES.items() if short == net), net)


def checkpoint_path(net):
    """Where torchvision caches the ImageNet weights of `net`."""
    url = NETWORKS[canonical_net(net)][1].url
    return os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(url))


def load_state_dict_file(path):
    """A state dict from `path`, tensors only (`weights_only=True`), on the CPU."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"weights file not found: {path}")
    # zip-format checkpoints can be memory-mapped: parts never used (classifier heads) are never read
    mmap = zipfile.is_zipfile(path)
    fix = "delete it and download it again (or pass the right file)"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except OSError:
        raise
    except Exception as err:  # torch.load reports damaged files as EOFError, UnpicklingError, KeyError, ...
        raise ValueError(f"cannot read weights file {path} ({type(err).__name__}): it is damaged, empty or not "
                         f"a PyTorch state dict; {fix}") from None
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise ValueError(f"weights file {path} holds a {type(state).__name__}, not a state dict of tensors; "
                         f"{fix}")
    return state


def fetch_pretrained(net):
    """Path of the cached ImageNet weights of `net`, downloading them if missing."""
    path = checkpoint_path(net)
    if os.path.isfile(path):
        return path
    url = NETWORKS[canonical_net(net)][1].url
    os.makedirs(os.path.dirname(path), exist_ok=True)
    hash_prefix = re.search(r"-([a-f0-9]*)\.", os.path.basename(path))
    try:
        torch.hub.download_url_to_file(url, path, hash_prefix=hash_prefix.group(1) if hash_prefix else None)
    except (URLError, OSError, RuntimeError) as err:
        raise WeightsUnavailableError(
            f"could not download the {net} weights from {url} ({err}).\n"
            f"Without network, download that file elsewhere and place it at {path} "
            f"(folder: $TORCH_HOME/hub/checkpoints, here {os.path.dirname(path)}), "
            f"or point to a folder of such files (on the command line --weights-dir DIR; in Python "
            f"weights=PATH, a torchvision state dict), or use random weights (--random-init; pretrained=False)."
        ) from None
    return path


def load_strict(model, state_dict, source):
    """`model.load_state_dict(state_dict, strict=True)` with an error naming the keys."""
    expected, given = set(model.state_dict()), set(state_dict)
    # BatchNorm fills in num_batches_tracked for files saved before it existed (torchvision's older files)
    missing = sorted(k for k in expected - given if not k.endswith("num_batches_tracked"))
    unexpected = sorted(given - expected)
    if missing or unexpected:
        raise ValueError(
            f"state dict {source} does not match {type(model).__name__}: "
            f"missing keys {missing or 'none'}, unexpected keys {unexpected or 'none'}"
        )
    try:
        model.load_state_dict(state_dict, strict=True, assign=True)
    except RuntimeError as err:
        raise ValueError(f"state dict {source} does not fit {type(model).__name__}: {err}") from None


def rename_legacy_keys(state_dict):
    """Rename, in place, the `denselayerN.norm.1` keys of torchvision's DenseNet files to `norm1`."""
    for key in list(state_dict):
        match = LEGACY_DENSENET_KEY.match(key)
        if match:
            state_dict[match.group(1) + match.group(2)] = state_dict.pop(key)
    return state_dict


def construct(net, random_init=True):
    """The torchvision classifier `net`, randomly initialised as torchvision does."""
    constructor = NETWORKS[canonical_net(net)][0]
    if torchvision_name(net) in AUX_NETS:
        # as torchvision builds them for its own weight files, which hold the auxiliary classifiers
        return constructor(weights=None, aux_logits=True, transform_input=True, init_weights=random_init)
    return constructor(weights=None)


def skeleton(net):
    """`net` with parameters on the meta device (no memory, no init), for the weights to be assigned to."""
    try:
        with torch.device("meta"):
            return construct(net, random_init=False)
    except NotImplementedError:  # RegNet reads back values of tensors while it builds, which meta cannot give
        return construct(net, random_init=False)


def build_classifier(net, pretrained=True, weights=None):
    """The torchvision classifier `net`: weights from `weights` (a path), ImageNet, or random."""
    net = canonical_net(net)
    if weights is None and not pretrained:
        return construct(net)
    path = weights if weights is not None else fetch_pretrained(net)
    state_dict = rename_legacy_keys(load_state_dict_file(path))
    model = skeleton(net)
    load_strict(model, state_dict, path)
    return model


def extraction_points(model, net):
    """[(name, module)]: the extraction points of `model` (the torchvision classifier `net`), in order."""
    name = torchvision_name(net)
    if name.startswith(WHOLE_MODEL):
        return [(child, m) for child, m in model.named_children() if child not in NOT_POINTS]
    containers = ("layers",) if name.startswith("mnasnet") else \
        ("stem", "trunk_output") if name.startswith("regnet") else ("features",)
    return [(f"{attr}.{child}", m) for attr in containers for child, m in getattr(model, attr).named_children()]


@lru_cache(maxsize=None)
def point_names(net):
    """The names of the extraction points of `net`, in order (built on the meta device: no weights read)."""
    return tuple(name for name, _ in extraction_points(skeleton(net), net))


def default_layers(net):
    """The default extraction points of `net` (see DEFAULT_RULE)."""
    net = canonical_net(net)
    if net in DEFAULT_LAYERS:
        return list(DEFAULT_LAYERS[net])
    count = len(point_names(net))
    return sorted({math.ceil(k * count / 4) - 1 for k in range(1, 5)})


def check_layers(net, layers=None):
    """Sorted distinct extraction points of `net` (default: `default_layers`); ValueError if out of range."""
    net = canonical_net(net)
    if layers is None:
        return default_layers(net)
    points = sorted({operator.index(i) for i in layers})
    names = point_names(net)
    if not points:
        raise ValueError(f"no extraction points given for {net}: pass at least one of 0..{len(names) - 1}")
    if points[0] < 0 or points[-1] >= len(names):
        raise ValueError(f"extraction points {list(layers)} out of range for {net}: it has {len(names)} points, "
                         f"0..{len(names) - 1} (the last is {names[-1]})")
    return points


class FeatureExtractor(nn.Module):
    """Activations of a torchvision classifier at chosen extraction points.

    `forward(x)` takes already normalised images and returns the list of activations
    (taken after point `i` for each `i` in `layers`, in increasing order); it stops
    after the last requested point. `features` holds the points up to that one.
    """

    def __init__(self, net, layers=None, pretrained=True, weights=None, trainable=False):
        super().__init__()
        self.net = canonical_net(net)
        self.layers = check_layers(self.net, layers)
        points = extraction_points(build_classifier(self.net, pretrained, weights), self.net)
        self.features = nn.Sequential(*(module for _, module in points[: self.layers[-1] + 1]))
        self._keep_outputs_intact()
        self.requires_grad_(trainable)
        self.train(trainable)

    def _keep_outputs_intact(self):
        # an in-place module first thing after a returned point would overwrite the returned tensor
        for i in self.layers[:-1]:
            first = self.features[i + 1]
            while next(first.children(), None) is not None:
                first = next(first.children())
            if hasattr(first, "inplace"):
                first.inplace = False

    def forward(self, x):
        wanted, out, h = set(self.layers), [], x
        try:
            for i, module in enumerate(self.features):
                h = module(h)
                if i in wanted:
                    out.append(h)
        except RuntimeError:
            self.check_size(x)
            raise
        return out

    def check_size(self, x):
        """ValueError if the images `x` are smaller than the network takes (the size is probed once)."""
        smallest = self.min_size()
        if smallest is not None and min(x.shape[-2:]) < smallest:
            raise ValueError(f"images of {x.shape[-2]}x{x.shape[-1]} pixels are too small for {self.net} "
                             f"up to point {self.layers[-1]}: it takes at least {smallest}x{smallest}; "
                             f"resize them (--size), or extract at earlier points (--layers)") from None

    def channels(self):
        """The channel count of each returned activation (from one pass over a small image of zeros)."""
        size = self.min_size() or 64
        with self._probing() as parameter, torch.no_grad():
            x = torch.zeros(1, 3, size, size, device=parameter.device, dtype=parameter.dtype)
            return [f.shape[1] for f in self(x)]

    def min_size(self):
        """The smallest side of an image that the points in use take (None if no size up to 1024 does)."""
        key = (self.net, tuple(self.layers))
        if key not in MIN_SIZES:
            MIN_SIZES[key] = self._probe_min_size()
        return MIN_SIZES[key]

    @contextmanager
    def _probing(self):
        # probes run in eval mode (batch statistics of a 1-image probe would be wrong and would be recorded)
        modes = {module: module.training for module in self.modules()}
        self.eval()
        try:
            yield next(self.parameters())
        finally:
            for module, mode in modes.items():
                module.training = mode

    def _probe_min_size(self):
        # doubling, then bisection, over square images of zeros: a few passes at under twice the size
        with self._probing() as parameter:
            low, high = 0, 1
            while not self._takes(high, parameter):
                low, high = high, high * 2
                if high > 1024:
                    return None
            while high - low > 1:
                middle = (low + high) // 2
                low, high = (low, middle) if self._takes(middle, parameter) else (middle, high)
            return high

    def _takes(self, size, parameter):
        x = torch.zeros(1, 3, size, size, device=parameter.device, dtype=parameter.dtype)
        try:
            with torch.no_grad():
                for module in self.features:
                    x = module(x)
        except RuntimeError:
            return False
        return x.numel() > 0


MIN_SIZES = {}  # (net, points): the smallest image side they take, probed once per process
