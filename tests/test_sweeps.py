"""analysis.py --sweep: the graded flaw sweeps against the metric on transformations written out in the test."""
import math
import statistics
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import analysis
import sweeps
from helpers import (REFS, ForwardCounter, assert_close, cli_error, load_white, make_folder, read_rows, run_cli,
                     save_array, usage_error, write_manifest)
from metric import ALL_CONFIGS, DistanceMetric

MAGNITUDES = {"translate": (0, 2, 5), "rotate": (0, 10, 90), "invert": (0, 0.5, 1), "stain": (0, 4, 8)}
ATOL = 1e-6  # float32 sums of the metric, computed in other batches


@pytest.fixture(scope="module")
def swept(weights_home, tmp_path_factory):
    """One run of every sweep over the synthetic folder with AlexNet: (folder, out, {transform: rows}, images)."""
    folder = make_folder(tmp_path_factory.mktemp("images"))
    out = tmp_path_factory.mktemp("out")
    flags = [f"{name}={','.join(map(str, m))}" for name, m in MAGNITUDES.items()]
    counter = ForwardCounter()
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("TORCH_HOME", weights_home["home"])
            code, stdout, _ = run_cli(analysis.main, ["--image-dir", folder, "--out", out, "--net", "alex",
                                                      "--sweep", *flags])
    finally:
        counter.remove()
    assert code == 0
    rows = {name: read_rows(out / f"sweep_{name}.csv") for name in MAGNITUDES}
    return folder, out, rows, stdout, counter.images


def by_key(rows):
    return {(r["image"], r["method"], r["channel_norm"] == "true", float(r["magnitude"])): r for r in rows}


def test_ratio_at_magnitude_zero_is_zero_and_every_row_is_there(swept):
    _, _, rows, _, _ = swept
    images = {"a/tex.png", "b/pic.png"}  # the originals of the manifest
    for name, magnitudes in MAGNITUDES.items():
        found = by_key(rows[name])
        assert set(found) == {(i, m, n, float(k)) for i in images for m, n in ALL_CONFIGS for k in magnitudes}
        for (image, *_, magnitude), row in found.items():
            assert row["transform"] == name and row["net"] == "alex" and row["weights"].startswith("alexnet-owt")
            if magnitude == 0:
                assert float(row["distance"]) == 0.0 and float(row["ratio"]) == 0.0
            else:
                assert float(row["ratio"]) > 0


def written_out(name, x, magnitude, largest):
    """The transformations as the README defines them, in plain torch / numpy: (original, transformed)."""
    if name == "translate":
        width = x.shape[-1]
        return x[..., : width - largest], x[..., magnitude: width - largest + magnitude]
    if name == "rotate":  # 90 degrees: numpy's rot90, then the central square of side floor(48 / sqrt 2) = 33
        turned = torch.from_numpy(np.ascontiguousarray(np.rot90(x.numpy(), 1, axes=(-2, -1))))
        return x[..., 7:40, 7:40], turned[..., 7:40, 7:40]
    if name == "invert":
        return x, (1 - magnitude) * x + magnitude * (1 - x)
    stained = x.clone()
    stained[:, :, 20:28, 20:28] = torch.tensor([1.0, 0.0, 0.0])[:, None, None]  # 8 px at the centre of 48
    return x, stained


def test_distances_and_ratios_equal_the_metric_on_transformations_written_out(swept, torch_home):
    folder, _, rows, _, _ = swept
    metric, x = DistanceMetric("alex"), load_white(folder / "a/tex.png")
    for name, magnitude in (("translate", 2), ("translate", 5), ("rotate", 90), ("invert", 1), ("invert", 0.5),
                            ("stain", 8)):
        original, transformed = written_out(name, x, magnitude, max(MAGNITUDES[name]))
        refs = [written_out(name, load_white(folder / ref), 0, max(MAGNITUDES[name]))[0] for ref in REFS]
        with torch.no_grad():
            f0, f1, *f_refs = (metric.features(image) for image in (original, transformed, *refs))
            for method, norm in (("spatial", True), ("sort", False), ("mean", True)):
                distance = metric.distance(f0, f1, method, norm).item()
                to_refs = [metric.distance(f0, f, method, norm).item() for f in f_refs]
                row = by_key(rows[name])["a/tex.png", method, norm, magnitude]
                assert_close(float(row["distance"]), distance, rtol=1e-4, atol=ATOL)
                assert_close(float(row["median_ref_distance"]), statistics.median(to_refs), rtol=1e-4)
                assert_close(float(row["ratio"]), distance / statistics.median(to_refs), rtol=1e-4)
                assert row["closer_than_refs"] == str(float(row["distance"]) < min(to_refs)).lower()


