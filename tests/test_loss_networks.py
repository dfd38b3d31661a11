"""The loss-network registry: extraction points against plain torchvision, weights files, errors.

The reference extraction is written here, not taken from loss_networks: it builds the
torchvision classifier, lists the child modules of the family's containers in order,
and runs them one after the other, keeping a copy of each requested activation.
Models are random (BatchNorm statistics randomised too, so that a skipped or doubled
BatchNorm shows) and each is built once per session; the extractor under test starts
from a copy of it (`from_reference`) where the test is about points, not weights files.
"""
import copy
import math
import os

import pytest
import torch
import torch.nn as nn
import torchvision

import loss_networks
from loss_networks import (DEFAULT_LAYERS, NETWORKS, PRESET, FeatureExtractor, canonical_net, checkpoint_path,
                           default_layers, point_names)

ISSUE_REGISTRY = (
    ["alexnet"] + [f"vgg{d}{bn}" for d in (11, 13, 16, 19) for bn in ("", "_bn")]
    + [f"resnet{d}" for d in (18, 34, 50, 101, 152)] + ["wide_resnet50_2", "wide_resnet101_2"]
    + ["resnext50_32x4d", "resnext101_32x8d"] + [f"densenet{d}" for d in (121, 161, 169, 201)]
    + ["squeezenet1_0", "squeezenet1_1", "shufflenet_v2_x1_0", "shufflenet_v2_x2_0"]
    + ["mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small"]
    + [f"mnasnet{a}" for a in ("0_5", "0_75", "1_0", "1_3")] + [f"efficientnet_b{k}" for k in range(8)]
    + [f"regnet_{xy}_{size}" for xy in "xy" for size in ("400mf", "800mf", "1_6gf", "3_2gf", "8gf", "16gf", "32gf")]
    + ["googlenet", "inception_v3"]
)
TORCHVISION_NAMES = {"alex": "alexnet", "squeeze": "squeezenet1_1", "vgg": "vgg16"}
WHOLE_MODEL_HEAD = ("avgpool", "dropout", "fc", "aux1", "aux2", "AuxLogits")
# the preset's points, and for the MNASNet, RegNet and MobileNet families points that include
# a BatchNorm followed by an in-place ReLU (the returned map must keep its negative values)
EXTRACTION_CASES = {**PRESET, "mnasnet0_5": [1, 2, 8, 16], "regnet_x_400mf": [1, 2, 4, 6],
                    "mobilenet_v3_small": [0, 3, 12], "mobilenet_v2": [1, 7, 18]}
BUILT = {}


def reference_model(net):
    """The torchvision classifier, random, with random BatchNorm statistics; built once per session."""
    if net not in BUILT:
        name = TORCHVISION_NAMES.get(net, net)
        torch.manual_seed(len(BUILT))
        kwargs = {"init_weights": False} if name in ("googlenet", "inception_v3") else {}  # the faster init
        model = torchvision.models.get_model(name, weights=None, **kwargs).eval()
        with torch.no_grad():
            for module in model.modules():
                if isinstance(module, nn.BatchNorm2d):
                    module.running_mean.normal_(0, 0.2)
                    module.running_var.uniform_(0.5, 2)
                    module.weight.normal_(1, 0.2)
                    module.bias.normal_(0, 0.2)
        BUILT[net] = model
    return BUILT[net]


@pytest.fixture
def from_reference(monkeypatch):
    """FeatureExtractor(..., pretrained=False) starts from a copy of the reference model: same weights,
    and no second random initialisation of the big networks."""
    monkeypatch.setattr(loss_networks, "construct", lambda net, random_init=True: copy.deepcopy(reference_model(net)))


def reference_children(model, net):
    """The child modules that the original numbers as extraction points, in order."""
    name = TORCHVISION_NAMES.get(net, net)
    if name.startswith(("resnet", "wide_resnet", "resnext", "shufflenet", "googlenet", "inception")):
        return [m for child, m in model.named_children() if child not in WHOLE_MODEL_HEAD]
    if name.startswith("mnasnet"):
        return list(model.layers)
    if name.startswith("regnet"):
        return list(model.stem) + list(model.trunk_output)
    return list(model.features)


