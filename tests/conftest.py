"""Shared fixtures: random-initialised backbone weights under a temporary TORCH_HOME, generated
BAPPS trees, and a counter of the images each backbone sees.

The weights are written once per test session with torchvision's file names, so the code
under test finds them exactly where it would find downloaded ImageNet weights. The BAPPS
trees are synthetic (`dataset_collector.write_synthetic`), each written once per session.
"""
import pytest

from dataset_collector import write_synthetic
from helpers import ForwardCounter, write_random_weights


@pytest.fixture(scope="session")
def weights_home(tmp_path_factory):
    """A TORCH_HOME folder holding random weights for alex, squeeze and vgg: {net: path of its file, "home": it}."""
    home = tmp_path_factory.mktemp("torch_home")
    return {**write_random_weights(home), "home": str(home)}


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
