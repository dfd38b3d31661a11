"""DistanceMetric against an independent plain-torch reference and against the lpips package (LPIPS v0.1 and
v0.0, the baseline, their spatial maps and per-layer terms)."""
import numpy as np
import pytest
import torch

from helpers import (LPIPS_EQUIVALENT, LPIPS_LAYERS, NETS, assert_close, images, lpips_reference, lpips_spatial,
                     reference_distance, reference_features)
from loss_networks import FeatureExtractor, WeightsUnavailableError
from metric import ALL_CONFIGS, METHODS, UNTRAINED, DistanceMetric


@pytest.mark.parametrize("net", NETS)
def test_all_configurations_equal_plain_torch_reference(torch_home, net):
    x0, x1 = images(0), images(1)
    f0, f1 = reference_features(net, torch_home[net], x0), reference_features(net, torch_home[net], x1)
    by_cache = DistanceMetric(net).all_methods(x0, x1)
    by_path = DistanceMetric(net, weights=torch_home[net], pretrained=False).all_methods(x0, x1)
    for method, norm in ALL_CONFIGS:
        ref = reference_distance(f0, f1, method, norm)
        assert_close(by_cache[method, norm], ref)
        assert_close(by_path[method, norm], ref)


@pytest.mark.parametrize("net", NETS)
def test_official_lpips_equals_lpips_package(torch_home, net):
    x0, x1 = images(2), images(3)
    ours = DistanceMetric(net, lin=True, normalize="lpips", lpips_weights="official")
    theirs = lpips_reference(net, torch_home[net])
    with torch.no_grad():
        assert_close(ours(x0, x1), theirs(2 * x0 - 1, 2 * x1 - 1).flatten())


@pytest.mark.parametrize("net", NETS)
def test_baseline_lpips_normalisation_equals_lpips_package(torch_home, net):
    x0, x1 = images(4), images(5)
    ours = DistanceMetric(net, lin=False, normalize="lpips")
    theirs = lpips_reference(net, torch_home[net], lpips=False)
    with torch.no_grad():
        assert_close(ours(x0, x1), theirs(2 * x0 - 1, 2 * x1 - 1).flatten())


@pytest.mark.parametrize("net", ("alex", "squeeze"))
def test_all_methods_equals_single_configurations(torch_home, net):
    x0, x1 = images(6), images(7)
    together = DistanceMetric(net).all_methods(x0, x1)
    assert set(together) == set(ALL_CONFIGS)
    for method, norm in ALL_CONFIGS:
        alone = DistanceMetric(net, method=method, channel_norm=norm)(x0, x1)
        assert torch.allclose(together[method, norm], alone, rtol=1e-6, atol=0)


def test_features_and_distance_split_equals_call(torch_home):
    metric = DistanceMetric("alex", method="spatial+sort", channel_norm=False)
    x0, x1 = images(8), images(9)
    split = metric.distance(metric.features(x0), metric.features(x1))
    assert torch.equal(split, metric(x0, x1))
    other = metric.distance(metric.features(x0), metric.features(x1), method="mean", channel_norm=True)
    assert torch.equal(other, DistanceMetric("alex", method="mean")(x0, x1))


@pytest.mark.parametrize("method", METHODS)
def test_gradients_flow_and_identical_inputs_give_zero(torch_home, method):
    metric = DistanceMetric("alex", method=method, lin=True, lpips_weights=UNTRAINED)
    metric.clamp_weights()
    x0, x1 = images(10).requires_grad_(), images(11)
    metric(x0, x1).sum().backward()
    assert torch.isfinite(x0.grad).all() and x0.grad.abs().sum() > 0
    same = images(12)
    assert torch.equal(metric(same, same.clone()), torch.zeros(2))


def test_identical_inputs_give_zero_for_every_configuration(torch_home):
    x = images(13)
    for value in DistanceMetric("squeeze").all_methods(x, x.clone()).values():
        assert torch.equal(value, torch.zeros(2))


