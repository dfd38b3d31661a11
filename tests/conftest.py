"""Shared fixtures: random-initialised backbone weights under a temporary TORCH_HOME, the lpips package's
models on them, generated BAPPS trees, and a counter of the images each backbone sees.

The weights are written once per test session with torchvision's file names, so the code
under test finds them exactly where it would find downloaded ImageNet weights. The BAPPS
trees are synthetic (`dataset_collector.write_synthetic`), each written once per session.
"""
import pytest

from dataset_collector import write_synthetic
from helpers import LPIPS_PACKAGE, ForwardCounter, lpips_reference, write_random_weights


@pytest.fixture(scope="session")
def weights_home(tmp_path_factory):
    """A TORCH_HOME folder holding random weights for alex, squeeze and vgg: {net: path of its file, "home": it}."""
    home = tmp_path_factory.mktemp("torch_home")
    return {**write_random_weights(home), "home": str(home)}


@pytest.fixture(scope="session")
def lpips_models(weights_home):
    """`lpips_models(net, kind)`: the lpips package's model on the random backbone weights, kind "v0.1",
    "v0.0" or "baseline" (`helpers.LPIPS_PACKAGE`), each built once per session (tests must not change it)."""
    models = {}

    def model(net, kind="v0.1"):
        if (net, kind) not in models:
            models[net, kind] = lpips_reference(net, weights_home[net], **LPIPS_PACKAGE[kind])
        return models[net, kind]

    return model


@pytest.fixture
def lpips_ssim(monkeypatch):
    """lpips.DSSIM runnable: `skimage.measure.compare_ssim`, which it calls and scikit-image removed, put back
    (as `pixel_metrics.compare_ssim`, today's structural_similarity) for one test."""
    import skimage.measure

    from pixel_metrics import compare_ssim
    monkeypatch.setattr(skimage.measure, "compare_ssim", compare_ssim, raising=False)


@pytest.fixture
def torch_home(weights_home, monkeypatch):
    """TORCH_HOME set to the random-weights folder for one test."""
    monkeypatch.setenv("TORCH_HOME", weights_home["home"])
    return weights_home


@pytest.fixture(scope="session")
def bapps_tree(tmp_path_factory):
    """The factory of generated BAPPS trees: `bapps_tree(n_2afc=..., n_jnd=..., parts=...)` -> its path (str),
    each distinct tree written once per session (tests only read them)."""
    trees = {}

    def tree(n_2afc=4, n_jnd=8, parts=("val", "jnd"), **options):
        key = (n_2afc, n_jnd, tuple(parts), tuple(sorted(options.items())))
        if key not in trees:
            root = tmp_path_factory.mktemp("bapps")
            trees[key] = str(write_synthetic(root, n_2afc=n_2afc, n_jnd=n_jnd, parts=parts, **options))
        return trees[key]

    return tree


@pytest.fixture
def bapps(bapps_tree):
    """24 triplets (4 per 2AFC val subsplit) and 16 pairs (8 per JND subsplit) of 64x64 patches."""
    return bapps_tree()


@pytest.fixture
def forwards():
    """Counts the images each FeatureExtractor sees while evaluating (see `helpers.ForwardCounter`)."""
    counter = ForwardCounter()
    yield counter
    counter.remove()
