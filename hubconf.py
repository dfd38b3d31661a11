"""torch.hub entry points: the metric inside another codebase, without vendoring this repository.

    metric = torch.hub.load("<owner>/<repo>", "dps", net="vgg", method="spatial+sort")
    lpips_vgg = torch.hub.load("<owner>/<repo>", "lpips", net="vgg")
    lpips_v0 = torch.hub.load("<owner>/<repo>", "lpips", net="alex", version="0.0")
    d = metric(x0, x1)  # x0, x1: (N, 3, H, W) in [0, 1]; d: (N,), differentiable

Both return a `metric.DistanceMetric` (see README.md).
"""
from metric import DistanceMetric, check_official_net

dependencies = ["torch", "torchvision", "numpy", "PIL", "requests", "tqdm"]


def dps(net="alex", method="spatial", channel_norm=True, layers=None, lin=False, lpips_weights=None,
        normalize="imagenet", weights=None, pretrained=True):
    """A deep perceptual similarity metric: `DistanceMetric` with these arguments.

    net: alex, squeeze, vgg (and aliases); method: spatial, sort, mean, spatial+sort,
    spatial+mean; layers: extraction points (default: the LPIPS layers); lin and
    lpips_weights ("official", "official-v0.0" or a path): LPIPS linear calibration;
    normalize: "imagenet", "lpips" or "signed" (2x - 1 alone, LPIPS v0.0's input); weights:
    a torchvision state dict file of the whole classifier instead of torchvision's ImageNet
    weights.
    """
    return DistanceMetric(net=net, method=method, channel_norm=channel_norm, lin=lin, normalize=normalize,
                          pretrained=pretrained, weights=weights, lpips_weights=lpips_weights, layers=layers)


LPIPS_VERSIONS = {"0.1": ("official", "lpips"), "0.0": ("official-v0.0", "signed")}  # (lpips_weights, normalize)


def lpips(net="alex", version="0.1", weights=None):
    """Official LPIPS: equals `lpips.LPIPS(net=net, version=version)(2 * x0 - 1, 2 * x1 - 1)` on images in [0, 1].

    version: "0.1" (the default, as lpips's) or "0.0" (the first release's weights, and the
    [-1, 1] image fed to the network without LPIPS's scaling layer, as many papers report it).
    net: alex, squeeze or vgg (or their aliases), the networks LPIPS has weights for. The linear
    weights ship inside the `lpips` package (pip install lpips).
    """
    if version not in LPIPS_VERSIONS:
        raise ValueError(f"unknown LPIPS version {version!r}; expected one of {', '.join(LPIPS_VERSIONS)}")
    check_official_net(net, f"for another network use the 'dps' entry with lin=True and linear weights trained "
                            f"for it: torch.hub.load(repo, 'dps', net={net!r}, lin=True, lpips_weights='.../lin.pth') "
                            f"(experiment.py --net {net} --variant lin --train writes one)")
    lpips_weights, normalize = LPIPS_VERSIONS[version]
    return DistanceMetric(net=net, lin=True, normalize=normalize, lpips_weights=lpips_weights, weights=weights)
