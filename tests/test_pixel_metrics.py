"""pixel_metrics against LPIPS's own L2 and DSSIM models and scikit-image, image by image,
and `experiment.py --net l2 ssim` against lpips's scoring of those models' values.

lpips.DSSIM calls `skimage.measure.compare_ssim`, which scikit-image removed; the
`lpips_ssim` fixture (conftest.py) puts `pixel_metrics.compare_ssim` (today's
`structural_similarity(..., channel_axis=-1)`) under that name, so the lpips code path
itself runs.
"""
import lpips
import numpy as np
import pytest
import torch
from skimage.color import rgb2lab
from skimage.metrics import structural_similarity

import pixel_metrics
from experiment import main
from helpers import expected_scores, read_results_csv, run_experiment
from pixel_metrics import (COLORSPACES, PIXEL_METRICS, PixelMetric, rgb8_to_lab, rgb_ssim, rgb_ssim_stats,
                           ssim, ssim_stats, to_8bit, window_sums)

LPIPS_MODELS = {"l2": lpips.L2, "ssim": lpips.DSSIM}


def pairs(n=6, size=32, seed=0):
    """Generated pairs (x0, x1) in [0, 1]: noise; smooth ramps against mildly noisy copies; smooth ramps
    against nearly equal copies (SSIM close to 1, where float32 rounding shows); half on the 8-bit grid."""
    g = torch.Generator().manual_seed(seed)
    ramp = torch.linspace(0, 1, size)
    smooth = (ramp.view(1, 1, 1, -1) * torch.rand(n, 3, 1, 1, generator=g)
              + ramp.view(1, 1, -1, 1) * torch.rand(n, 3, 1, 1, generator=g) * 0.5).clamp(0, 1)
    x0 = torch.cat([torch.rand(n, 3, size, size, generator=g), smooth, smooth])
    x1 = torch.cat([torch.rand(n, 3, size, size, generator=g),
                    smooth + 0.05 * torch.rand(n, 3, size, size, generator=g),
                    smooth + 0.004 * torch.randn(n, 3, size, size, generator=g)]).clamp(0, 1)
    on_grid = torch.arange(len(x0)).view(-1, 1, 1, 1) % 2 == 0  # as loaded from PNG files
    return torch.where(on_grid, (x0 * 255).round() / 255, x0), torch.where(on_grid, (x1 * 255).round() / 255, x1)


def lpips_values(name, colorspace, x0, x1):
    """LPIPS's model (it asserts batch size 1) on 2x - 1, one pair at a time: (N,)."""
    model = LPIPS_MODELS[name](use_gpu=False, colorspace=colorspace)
    return torch.cat([model(2 * a[None] - 1, 2 * b[None] - 1).flatten() for a, b in zip(x0, x1)])


def max_relative(ours, theirs):
    ours, theirs = ours.double(), theirs.double()
    return ((ours - theirs).abs() / theirs.abs()).max().item()


@pytest.mark.parametrize("colorspace", COLORSPACES)
@pytest.mark.parametrize("name", PIXEL_METRICS)
def test_batched_values_equal_lpips_models(lpips_ssim, name, colorspace):
    x0, x1 = pairs()
    theirs = lpips_values(name, colorspace, x0, x1)
    ours = PixelMetric(name, colorspace)(x0, x1)
    assert ours.shape == (len(x0),) and ours.dtype == torch.float32
    assert (theirs > 0).all()
    assert max_relative(ours, theirs) <= 1e-6
    if (name, colorspace) != ("ssim", "RGB"):  # LPIPS's float32 operations: the same bits
        assert torch.equal(ours, theirs)


def test_l2_rgb_of_float64_images_is_computed_in_float64():
    x0, x1 = (x.double() for x in pairs(n=2))
    theirs = lpips_values("l2", "RGB", x0, x1)
    assert theirs.dtype == torch.float64
    assert torch.equal(PixelMetric("l2", "RGB")(x0, x1), theirs.float())


def test_near_identical_images_are_where_the_float32_rounding_matters(lpips_ssim):
    # DSSIM near 0 amplifies float32 noise: the same SSIM in float64 misses LPIPS by more than 1e-6
    x0, x1 = pairs()
    x0, x1 = x0[-6:], x1[-6:]
    theirs = lpips_values("ssim", "Lab", x0, x1)
    assert max_relative(PixelMetric("ssim", "Lab")(x0, x1), theirs) <= 1e-6
    lab0, lab1 = (rgb8_to_lab(to_8bit(x.numpy())).astype(np.float64) for x in (x0, x1))
    in_float64 = (1 - ssim(ssim_stats(lab0), ssim_stats(lab1), 100.0)) / 2
    assert max_relative(torch.from_numpy(in_float64), theirs) > 1e-6


