"""Shared fixtures: random-initialised backbone weights under a temporary TORCH_HOME.

The weights are written once per test session with torchvision's file names, so the
code under test finds them exactly where it would find downloaded ImageNet weights.
"""
import pytest
import torch
import torchvision

FILES = {
    "alex": (torchvision.models.alexnet, "alexnet-owt-7be5be79.pth"),
    "squeeze": (torchvision.models.squeezenet1_1, "squeezenet1_1-b8a52dc0.pth"),
    "vgg": (torchvision.models.vgg16, "vgg16-397923af.pth"),
}


@pytest.fixture(scope="session")
def weights_home(tmp_path_factory):
    """A TORCH_HOME folder holding random weights for every net: {net: path of its file}."""
    home = tmp_path_factory.mktemp("torch_home")
    folder = home / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    paths = {}
    for seed, (net, (constructor, name)) in enumerate(FILES.items()):
        torch.manual_seed(seed)
        paths[net] = str(folder / name)
        torch.save(constructor(weights=None).state_dict(), paths[net])
    paths["home"] = str(home)
    return paths


@pytest.fixture
def torch_home(weights_home, monkeypatch):
    """TORCH_HOME set to the random-weights folder for one test."""
    monkeypatch.setenv("TORCH_HOME", weights_home["home"])
    return weights_home