def test_distance_is_a_usable_loss(torch_home):
    """A few gradient steps on x0 bring it closer to x1 under the metric."""
    metric = DistanceMetric("alex")
    target, x = images(14), images(15).requires_grad_()
    optimizer = torch.optim.Adam([x], lr=0.02)
    start = metric(x, target).sum().item()
    for _ in range(5):
        optimizer.zero_grad()
        metric(x.clamp(0, 1), target).sum().backward()
        optimizer.step()
    assert metric(x.detach().clamp(0, 1), target).sum().item() < start


@pytest.mark.parametrize("bad, message", [
    (lambda x: 2 * x - 1, r"\[0, 1\]"),
    (lambda x: x * 255, "255"),
    (lambda x: x[:, :1], r"\(N, 3, H, W\)"),
    (lambda x: x[0], r"\(N, 3, H, W\)"),
    (lambda x: (x * 255).to(torch.uint8), "float"),
])
def test_bad_inputs_raise_clear_errors(torch_home, bad, message):
    metric = DistanceMetric("alex")
    x = images(16)
    with pytest.raises(ValueError, match=message):
        metric(bad(x), bad(x))


def test_inputs_of_different_shape_are_refused(torch_home):
    with pytest.raises(ValueError, match="differ in shape"):
        DistanceMetric("alex")(images(0, size=48), images(1, size=64))


def test_renamed_or_missing_key_is_refused(torch_home, tmp_path):
    weights = torch.load(torch_home["alex"], weights_only=True)
    weights["features.0.weights"] = weights.pop("features.0.weight")
    del weights["classifier.6.bias"]
    path = tmp_path / "broken.pth"
    torch.save(weights, path)
    with pytest.raises(ValueError) as error:
        DistanceMetric("alex", weights=str(path))
    missing, unexpected = str(error.value).split("unexpected")
    assert "'features.0.weight'" in missing and "'classifier.6.bias'" in missing
    assert "'features.0.weights'" in unexpected


def test_lpips_weights_with_wrong_keys_are_refused(torch_home, tmp_path):
    path = tmp_path / "lin.pth"
    torch.save({f"lin{k}.model.1.weight": torch.ones(1, 8, 1, 1) for k in range(4)}, path)
    with pytest.raises(ValueError, match="lin4.model.1.weight"):
        DistanceMetric("alex", lin=True, lpips_weights=str(path))


@pytest.mark.parametrize("net, file", [("alexnet", "alexnet-owt-7be5be79.pth"),
                                       ("resnet50", "resnet50-0676ba61.pth")])  # IMAGENET1K_V1, not V2
def test_missing_weights_without_network_name_file_url_and_folder(tmp_path, monkeypatch, net, file):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    for proxy in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(proxy, "http://127.0.0.1:9")  # nothing listens there: no network
    with pytest.raises(WeightsUnavailableError) as error:
        FeatureExtractor(net)
    text = str(error.value)
    assert file in text and f"https://download.pytorch.org/models/{file}" in text
    assert str(tmp_path / "hub" / "checkpoints") in text
    assert not (tmp_path / "hub" / "checkpoints" / file).exists()


def test_aliases_layers_and_frozen_extractor(torch_home):
    extractor = FeatureExtractor("squeezenet1_1")
    assert extractor.net == "squeeze" and extractor.layers == LPIPS_LAYERS["squeeze"]
    assert not extractor.training and not any(p.requires_grad for p in extractor.parameters())
    assert len(extractor.features) == LPIPS_LAYERS["squeeze"][-1] + 1
    assert FeatureExtractor("vgg16", trainable=True).training
    with pytest.raises(ValueError, match="alexnet"):
        FeatureExtractor("resnet")


def test_returned_layer_is_not_overwritten_by_an_inplace_relu(torch_home):
    """Layer 0 is AlexNet's first conv; the in-place ReLU after it must not clip the returned map."""
    conv, relu = FeatureExtractor("alex", layers=[0, 1])(images(17))
    assert (conv < 0).any() and torch.equal(relu, conv.clamp_min(0))


def test_nan_pixels_are_counted_and_located(torch_home):
    x = images(18, n=4)
    x[1, 0, 3, 3] = x[3, 2, 0, 0] = x[3, 1, 5, 5] = float("nan")
    with pytest.raises(ValueError, match=r"3 NaN values, in batch items 1, 3 \(of 4\)"):
        DistanceMetric("alex")(x, images(19, n=4))


