"""hubconf.py through torch.hub (source="local"): the entries equal DistanceMetric and the lpips package,
and keep float32 distances under torch.autocast."""
from pathlib import Path

import pytest
import torch

from helpers import assert_close, images, lpips_reference
from metric import DistanceMetric

ROOT = str(Path(__file__).resolve().parents[1])


def hub(entry, **kwargs):
    return torch.hub.load(ROOT, entry, source="local", **kwargs)


def test_dps_equals_distance_metric(torch_home):
    x0, x1 = images(20), images(21)
    ours = hub("dps", net="vgg", method="spatial+sort", channel_norm=False, layers=[3, 8])
    assert isinstance(ours, DistanceMetric)
    with torch.no_grad():
        expected = DistanceMetric("vgg", method="spatial+sort", channel_norm=False, layers=[3, 8])(x0, x1)
        assert torch.equal(ours(x0, x1), expected)


def test_dps_with_lpips_weights_and_a_weights_file(torch_home):
    x0, x1 = images(22), images(23)
    ours = hub("dps", net="squeeze", lin=True, lpips_weights="official", normalize="lpips",
               weights=torch_home["squeeze"], pretrained=False)
    with torch.no_grad():
        assert_close(ours(x0, x1), lpips_reference("squeeze", torch_home["squeeze"])(2 * x0 - 1, 2 * x1 - 1).flatten())


def test_lpips_entry_equals_the_lpips_package(torch_home):
    x0, x1 = images(24), images(25)
    with torch.no_grad():
        ours = hub("lpips", net="alex")(x0, x1)
        assert_close(ours, lpips_reference("alex", torch_home["alex"])(2 * x0 - 1, 2 * x1 - 1).flatten())


def test_lpips_entry_v0_0_equals_the_lpips_package_v0_0(torch_home, lpips_models):
    x0, x1 = images(28), images(29)
    with torch.no_grad():
        ours = hub("lpips", net="squeeze", version="0.0")(x0, x1)
        assert_close(ours, lpips_models("squeeze", "v0.0")(2 * x0 - 1, 2 * x1 - 1).flatten())
    with pytest.raises(ValueError, match="unknown LPIPS version '0.2'; expected one of 0.1, 0.0"):
        hub("lpips", version="0.2")


@pytest.mark.parametrize("entry, kwargs", [("dps", {"method": "spatial+sort"}), ("lpips", {})])
def test_autocast_bfloat16_keeps_float32_distances(torch_home, entry, kwargs):
    metric = hub(entry, net="alex", **kwargs)
    x0, x1 = images(26), images(27).requires_grad_()
    full = metric(x0, x1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        half = metric(x0, x1)
        half.sum().backward()
    assert half.dtype == torch.float32 and full.dtype == torch.float32
    assert torch.allclose(half, full, rtol=0.05, atol=0)
    assert torch.isfinite(x1.grad).all() and x1.grad.abs().sum() > 0


def test_dps_refuses_a_string_for_a_boolean(torch_home):
    with pytest.raises(TypeError, match="channel_norm must be True or False, got 'off'"):
        hub("dps", net="alex", channel_norm="off")
    with pytest.raises(ValueError, match="lin=True needs lpips_weights"):
        hub("dps", net="alex", lin=True)


def test_lpips_entry_for_a_net_without_official_weights_points_to_dps(torch_home):
    message = (r"LPIPS has official linear weights only for alex \(alexnet\), squeeze \(squeezenet1_1, squeezenet\), "
               r"vgg \(vgg16\), not 'resnet18'; for another network use the 'dps' entry with lin=True .*"
               r"lpips_weights='.../lin.pth'")
    with pytest.raises(ValueError, match=message):
        hub("lpips", net="resnet18")
    assert hub("lpips", net="alexnet").net.net == "alex"