def test_tolerance_is_the_largest_magnitude_still_closer_than_every_reference(swept):
    _, _, rows, stdout, _ = swept
    for name, magnitudes in MAGNITUDES.items():
        found = by_key(rows[name])
        for (image, method, norm, _), row in found.items():
            closer = [found[image, method, norm, float(m)]["closer_than_refs"] == "true" for m in magnitudes]
            still = [m for i, m in enumerate(magnitudes) if all(closer[:i + 1])]
            assert row["tolerance"] == ("" if not still else str(still[-1])), (name, image, method, norm)
    assert "| alex | spatial | true |" in stdout and "translate tolerance" in stdout


def test_each_image_of_a_sweep_goes_through_the_network_once(swept):
    *_, images = swept
    originals, refs = 2, len(REFS)
    # per sweep: each original and its transformed images (the identical magnitude 0 skipped), the references
    expected = sum(originals * len(m) + refs for m in MAGNITUDES.values())
    assert images["alex", "eval"] == expected


def test_mean_under_translation_of_a_periodic_image_is_flat(torch_home, tmp_path):
    period = 16  # well above AlexNet's first stride (4), which would alias a finer pattern
    x, y = np.meshgrid(np.arange(80) % period, np.arange(64))  # the remainder: exactly periodic after rounding
    waves = np.stack([np.sin(2 * math.pi * x / period), np.cos(2 * math.pi * (x + y) / period),
                      np.sin(2 * math.pi * (2 * x - y) / period)], axis=-1)
    save_array(tmp_path, "periodic.png", np.round(127.5 + 100 * waves).astype(np.uint8))
    assert np.array_equal(np.asarray(Image.open(tmp_path / "periodic.png"))[:, :period],
                          np.asarray(Image.open(tmp_path / "periodic.png"))[:, period: 2 * period])
    for name, value in (("black", 0), ("white", 255)):
        save_array(tmp_path, f"ref/{name}.png", np.full((64, 80, 3), value, np.uint8))
    save_array(tmp_path, "ref/noise.png", np.random.default_rng(0).integers(0, 256, (64, 80, 3), dtype=np.uint8))
    write_manifest(tmp_path, [("translate", "periodic.png", "periodic.png", "closer_than_refs")])
    shifts = list(range(period + 1))
    code, _, _ = run_cli(analysis.main, ["--image-dir", tmp_path, "--out", tmp_path / "out", "--net", "alex",
                                         "--method", "spatial", "mean", "--sweep",
                                         "translate=" + ",".join(map(str, shifts))])
    assert code == 0
    found = by_key(read_rows(tmp_path / "out" / "sweep_translate.csv"))
    for norm in (True, False):
        spatial, mean = ([float(found["periodic.png", method, norm, s]["ratio"]) for s in shifts]
                         for method in ("spatial", "mean"))
        assert spatial[-1] == mean[-1] == 0.0  # one period on: the same image
        assert max(mean) < 0.1 and max(mean) < 0.15 * max(spatial), (mean, spatial)


def test_the_pictures_open_and_are_labelled(swept):
    _, out, rows, _, _ = swept
    for name in MAGNITUDES:
        with Image.open(out / f"sweep_{name}.png") as picture:
            assert picture.format == "PNG" and picture.size[0] > 400 and picture.size[1] > 300
    typed = [dict(r, magnitude=float(r["magnitude"]), ratio=float(r["ratio"]), channel_norm=r["channel_norm"] == "true",
                  tolerance=None if r["tolerance"] == "" else float(r["tolerance"])) for r in rows["rotate"]]
    figure = analysis.sweep_figure(sweeps.TRANSFORMS["rotate"], typed, REFS)
    (ax,) = figure.axes
    assert ax.get_xlabel() == "rotation (degrees counter-clockwise)"
    assert ax.get_ylabel() == "d(original, transformed) / median d(original, reference)"
    assert "rotate sweep: mean over 2 images, 3 references" in figure.get_suptitle()
    labels = [text.get_text() for text in ax.get_legend().get_texts()]
    assert len(labels) == len(ALL_CONFIGS) + 1 and "ratio 1: as far as an unrelated image" in labels
    assert any(label.startswith("spatial+sort, no norm (tolerance ") for label in labels)
    assert [line.get_ydata()[0] for line in ax.get_lines() if line.get_label().startswith("ratio 1")] == [1]


@pytest.mark.parametrize("flag, message", [("turn", "unknown transformation 'turn'"),
                                           ("translate=1,x", "magnitudes are numbers separated by commas"),
                                           ("stain=2.5", "whole numbers >= 0"),
                                           ("invert=0.5,2", "inversion strengths go from 0 to 1")])
def test_bad_sweeps_are_usage_errors(flag, message):
    assert message in usage_error(analysis.main, ["--sweep", flag])


def test_a_shift_wider_than_the_image_is_a_one_line_error(torch_home, tmp_path):
    folder = make_folder(tmp_path / "images")
    cli_error(analysis.main, ["--image-dir", folder, "--out", tmp_path / "out", "--net", "alex",
                              "--sweep", "translate=0,48"], r"shifts by up to 48 pixels, but a/tex.png is 48 pixels")
    assert not Path(tmp_path / "out" / "sweep_translate.csv").exists()
