"""Loss networks: torchvision backbones as per-layer feature extractors.

AlexNet, SqueezeNet 1.1 and VGG-16 from torchvision, cut after the last layer we
read. The default layers are the ones LPIPS uses (activations after the ReLU ending
each stage). Pretrained weights go through torchvision's weights API, so they are
cached as `$TORCH_HOME/hub/checkpoints/<torchvision file name>`; a file already there
is used without network. Every state dict is loaded strictly, with
`torch.load(..., weights_only=True)`.
"""
import os
import re
import zipfile
from urllib.error import URLError

import torch
import torch.nn as nn
import torchvision

NETWORKS = {
    "alex": (torchvision.models.alexnet, torchvision.models.AlexNet_Weights.IMAGENET1K_V1),
    "squeeze": (torchvision.models.squeezenet1_1, torchvision.models.SqueezeNet1_1_Weights.IMAGENET1K_V1),
    "vgg": (torchvision.models.vgg16, torchvision.models.VGG16_Weights.IMAGENET1K_V1),
}
ALIASES = {"alexnet": "alex", "squeezenet": "squeeze", "squeezenet1_1": "squeeze", "vgg16": "vgg"}
DEFAULT_LAYERS = {
    "alex": [1, 4, 7, 9, 11],
    "squeeze": [1, 4, 7, 9, 10, 11, 12],
    "vgg": [3, 8, 15, 22, 29],
}


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights are neither cached nor downloadable."""


def canonical_net(name):
    """`alexnet` -> `alex` etc.; unknown names raise ValueError listing the valid ones."""
    key = str(name).lower()
    key = ALIASES.get(key, key)
    if key not in NETWORKS:
        valid = ", ".join(list(NETWORKS) + list(ALIASES))
        raise ValueError(f"unknown network {name!r}; expected one of: {valid}")
    return key


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
            f"or point to a folder of such files (--weights-dir of analysis.py and feature_map.py), "
            f"or pass weights=PATH (a torchvision state dict) or pretrained=False (random weights)."
        ) from None
    return path


def load_strict(model, state_dict, source):
    """`model.load_state_dict(state_dict, strict=True)` with an error naming the keys."""
    expected, given = set(model.state_dict()), set(state_dict)
    missing, unexpected = sorted(expected - given), sorted(given - expected)
    if missing or unexpected:
        raise ValueError(
            f"state dict {source} does not match {type(model).__name__}: "
            f"missing keys {missing or 'none'}, unexpected keys {unexpected or 'none'}"
        )
    model.load_state_dict(state_dict, strict=True, assign=True)


def build_classifier(net, pretrained=True, weights=None):
    """The torchvision classifier `net`: weights from `weights` (a path), ImageNet, or random."""
    net = canonical_net(net)
    constructor = NETWORKS[net][0]
    if weights is None and not pretrained:
        return constructor(weights=None)
    path = weights if weights is not None else fetch_pretrained(net)
    state_dict = load_state_dict_file(path)
    with torch.device("meta"):  # skip the random init that the loaded weights replace
        model = constructor(weights=None)
    load_strict(model, state_dict, path)
    return model


class FeatureExtractor(nn.Module):
    """Activations of a torchvision backbone at chosen indices of `model.features`.

    `forward(x)` takes already normalised images and returns the list of activations
    (taken after module `i` for each `i` in `layers`, in increasing order); it stops
    after the last requested layer.
    """

    def __init__(self, net, layers=None, pretrained=True, weights=None, trainable=False):
        super().__init__()
        self.net = canonical_net(net)
        self.layers = sorted(set(DEFAULT_LAYERS[self.net] if layers is None else layers))
        features = build_classifier(self.net, pretrained, weights).features
        if not self.layers or self.layers[0] < 0 or self.layers[-1] >= len(features):
            raise ValueError(f"layers {layers} out of range for {self.net}: indices 0..{len(features) - 1}")
        self.features = features[: self.layers[-1] + 1]
        self._keep_outputs_intact()
        self.requires_grad_(trainable)
        self.train(trainable)

    def _keep_outputs_intact(self):
        # an in-place module right after a returned layer would overwrite the returned tensor
        for i in self.layers[:-1]:
            if hasattr(self.features[i + 1], "inplace"):
                self.features[i + 1].inplace = False

    def forward(self, x):
        wanted, out = set(self.layers), []
        for i, module in enumerate(self.features):
            x = module(x)
            if i in wanted:
                out.append(x)
        return out