@pytest.mark.parametrize("value", [float("inf"), float("-inf")])
def test_infinite_pixels_give_no_rescaling_hint(torch_home, value):
    x = images(20)
    x[0, 1, 2, 2] = value
    with pytest.raises(ValueError, match=r"1 infinite value, in batch items 0 \(of 2\)") as error:
        DistanceMetric("alex")(images(21), x)
    assert "255" not in str(error.value) and "rescale" not in str(error.value)


def test_float64_input_is_cast_and_double_metric_computes_in_float64(torch_home):
    x0, x1 = images(22), images(23)
    metric = DistanceMetric("alex", method="spatial+sort")
    single = metric(x0, x1)
    cast = metric(x0.double(), x1.double())
    assert cast.dtype == torch.float32 and torch.equal(cast, single)
    metric.double()
    double = metric(x0.double(), x1.double())
    assert double.dtype == torch.float64
    f0, f1 = reference_features("alex", torch_home["alex"], x0), reference_features("alex", torch_home["alex"], x1)
    # 1e-7, not float64's 1e-15: the normalisation constants are kept as float32 values
    assert_close(double, reference_distance(f0, f1, "spatial+sort", True), rtol=1e-7)


def test_empty_batch_gives_an_empty_result(torch_home):
    empty = torch.rand(0, 3, 48, 48)
    for metric in (DistanceMetric("squeeze"),
                   DistanceMetric("alex", method="spatial+mean", lin=True, lpips_weights=UNTRAINED)):
        d = metric(empty, empty)
        assert d.shape == (0,) and d.dtype == torch.float32
    together = DistanceMetric("alex").all_methods(empty, empty)
    assert set(together) == set(ALL_CONFIGS) and all(d.shape == (0,) for d in together.values())


@pytest.mark.parametrize("value", [-0.5, float("nan"), float("inf")])
def test_negative_or_non_finite_linear_weights_are_refused(torch_home, tmp_path, value):
    state = DistanceMetric("alex", lin=True, lpips_weights=UNTRAINED).lpips_state_dict()
    for weight in state.values():
        weight.fill_(0.1)
    state["lin2.model.1.weight"][0, 7] = value
    path = tmp_path / "lin.pth"
    torch.save(state, path)
    with pytest.raises(ValueError, match=rf"{path}: lin2.model.1.weight has negative or non-finite values"):
        DistanceMetric("alex", lin=True, lpips_weights=str(path))