def reference_activations(model, net, layers, x):
    out = []
    with torch.no_grad():
        for i, module in enumerate(reference_children(model, net)[: max(layers) + 1]):
            x = module(x)
            if i in layers:
                out.append(x.clone())
    return out


def images(seed, n=2, size=64):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_registry_has_every_family_under_torchvision_names():
    for name in ISSUE_REGISTRY:
        net = canonical_net(name)
        assert net == {"alexnet": "alex", "squeezenet1_1": "squeeze", "vgg16": "vgg"}.get(name, name)
        assert NETWORKS[net][1] == torchvision.models.get_model_weights(name).IMAGENET1K_V1
    assert len(NETWORKS) == len(ISSUE_REGISTRY)
    assert [canonical_net(n) for n in ("alex", "AlexNet", "squeezenet", "squeeze", "vgg", "VGG16")] == \
           ["alex", "alex", "squeeze", "squeeze", "vgg", "vgg"]


def test_weights_are_the_imagenet1k_v1_files():
    names = {net: os.path.basename(checkpoint_path(net)) for net in
             ("resnet50", "alex", "vgg16_bn", "efficientnet_b7", "regnet_y_16gf", "inception_v3")}
    assert names == {"resnet50": "resnet50-0676ba61.pth", "alex": "alexnet-owt-7be5be79.pth",
                     "vgg16_bn": "vgg16_bn-6c64b313.pth", "efficientnet_b7": "efficientnet_b7_lukemelas-c5b4e57e.pth",
                     "regnet_y_16gf": "regnet_y_16gf-9e6ed7dd.pth", "inception_v3": "inception_v3_google-0cc3c7bd.pth"}


def test_points_are_counted_as_the_original():
    def names(net, layers):
        return [point_names(net)[i] for i in layers]
    assert names("resnet50", [2, 4, 5, 7]) == ["relu", "layer1", "layer2", "layer4"]
    assert names("efficientnet_b0", [0, 1, 4, 7]) == [f"features.{i}" for i in (0, 1, 4, 7)]
    assert names("inception_v3", [2, 7, 9, 14]) == ["Conv2d_2b_3x3", "Mixed_5b", "Mixed_5d", "Mixed_6e"]
    assert names("googlenet", [0, 5, 8, 15]) == ["conv1", "inception3a", "inception4a", "inception5b"]
    blocks = [f"trunk_output.block{k}" for k in range(1, 5)]
    assert point_names("regnet_y_400mf") == ("stem.0", "stem.1", "stem.2", *blocks)
    assert point_names("mnasnet1_0") == tuple(f"layers.{i}" for i in range(17))
    assert point_names("vgg") == tuple(f"features.{i}" for i in range(31))


@pytest.mark.parametrize("net", list(EXTRACTION_CASES))
def test_extraction_equals_plain_torchvision(net, from_reference):
    layers = EXTRACTION_CASES[net]
    model = reference_model(net)
    ours = FeatureExtractor(net, layers=layers, pretrained=False)
    assert ours.layers == sorted(layers) and not ours.training
    x = images(len(net))
    with torch.no_grad():
        got = ours(x)
    expected = reference_activations(model, net, layers, x)
    assert len(got) == len(expected) == len(layers)
    for a, b in zip(got, expected):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    if net in ("mnasnet0_5", "regnet_x_400mf"):
        assert (got[0] < 0).any() and torch.equal(got[1], got[0].clamp_min(0))


