"""feature_map.py: image choice, the PNGs it writes, channel grids (its distance map is
`DistanceMetric.distance_map`, tested in test_metric.py)."""
import builtins
import os
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import feature_map
from helpers import cli_error, run_cli, usage_error
from metric import DistanceMetric

SIZE = 48


def save_texture(path, seed, size=SIZE):
    coarse = np.random.default_rng(seed).integers(0, 256, (6, 6, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(coarse).resize((size, size), Image.BICUBIC).save(path)
    return path


@pytest.fixture
def folder(tmp_path):
    for seed, name in enumerate(("x/3ring_color.png", "x/3ring_gray.png", "y/dots.png")):
        save_texture(tmp_path / "images" / name, seed)
    return tmp_path / "images"


def images(seed, n=1, size=SIZE):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_help_lists_the_flags():
    code, shown, _ = run_cli(feature_map.main, ["--help"])
    assert code == 0
    flags = ("--image", "--path", "--network", "--out", "--compare", "--method", "--max-channels", "--show",
             "--shared-scale")
    for flag in flags:
        assert flag in shown


def test_substrings_choose_one_image_or_list_the_candidates(folder):
    assert feature_map.find_image(str(folder), ["3ring", "COLOR"]) == os.path.join(folder, "x/3ring_color.png")
    with pytest.raises(ValueError, match=r"matches 2 of the 3(.|\n)*x/3ring_color.png\n  x/3ring_gray.png$"):
        feature_map.find_image(str(folder), ["3ring"])
    with pytest.raises(ValueError, match=r"matches 0 (.|\n)*Images:(.|\n)*y/dots.png"):
        feature_map.find_image(str(folder), ["square"])


def test_run_writes_one_grid_per_layer_and_prints_the_paths(torch_home, folder, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(builtins, "input", lambda *a: pytest.fail("feature_map waited on input()"))
    shown = []
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr(feature_map.shutil, "which", lambda name: f"/usr/bin/{name}" if name == "eog" else None)
    monkeypatch.setattr(feature_map.subprocess, "Popen", lambda command, **kwargs: shown.append(command))
    out = tmp_path / "maps"
    feature_map.main(["--image-dir", str(folder), "--image", "3ring", "color", "--network", "alexnet",
                      "--out", str(out), "--max-channels", "8", "--show"])
    printed = capsys.readouterr().out.split()
    assert printed == [str(out / "x" / f"3ring_color_alex_point{k}.png") for k in (1, 4, 7, 9, 11)]
    assert os.listdir(out) == ["x"] and sorted(os.listdir(out / "x")) == sorted(os.path.basename(p) for p in printed)
    for path in printed:
        with Image.open(path) as picture:
            assert picture.format == "PNG"
    assert shown == [["eog", path] for path in printed]


def test_show_without_a_viewer_says_so_in_one_line_and_where_the_pictures_are(torch_home, folder, tmp_path, capsys,
                                                                              monkeypatch):
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no xdg-open, eog, feh, display nor xv
    out = tmp_path / "maps"
    code = feature_map.main(["--image-dir", str(folder), "--image", "3ring", "color", "--network", "alexnet",
                             "--out", str(out), "--max-channels", "8", "--layers", "1", "--show"])
    captured = capsys.readouterr()
    assert code == 0 and captured.out.split() == [str(out / "x" / "3ring_color_alex_point1.png")]
    assert captured.err.strip() == (f"feature_map.py: --show found no image viewer (looked for xdg-open, eog, feh, "
                                    f"display, xv on PATH); the pictures are in {out / 'x'}")


def test_compare_writes_the_distance_map(torch_home, folder, tmp_path, capsys, monkeypatch):
    drawn, real = [], DistanceMetric.distance_map

    def spy(self, *args):
        drawn.append(args[2:])
        return real(self, *args)

    monkeypatch.setattr(DistanceMetric, "distance_map", spy)  # the metric's own map, not a copy of its own
    out = tmp_path / "maps"
    feature_map.main(["--path", str(folder / "y/dots.png"), "--network", "squeezenet", "--out", str(out),
                      "--compare", str(folder / "x/3ring_gray.png"), "--method", "spatial+sort",
                      "--channel-norm", "off"])
    printed = capsys.readouterr().out.split()
    assert len(printed) == 7 + 1 and printed[-1] == str(out / "dots_vs_3ring_gray_squeeze_spatial+sort_raw.png")
    assert drawn == [("spatial+sort", False)]
    with Image.open(printed[-1]) as picture:
        assert picture.format == "PNG"


def test_compare_needs_equal_sizes(torch_home, folder, tmp_path):
    other = save_texture(tmp_path / "small.png", 9, size=40)
    args = ["--path", str(folder / "y/dots.png"), "--out", str(tmp_path / "maps"), "--compare", str(other)]
    cli_error(feature_map.main, args, r"\(40, 40\).*--size")
    assert not (tmp_path / "maps").exists()
    feature_map.main(args + ["--size", "40", "--max-channels", "1"])


def test_equal_file_names_in_different_folders_do_not_overwrite_each_other(torch_home, tmp_path, capsys):
    for seed, sub in enumerate(("rotate", "translate")):
        save_texture(tmp_path / "images" / sub / "clouds.png", seed)
    out = tmp_path / "maps"
    for sub in ("rotate", "translate"):
        feature_map.main(["--image-dir", str(tmp_path / "images"), "--image", f"{sub}/clouds", "--out", str(out),
                          "--max-channels", "2", "--compare", str(tmp_path / "images" / sub / "clouds.png")])
    printed = capsys.readouterr().out.split()
    assert len(set(printed)) == len(printed) == 2 * 6
    assert str(out / "translate" / "clouds_vs_translate-clouds_alex_spatial_norm.png") in printed
    first = {p: open(p, "rb").read() for p in printed[:5]}
    second = {p: open(p, "rb").read() for p in printed[6:11]}
    assert all(data != second[p.replace("rotate", "translate")] for p, data in first.items())


def test_second_image_is_checked_before_anything_is_written(torch_home, folder, tmp_path):
    out = tmp_path / "maps"
    cli_error(feature_map.main, ["--path", folder / "y/dots.png", "--out", out, "--compare", tmp_path / "missing.png"],
              r"^feature_map.py: error: cannot read image .*missing.png")
    assert not out.exists()


@pytest.mark.parametrize("flags, message", [
    (["--size", "0"], "argument --size: must be at least 1, got 0"),
    (["--size", "-2"], "argument --size: must be at least 1, got -2"),
    (["--max-channels", "0"], "argument --max-channels: must be at least 1, got 0"),
    (["--device", "mps"], "argument --device: mps: MPS (Apple GPU) is not available here"),
])
def test_bad_size_or_device_is_a_usage_error(flags, message):
    assert message in usage_error(feature_map.main, ["--path", "any.png", *flags])


def test_unwritable_out_and_damaged_weights_are_one_line_errors(torch_home, folder, tmp_path, monkeypatch):
    monkeypatch.setattr(DistanceMetric, "features", lambda *a: pytest.fail("computed before checking --out"))
    (tmp_path / "a_file").write_text("")
    args = ["--path", str(folder / "y/dots.png")]
    cli_error(feature_map.main, args + ["--out", tmp_path / "a_file" / "maps"],
              r"^feature_map.py: error: --out .*a_file is a file, not a folder")
    weights = tmp_path / "weights" / "alexnet-owt-7be5be79.pth"
    weights.parent.mkdir()
    weights.write_bytes(open(torch_home["alex"], "rb").read()[:2000])
    cli_error(feature_map.main, args + ["--out", tmp_path / "maps", "--weights-dir", weights.parent],
              rf"^feature_map.py: error: cannot read weights file {weights} .*again")
    # FeatureExtractor's refusal of an image smaller than the network takes is a ValueError
    monkeypatch.setattr(DistanceMetric, "features", lambda *a: (_ for _ in ()).throw(
        ValueError("images of 8x8 pixels are smaller than alex takes: at least 31x31")))
    cli_error(feature_map.main, args + ["--out", tmp_path / "maps", "--size", "8"],
              r"^feature_map.py: error: images of 8x8 pixels .* at least 31x31$")
    assert not (tmp_path / "maps").exists()


def test_channel_mosaic_stretches_each_channel_and_caps_the_count():
    f = torch.arange(5 * 2 * 3, dtype=torch.float32).view(5, 2, 3) ** 2
    f[1] = 7.0
    grid = feature_map.channel_mosaic(f, 3)
    assert grid.shape == (2 * 3 - 1, 2 * 4 - 1)
    tiles = [grid[:2, :3], grid[:2, 4:], grid[3:, :3], grid[3:, 4:]]
    expected = (f[0] - f[0].min()) / (f[0].max() - f[0].min())
    np.testing.assert_allclose(tiles[0], expected.numpy(), rtol=1e-6)
    assert (tiles[1] == 0).all() and np.isnan(tiles[3]).all()
    assert tiles[2].min() == 0 and tiles[2].max() == 1
    assert np.isnan(grid[2]).all() and np.isnan(grid[:, 3]).all()


@pytest.fixture
def figures(monkeypatch):
    """The matplotlib figures feature_map.py saves, in order."""
    saved, real = [], feature_map.figure_png
    monkeypatch.setattr(feature_map, "figure_png", lambda fig, **k: saved.append(fig) or real(fig, **k))
    return saved


def test_files_are_named_by_extraction_point(torch_home, folder, tmp_path, capsys, figures):
    out = tmp_path / "maps"
    feature_map.main(["--path", str(folder / "y/dots.png"), "--out", str(out), "--layers", "4", "1",
                      "--max-channels", "2"])
    assert capsys.readouterr().out.split() == [str(out / f"dots_alex_point{k}.png") for k in (1, 4)]
    assert [fig._suptitle.get_text().split(",")[0] for fig in figures] == [
        "dots: alex point 1 (features.1)", "dots: alex point 4 (features.4)"]


@pytest.mark.parametrize("shared", (False, True))
def test_grids_are_apart_beside_the_input_and_optionally_on_one_scale(torch_home, folder, tmp_path, figures,
                                                                      shared):
    feature_map.main(["--path", str(folder / "y/dots.png"), "--out", str(tmp_path), "--layers", "11",
                      "--max-channels", "3", *(["--shared-scale"] if shared else [])])
    (fig,) = figures
    thumb, raw, normalised = fig.axes[:3]
    x = feature_map.load_image(folder / "y/dots.png")
    np.testing.assert_allclose(thumb.get_images()[0].get_array(), x.permute(1, 2, 0).numpy(), atol=1e-6)
    fig.canvas.draw()
    gap = normalised.get_position().x0 - raw.get_position().x1
    assert raw.axison and normalised.axison  # each grid framed: white tile gaps do not run into each other
    assert gap * fig.get_figwidth() * fig.dpi > 10  # pixels of white between the two grids, even for 3 tiny maps
    with torch.no_grad():
        full = DistanceMetric("alex", layers=[11]).features(x[None])[0][0]
    shown = [full[:3], (full / (full.norm(dim=0, keepdim=True) + 1e-10))[:3]]  # norm over all channels, 3 shown
    grids = [ax.get_images()[0] for ax in (raw, normalised)]
    if shared:
        low, high = min(v.min().item() for v in shown), max(v.max().item() for v in shown)
        assert grids[0].get_clim() == grids[1].get_clim() == pytest.approx((low, high), rel=1e-5)
        np.testing.assert_allclose(np.nanmax(grids[1].get_array()), shown[1].max().item(), rtol=1e-5)
    else:
        assert grids[0].get_clim() == grids[1].get_clim() == (0, 1)
        assert np.nanmax(grids[1].get_array()) == pytest.approx(1)


@pytest.mark.parametrize("method, says, not_says", [("spatial", "per pixel", "rank"),
                                                    ("sort", "per rank, not per pixel", "distance per pixel"),
                                                    ("mean", "channel means", "per pixel")])
def test_the_distance_map_is_titled_for_what_its_positions_are(torch_home, folder, tmp_path, figures, method, says,
                                                               not_says):
    feature_map.main(["--path", str(folder / "y/dots.png"), "--out", str(tmp_path), "--layers", "1",
                      "--max-channels", "1", "--compare", str(folder / "x/3ring_gray.png"), "--method", method])
    title = figures[-1].axes[2].get_title()
    assert says in title and not_says not in title
    assert len(figures[-1].axes[2].get_images()) == (2 if method == "spatial" else 1)  # over the image, or alone