def damaged_weights(kind, good, path):
    """A weights file that torch.load cannot give a state dict from: written to `path`, returned."""
    data = open(good, "rb").read()
    content = {"empty": b"", "garbage": b"not a checkpoint at all\n", "html": b"<!DOCTYPE html><html></html>",
               "truncated": data[: len(data) // 2]}.get(kind)
    if content is None:
        torch.save({"list": [1, 2]} if kind == "not-tensors" else torch.ones(3), path)
    else:
        path.write_bytes(content)
    return path


DAMAGE = ("empty", "garbage", "html", "truncated", "not-tensors", "a-tensor")


@pytest.mark.parametrize("kind", DAMAGE)
def test_damaged_weights_file_names_the_file_and_the_fix(torch_home, tmp_path, kind):
    backbone = damaged_weights(kind, torch_home["alex"], tmp_path / "alexnet-owt-7be5be79.pth")
    with pytest.raises(ValueError, match="delete it and download it again") as error:
        DistanceMetric("alex", weights=str(backbone))
    assert str(backbone) in str(error.value) and "\n" not in str(error.value)
    official = DistanceMetric("alex", lin=True, lpips_weights="official").lpips_state_dict()
    torch.save(official, tmp_path / "good_lin.pth")
    linear = damaged_weights(kind, tmp_path / "good_lin.pth", tmp_path / "lin.pth")
    with pytest.raises(ValueError, match=f"{linear}.*delete it and download it again"):
        DistanceMetric("alex", lin=True, lpips_weights=str(linear))


def test_half_precision_activations_are_compared_in_float32(torch_home):
    """Under float16 autocast a channel's sum of squares over 65504 would be inf and zero the view."""
    metric = DistanceMetric("alex")
    big = [torch.full((1, 4, 2, 2), 1000.0, dtype=torch.float16)]
    (view,) = metric.views(big, [("spatial", True)])["spatial", True]
    assert view.dtype == torch.float32 and torch.allclose(view, torch.full_like(view, 0.5))


# ---------------------------------------------------------------- LPIPS v0.0, spatial maps, per-layer terms


def assert_gradients_close(ours, theirs):
    """Gradients equal to 1e-5 of the largest (elementwise relative fails where a gradient is near 0)."""
    assert_close(ours, theirs, rtol=1e-5, atol=1e-5 * theirs.abs().max().item())


def leaves(*xs):
    return [x.clone().requires_grad_() for x in xs]


@pytest.mark.parametrize("net", NETS)
def test_lpips_v0_0_values_and_gradients_equal_lpips_package(torch_home, lpips_models, net):
    x0, x1 = images(30, size=32), images(31, size=32)
    ours, theirs = DistanceMetric(net, **LPIPS_EQUIVALENT["v0.0"]), lpips_models(net, "v0.0")
    (a,), (b,) = leaves(x0), leaves(x0)
    d, e = ours(a, x1), theirs(2 * b - 1, 2 * x1 - 1).flatten()
    assert_close(d, e)
    (d * torch.tensor([1.0, 2.0])).sum().backward()
    (e * torch.tensor([1.0, 2.0])).sum().backward()
    assert_gradients_close(a.grad, b.grad)
    with torch.no_grad():  # v0.0 is another metric than v0.1: the comparison can tell them apart
        assert not torch.allclose(e, lpips_models(net)(2 * x0 - 1, 2 * x1 - 1).flatten(), rtol=1e-2)


@pytest.mark.parametrize("kind", ("v0.1", "v0.0", "baseline"))
@pytest.mark.parametrize("net", NETS)
def test_distance_maps_and_their_gradients_equal_lpips_spatial(torch_home, lpips_models, net, kind):
    x0, x1 = images(32, size=32), images(33, size=32)
    ours, theirs = DistanceMetric(net, **LPIPS_EQUIVALENT[kind]), lpips_models(net, kind)
    (a,), (b,) = leaves(x0), leaves(x0)
    got, expected = ours.distance_map(a, x1), lpips_spatial(theirs, 2 * b - 1, 2 * x1 - 1)
    assert got.shape == expected.shape == (2, 1, 32, 32)
    assert_close(got, expected)
    got[:, :, 8:20, 4:12].sum().backward()
    expected[:, :, 8:20, 4:12].sum().backward()
    assert_gradients_close(a.grad, b.grad)


@pytest.mark.parametrize("net", NETS)
def test_layer_distances_equal_lpips_ret_per_layer(torch_home, lpips_models, net):
    x0, x1 = images(34, size=32), images(35, size=32)
    for kind in ("v0.1", "baseline"):
        ours, theirs = DistanceMetric(net, **LPIPS_EQUIVALENT[kind]), lpips_models(net, kind)
        (a,), (b,) = leaves(x0), leaves(x0)
        got = ours.layer_distances(a, x1)
        value, per_layer = theirs(2 * b - 1, 2 * x1 - 1, retPerLayer=True)
        assert got.shape == (2, len(LPIPS_LAYERS[net]))
        assert_close(got, torch.cat([term.flatten(1) for term in per_layer], 1))
        assert torch.equal(got.sum(1), ours(x0, x1))  # the metric is the sum of its columns
        got[:, 1].sum().backward()
        per_layer[1].sum().backward()
        assert_gradients_close(a.grad, b.grad)


def test_layer_distances_of_every_configuration_equal_plain_torch_per_layer(torch_home):
    """A column is one extraction point's distance; for spatial+sort and spatial+mean both parts at it."""
    x0, x1 = images(36, size=32), images(37, size=32)
    both = reference_features("alex", torch_home["alex"], torch.cat([x0, x1]))
    f0, f1 = [f[:2] for f in both], [f[2:] for f in both]
    metric = DistanceMetric("alex")
    for method, norm in ALL_CONFIGS:
        got = metric.layer_distances(x0, x1, method, norm)
        expected = torch.stack([reference_distance([a], [b], method, norm) for a, b in zip(f0, f1)], 1)
        assert_close(got, expected)
        assert torch.equal(got.sum(1), metric.distance(metric.features(x0), metric.features(x1), method, norm))


def test_spatial_plus_mean_map_adds_both_parts_maps(torch_home):
    """Each part with its own (here random) linear weights, as in a metric of that part alone."""
    x0, x1 = images(38), images(39)
    generator = torch.Generator().manual_seed(0)
    both = DistanceMetric("alex", method="spatial+mean", lin=True, lpips_weights=UNTRAINED)
    parts = {part: DistanceMetric("alex", method=part, lin=True, lpips_weights=UNTRAINED)
             for part in ("spatial", "mean")}
    with torch.no_grad():
        for part, alone in parts.items():
            for mine, its in zip(both.lins[part], alone.lins[part]):
                mine.model[1].weight.copy_(torch.rand(mine.model[1].weight.shape, generator=generator))
                its.model[1].weight.copy_(mine.model[1].weight)
        expected = parts["spatial"].distance_map(x0, x1) + parts["mean"].distance_map(x0, x1)
        assert_close(both.distance_map(x0, x1), expected)


@pytest.mark.parametrize("channel_norm", (True, False))
def test_mean_map_is_constant_and_equals_the_metric(torch_home, channel_norm):
    x0, x1 = images(2, n=1), images(3, n=1)
    metric = DistanceMetric("squeeze", method="mean", channel_norm=channel_norm)
    with torch.no_grad():
        dmap = metric.distance_map(x0, x1)
        value = metric(x0, x1)
    torch.testing.assert_close(dmap, value.view(1, 1, 1, 1).expand(1, 1, 48, 48), rtol=1e-5, atol=0)


@pytest.mark.parametrize("method", METHODS)
def test_identical_images_give_a_zero_map_and_different_ones_do_not(torch_home, method):
    metric = DistanceMetric("alex")
    x0, x1 = images(4, n=1), images(5, n=1)
    with torch.no_grad():
        same = metric.distance_map(x0, x0.clone(), method, True)
        other = metric.distance_map(x0, x1, method, True)
        value = metric.distance(metric.features(x0), metric.features(x1), method, True)
    assert same.shape == other.shape == (1, 1, 48, 48)
    assert same.abs().max() == 0 and other.min() > 0
    assert other.mean().item() == pytest.approx(value.item(), rel=0.05)


def test_a_lin_metric_maps_only_its_own_method(torch_home):
    metric = DistanceMetric("alex", lin=True, lpips_weights="official")
    with pytest.raises(ValueError, match="linear weights for 'spatial' only, not 'sort'"):
        metric.distance_map(images(0), images(1), method="sort")


@pytest.mark.parametrize("name, value", [("channel_norm", "off"), ("channel_norm", "false"), ("lin", "true"),
                                         ("pretrained", 0), ("channel_norm", None)])
def test_flags_that_are_not_booleans_are_a_type_error(torch_home, name, value):
    with pytest.raises(TypeError, match=rf"^{name} must be True or False, got {value!r} \(\w+\): pass {name}=True"):
        DistanceMetric("alex", **{name: value})


def test_numpy_booleans_are_booleans(torch_home):
    x0, x1 = images(30), images(31)
    assert torch.equal(DistanceMetric("alex", channel_norm=np.False_)(x0, x1),
                       DistanceMetric("alex", channel_norm=False)(x0, x1))


def test_lin_without_lpips_weights_is_an_error_naming_them(torch_home):
    message = (r"lin=True needs lpips_weights: \"official\" \(LPIPS v0.1\), \"official-v0.0\" \(LPIPS v0.0\) or the "
               r"path .*lpips_weights=metric\.UNTRAINED\)$")
    with pytest.raises(ValueError, match=message):
        DistanceMetric("alex", lin=True)
    untrained = DistanceMetric("alex", lin=True, lpips_weights=UNTRAINED)
    assert untrained.lin and repr(UNTRAINED) == "metric.UNTRAINED"
