"""torch.hub entry points: the metric inside another codebase, without vendoring this repository.

    metric = torch.hub.load("<owner>/<repo>", "dps", net="vgg", method="spatial+sort")
    lpips_vgg = torch.hub.load("<owner>/<repo>", "lpips", net="vgg")
    d = metric(x0, x1)  # x0, x1: (N, 3, H, W) in [0, 1]; d: (N,), differentiable

Both return a `metric.DistanceMetric` (see README.md).
"""
from metric import DistanceMetric

dependencies = ["torch", "torchvision", "numpy", "PIL", "requests", "tqdm"]


def dps(net="alex", method="spatial", channel_norm=True, layers=None, lin=False, lpips_weights=None,
        normalize="imagenet", weights=None, pretrained=True):
    """A deep perceptual similarity metric: `DistanceMetric` with these arguments.

    net: alex, squeeze, vgg (and aliases); method: spatial, sort, mean, spatial+sort,
    spatial+mean; layers: extraction points (default: the LPIPS layers); lin and
    lpips_weights ("official" or a path): LPIPS linear calibration; normalize:
    "imagenet" or "lpips"; weights: a torchvision state dict file of the whole classifier
    instead of torchvision's ImageNet weights.
    """
    return DistanceMetric(net=net, method=method, channel_norm=channel_norm, lin=lin, normalize=normalize,
                          pretrained=pretrained, weights=weights, lpips_weights=lpips_weights, layers=layers)


def lpips(net="alex", weights=None):
    """Official LPIPS v0.1: equals `lpips.LPIPS(net=net)(2 * x0 - 1, 2 * x1 - 1)` on images in [0, 1].

    The linear weights ship inside the `lpips` package (pip install lpips).
    """
    return DistanceMetric(net=net, lin=True, normalize="lpips", lpips_weights="official", weights=weights)
