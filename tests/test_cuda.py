"""The metric, evaluation and training on a CUDA device (skipped where there is none).

CUDA convolutions may use TF32 and other algorithms than the CPU, so results are compared
with the same computation on the CPU within 1e-3 relative, and with the lpips package on
the same device within 1e-5.
"""
import pytest
import torch

from experiment import main
from helpers import (assert_close, fill, images, lpips_reference, read_csv_rows, read_results_csv, run_distance,
                     run_experiment)
from metric import ALL_CONFIGS, DistanceMetric

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
NETS = ("alex", "squeeze", "vgg")


@pytest.mark.parametrize("net", NETS)
def test_official_lpips_on_cuda_equals_the_package_and_the_cpu(torch_home, net):
    x0, x1 = images(0, n=4, size=64), images(1, n=4, size=64)
    metric = DistanceMetric(net, lin=True, normalize="lpips", lpips_weights="official")
    on_cpu = metric(x0, x1)
    metric.cuda()
    ours = metric(x0.cuda(), x1.cuda())
    reference = lpips_reference(net, torch_home[net]).cuda()
    with torch.no_grad():
        theirs = reference(2 * x0.cuda() - 1, 2 * x1.cuda() - 1).flatten()
    assert ours.device.type == "cuda" and ours.dtype == torch.float32
    assert_close(ours.cpu(), theirs.cpu(), rtol=1e-5)
    assert_close(ours.cpu(), on_cpu, rtol=1e-3)


def test_all_methods_on_cuda_equal_the_cpu(torch_home):
    x0, x1 = images(2, n=3, size=64), images(3, n=3, size=64)
    metric = DistanceMetric("alex")
    on_cpu = metric.all_methods(x0, x1)
    on_cuda = metric.cuda().all_methods(x0.cuda(), x1.cuda())
    for config in ALL_CONFIGS:
        assert_close(on_cuda[config].cpu(), on_cpu[config], rtol=1e-3)


def test_gradients_and_autocast_on_cuda(torch_home):
    metric = DistanceMetric("vgg", method="spatial+sort").cuda()
    x = images(4, n=2, size=64).cuda().requires_grad_()
    metric(x, images(5, n=2, size=64).cuda()).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    with torch.autocast("cuda", dtype=torch.float16):
        d = DistanceMetric("alex", lin=True, lpips_weights="official").cuda()(x.detach(), x.detach().flip(0))
    assert d.dtype == torch.float32 and torch.isfinite(d).all()


def test_evaluation_on_cuda_equals_the_cpu(torch_home, bapps, tmp_path):
    flags = ["--method", "all", "--channel-norm", "both", "--splits", "jnd", "--limit", "6"]
    assert run_experiment([*flags, "--device", "cpu"], bapps, tmp_path / "cpu") == 0
    assert run_experiment([*flags, "--device", "cuda"], bapps, tmp_path / "cuda") == 0
    cpu, cuda = read_results_csv(tmp_path / "cpu"), read_results_csv(tmp_path / "cuda")
    assert [r["method"] for r in cpu] == [r["method"] for r in cuda] and len(cpu) == 20
    for a, b in zip(cpu, cuda):
        # distances differ by ~1e-4 between devices, far less than between examples: same ranks, same scores
        assert float(b["value"]) == pytest.approx(float(a["value"]), abs=1e-9)


def test_training_on_one_gpu(torch_home, bapps_tree, tmp_path):
    data = bapps_tree(n_2afc=6, n_jnd=4, parts=("train", "jnd"))
    assert main(["--train", "--variant", "lin", "--data-root", str(data), "--no-download", "--out",
                 str(tmp_path / "out"), "--device", "cuda", "--precision", "16-mixed", "--epochs", "2",
                 "--batch-size", "6", "--num-workers", "0", "--logger", "csv", "--splits", "jnd"]) == 0
    assert (tmp_path / "out" / "alex_lin_spatial_cn_imagenet" / "version_0" / "lin.pth").is_file()
    assert len(read_results_csv(tmp_path / "out")) == 2


def test_distance_over_two_folders_on_cuda_equals_the_package_on_cuda(torch_home, tmp_path, capsys):
    import lpips
    import numpy as np
    from PIL import Image

    names = [f"{i}.png" for i in range(6)]
    dir0, dir1 = fill(tmp_path / "gen", 0, names), fill(tmp_path / "gt", 50, names)
    code, _, _ = run_distance([dir0, dir1, "--variant", "lin", "--lpips-weights", "official", "--normalize", "lpips",
                               "--device", "cuda", "--out", tmp_path / "pairs.csv"], capsys)
    assert code == 0
    package = lpips_reference("alex", torch_home["alex"]).cuda()
    for row in read_csv_rows(tmp_path / "pairs.csv")[1:]:
        x0, x1 = (lpips.im2tensor(np.array(Image.open(f"{d}/{row[0]}").convert("RGB"))).cuda() for d in (dir0, dir1))
        with torch.no_grad():
            theirs = package(x0, x1).flatten().cpu()
        assert_close(torch.tensor([float(row[2])]), theirs, rtol=1e-5)