def test_to_8bit_is_lpips_tensor2im():
    grid = torch.arange(256, dtype=torch.float32) / 255  # PNG levels: some land one below after 2x - 1
    x = torch.cat([grid, torch.rand(4000, generator=torch.Generator().manual_seed(1))]).view(1, 1, 1, -1)
    x = x.expand(1, 3, 1, -1)
    assert np.array_equal(to_8bit(x.numpy())[0].transpose(1, 2, 0), lpips.tensor2im(2 * x - 1))
    assert (to_8bit(x.numpy())[0, 0, 0, :256] != np.arange(256)).any()


def every_colour(step):
    """Every `step`-th 8-bit colour as one (1, 3, 64, W) uint8 image."""
    code = np.arange(0, 2 ** 24, step, dtype=np.uint32)
    code = code[:len(code) // 64 * 64]
    rgb = np.stack([(code >> 16) & 255, (code >> 8) & 255, code & 255]).astype(np.uint8)
    return rgb.reshape(1, 3, 64, -1)


def scikit_lab(rgb8):
    return rgb2lab(rgb8[0].transpose(1, 2, 0)).astype(np.float32).transpose(2, 0, 1)[None]


def test_lab_is_scikit_image_rgb2lab_rounded_to_float32():
    g = torch.Generator().manual_seed(2)
    colours = torch.randint(0, 256, (4, 3, 16, 16), generator=g, dtype=torch.uint8).numpy()
    grays = np.broadcast_to(np.arange(256, dtype=np.uint8).reshape(1, 1, 16, 16), (1, 3, 16, 16))  # a, b near 0
    for rgb8 in (colours, grays):
        theirs = rgb2lab(rgb8.transpose(0, 2, 3, 1)).astype(np.float32)
        assert np.array_equal(rgb8_to_lab(rgb8).transpose(0, 2, 3, 1), theirs)
    rgb8 = every_colour(61)  # 275,000 colours across the cube
    assert np.array_equal(rgb8_to_lab(rgb8), scikit_lab(rgb8))


def test_window_sums_are_plain_sums_over_7x7_windows():
    x = np.random.default_rng(5).integers(0, 256, (12, 9)) ** 2
    expected = np.array([[x[i:i + 7, j:j + 7].sum() for j in range(3)] for i in range(6)])
    assert np.array_equal(window_sums(x), expected)


def test_rgb_ssim_from_window_sums_is_structural_similarity():
    g = torch.Generator().manual_seed(6)
    a = torch.randint(0, 256, (4, 3, 20, 24), generator=g, dtype=torch.uint8)
    near = (a.int() + torch.randint(-1, 2, a.shape, generator=g) * (torch.rand(a.shape, generator=g) < 0.02))
    b = torch.cat([torch.randint(0, 256, (2, 3, 20, 24), generator=g, dtype=torch.uint8),
                   near[2:].clamp(0, 255).to(torch.uint8)]).numpy()  # SSIM near 1 in the last two
    a = a.numpy()
    ours = rgb_ssim(rgb_ssim_stats(a), rgb_ssim_stats(b))
    for i in range(len(a)):
        theirs = structural_similarity(a[i].transpose(1, 2, 0).astype(np.float64),
                                       b[i].transpose(1, 2, 0).astype(np.float64), data_range=255, channel_axis=-1)
        assert (1 - ours[i]) / 2 == pytest.approx((1 - theirs) / 2, rel=1e-9, abs=0)


@pytest.mark.parametrize("dtype, data_range, rtol", [(np.float32, 100.0, 0), (np.float64, 255.0, 1e-14)])
def test_ssim_is_structural_similarity(dtype, data_range, rtol):
    # float32 (the Lab path) to the bit; float64 up to the order of its final float64 means
    rng = np.random.default_rng(3)
    a = rng.random((3, 3, 20, 24)) * data_range
    a, b = a.astype(dtype), (a + rng.normal(size=a.shape) * data_range / 20).astype(dtype)
    ours = ssim(ssim_stats(a), ssim_stats(b), data_range)
    assert ours.dtype == dtype
    for i in range(len(a)):
        theirs = structural_similarity(a[i].transpose(1, 2, 0), b[i].transpose(1, 2, 0),
                                       data_range=data_range, channel_axis=-1)
        assert ours[i] == pytest.approx(theirs, rel=rtol, abs=0)


@pytest.mark.parametrize("name", PIXEL_METRICS)
def test_a_batch_equals_its_images_one_by_one(name):
    x0, x1 = pairs(n=2)
    metric = PixelMetric(name, "Lab")
    whole = metric(x0, x1)
    assert torch.equal(whole, torch.cat([metric(a[None], b[None]) for a, b in zip(x0, x1)]))


@pytest.mark.parametrize("colorspace", COLORSPACES)
@pytest.mark.parametrize("name", PIXEL_METRICS)
def test_slices_of_a_batch_change_no_value(monkeypatch, name, colorspace):
    x0, x1 = pairs()  # 18 pairs of 32x32: 1 slice, then slices of 4, 4, 4, 4 and 2 images
    whole = PixelMetric(name, colorspace)(x0, x1)
    monkeypatch.setattr(pixel_metrics, "CHUNK_ELEMENTS", 4 * 3 * 32 * 32)
    assert torch.equal(PixelMetric(name, colorspace)(x0, x1), whole)


def test_identical_images_are_at_distance_zero():
    x = pairs(n=2)[0]
    for name in PIXEL_METRICS:
        for colorspace in COLORSPACES:
            assert (PixelMetric(name, colorspace)(x, x) == 0).all()
            assert PixelMetric(name, colorspace)(x[:0], x[:0]).shape == (0,)


def test_bad_names_and_inputs_say_what_to_do():
    with pytest.raises(ValueError, match="unknown pixel metric 'l1'.*l2, ssim"):
        PixelMetric("l1")
    with pytest.raises(ValueError, match="unknown colour space 'lab'.*Lab, RGB"):
        PixelMetric("l2", "lab")
    x = torch.rand(1, 3, 16, 16)
    with pytest.raises(ValueError, match=r"rescale with \(x \+ 1\) / 2"):
        PixelMetric("ssim")(2 * x - 1, x)
    with pytest.raises(ValueError, match="differ in shape"):
        PixelMetric("l2")(x, torch.rand(1, 3, 16, 8))
    threads = torch.get_num_threads()
    with pytest.raises(ValueError, match="smaller than SSIM's 7x7 window"):
        PixelMetric("ssim")(x[..., :6], x[..., :6])
    assert torch.get_num_threads() == threads  # no process-wide setting, also on the error path


# ---------------------------------------------------------------- the BAPPS evaluation


@pytest.fixture
def bapps(bapps_tree):
    """18 triplets (3 per 2AFC subsplit) and 12 pairs (6 per JND subsplit) of 64x64 patches."""
    return bapps_tree(n_2afc=3, n_jnd=6)


def pixel_scores(rows, net, normalize):
    """{(dataset, subsplit, measure): value} of one pixel metric's rows, checking their other columns."""
    mine = [r for r in rows if (r["net"], r["normalize"]) == (net, normalize)]
    assert {(r["layers"], r["variant"], r["method"], r["channel_norm"], r["version"], r["limit"], r["weights"])
            for r in mine} == {("-", "-", "-", "-", "0", "all", "-")}
    return {(r["dataset"], r["subsplit"], r["measure"]): float(r["value"]) for r in mine}


def test_cli_scores_equal_lpips_scoring_of_lpips_models(lpips_ssim, bapps, tmp_path):
    assert run_experiment(["--net", "l2", "ssim"], bapps, tmp_path) == 0
    assert run_experiment(["--net", "ssim", "l2", "--colorspace", "RGB"], bapps, tmp_path) == 0
    rows = read_results_csv(tmp_path)
    assert len(rows) == 4 * (6 * 2 + 2)
    assert {(r["dataset"], r["n"]) for r in rows} == {("2afc", "3"), ("jnd", "6")}
    for net in PIXEL_METRICS:
        for colorspace in COLORSPACES:
            expected = expected_scores(bapps, lambda x: [x], lambda f0, f1: {
                (): lpips_values(net, colorspace, f0[0], f1[0])})
            ours = pixel_scores(rows, net, colorspace.lower())
            assert ours.keys() == expected.keys()
            for key, value in expected.items():
                assert ours[key] == pytest.approx(value, abs=1e-9), (net, colorspace, key)


def test_pixel_rows_beside_a_network_come_first_and_are_not_recomputed(torch_home, bapps, tmp_path, monkeypatch,
                                                                       capsys):
    args = ["--subsplits", "traditional", "--limit", "2"]
    assert run_experiment(["--net", "alex", "ssim", *args], bapps, tmp_path) == 0
    table = (tmp_path / "results.md").read_text()
    nets = [line.split("|")[1].strip() for line in table.splitlines()[2:] if line.startswith("|")]
    assert nets == ["ssim", "alex"]
    assert "| ssim | - | - | - | - | lab | 2 | synthetic | - | 1 |" in table
    before = (tmp_path / "results.csv").read_bytes()

    monkeypatch.setattr(PixelMetric, "features", lambda *_: pytest.fail("a finished pixel metric ran again"))
    assert run_experiment(["--net", "ssim", *args], bapps, tmp_path) == 0
    assert "ssim: every requested result is already in" in capsys.readouterr().out
    assert (tmp_path / "results.csv").read_bytes() == before


def test_pixel_metrics_refuse_training(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--net", "alex", "l2", "ssim", "--variant", "lin", "--train"])
    assert exit_info.value.code == 2
    assert "pixel metrics (l2, ssim) have nothing to train: evaluate them in a run without --train" in \
        capsys.readouterr().err