def test_default_points():
    assert DEFAULT_LAYERS["alex"] == [1, 4, 7, 9, 11] and DEFAULT_LAYERS["vgg"] == [3, 8, 15, 22, 29]
    assert DEFAULT_LAYERS["squeeze"] == [1, 4, 7, 9, 10, 11, 12]
    for net in PRESET:
        if net not in ("alex", "squeeze", "vgg"):
            assert default_layers(net) == PRESET[net]
    for net in ("resnet34", "mnasnet1_0", "densenet201", "vgg19_bn", "shufflenet_v2_x2_0"):
        with torch.device("meta"):
            count = len(reference_children(torchvision.models.get_model(net, weights=None), net))
        quarters = sorted({math.ceil(k * count / 4) - 1 for k in (1, 2, 3, 4)})
        assert default_layers(net) == quarters and quarters[-1] == count - 1
    assert FeatureExtractor("resnet34", pretrained=False).layers == [1, 3, 5, 7]


def test_unknown_network_lists_close_names():
    with pytest.raises(ValueError, match="resnet50") as error:
        canonical_net("resnet5O")
    assert "did you mean" in str(error.value)
    with pytest.raises(ValueError, match="efficientnet_b0"):
        FeatureExtractor("efficentnet_b0")


def test_point_beyond_the_network_says_how_many_it_has():
    with pytest.raises(ValueError, match="resnet18.*8 points, 0..7"):
        FeatureExtractor("resnet18", layers=[2, 8], pretrained=False)
    with pytest.raises(ValueError, match="18 points"):
        FeatureExtractor("inception_v3", layers=[-1], pretrained=False)


@pytest.mark.parametrize("net, layers", [("alex", None), ("squeeze", None), ("vgg", None),
                                         ("densenet121", [2, 4, 6, 10])])
def test_too_small_image_is_a_value_error_naming_net_and_minimum(net, layers, monkeypatch, from_reference):
    ours = FeatureExtractor(net, layers=layers, pretrained=False)
    smallest = ours.min_size()
    assert smallest > 1
    children = reference_children(reference_model(net), net)[: ours.layers[-1] + 1]
    plain = nn.Sequential(*children)
    with torch.no_grad():
        plain(torch.zeros(1, 3, smallest, smallest))  # the minimum runs in plain torchvision
        with pytest.raises(RuntimeError):
            plain(torch.zeros(1, 3, smallest - 1, smallest - 1))  # and one pixel less does not
        assert len(ours(images(0, size=smallest))) == len(ours.layers)
        probes = []
        monkeypatch.setattr(FeatureExtractor, "_probe_min_size", lambda self: probes.append(1))
        for shape in ((smallest - 1, smallest - 1), (smallest - 1, 2 * smallest)):
            with pytest.raises(ValueError, match=f"too small for {ours.net}.*at least {smallest}x{smallest}"):
                ours(torch.rand(1, 3, *shape))
    assert not probes, "the minimum size is probed once per network and points"


def test_registry_weights_files_load_strictly(tmp_path, monkeypatch):
    """Files with torchvision's names and layouts: GoogLeNet with its auxiliary classifiers,
    DenseNet with its old key names and no num_batches_tracked; a file short of keys is refused."""
    folder = tmp_path / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    for net, layers in (("googlenet", [0, 5, 8, 15]), ("densenet121", [2, 4, 6, 10])):
        model = reference_model(net)
        state = model.state_dict()
        if net == "densenet121":
            state = {key.replace("norm1.", "norm.1.").replace("conv2.", "conv.2."): value
                     for key, value in state.items() if not key.endswith("num_batches_tracked")}
            assert any(".norm.1." in key for key in state)
        torch.save(state, folder / os.path.basename(checkpoint_path(net)))
        ours = FeatureExtractor(net)
        x = images(3)
        with torch.no_grad():
            for a, b in zip(ours(x), reference_activations(model, net, layers, x)):
                torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    without_aux = {k: v for k, v in reference_model("googlenet").state_dict().items() if not k.startswith("aux")}
    torch.save(without_aux, folder / os.path.basename(checkpoint_path("googlenet")))
    with pytest.raises(ValueError, match="missing keys.*aux1"):
        FeatureExtractor("googlenet")
