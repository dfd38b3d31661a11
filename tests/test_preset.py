"""experiment.py, analysis.py and feature_map.py on the registry: --layers, --per-layer, --preset paper.

Per-point scores are checked against plain torchvision activations scored by the lpips
package's formulas (test_evaluation's reference); the preset runs end to end on random
backbones (--random-init) over a generated BAPPS tree.
"""
import os

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

import analysis
import feature_map
from experiment import main
from helpers import (IMAGES_PER_NET, assert_scores_equal, expected_scores, make_folder, read_results_csv, read_rows,
                     reference_distance, run_cli, run_experiment, table_cells, usage_error, values)
from loss_networks import PRESET, checkpoint_path
from metric import ALL_CONFIGS, UNTRAINED, DistanceMetric

IMAGENET = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])


@pytest.fixture
def bapps(bapps_tree):
    """2 triplets per 2AFC subsplit, 4 pairs per JND subsplit, 64x64."""
    return bapps_tree(n_2afc=2, n_jnd=4)


def plain_features(model, points, x):
    """Activations after `model.features[p]` for each point, in float64, normalised here."""
    mean, std = (torch.tensor(v, dtype=torch.float64).view(1, 3, 1, 1) for v in IMAGENET)
    h, out = (x.double() - mean) / std, []
    with torch.no_grad():
        for i, module in enumerate(model.double().features[: max(points) + 1]):
            h = module(h)
            if i in points:
                out.append(h.clone())
    return out


def test_preset_paper_runs_whole_and_point_by_point(bapps, tmp_path):
    sets = ["--random-init", "--subsplits", "traditional", "--limit", "2", "--method", "spatial"]
    assert run_experiment(["--preset", "paper", *sets], bapps, tmp_path) == 0
    # point by point on two of the grid's networks (building all 14 again would double the test's time)
    assert run_experiment(["--preset", "paper", "--net", "inception_v3", "alex", "--per-layer", *sets], bapps,
                          tmp_path) == 0
    rows = read_results_csv(tmp_path)
    expected = {(net, "-".join(map(str, points))) for net, points in PRESET.items()}
    expected |= {(net, str(point)) for net in ("alex", "inception_v3") for point in PRESET[net]}
    assert len(PRESET) == 14 and len(expected) == 14 + 2 * 4
    assert {(r["net"], r["layers"]) for r in rows} == expected
    assert {(r["dataset"], r["subsplit"], r["n"], r["weights"]) for r in rows} == {
        ("2afc", "traditional", "2", "random:seed0"), ("jnd", "traditional", "2", "random:seed0")}
    assert len(rows) == len(expected) * 3  # 2AFC score and accuracy, JND mAP
    cells = table_cells((tmp_path / "results.md").read_text())
    assert [(c[0], c[1]) for c in cells[:5]] == [("alex", "1"), ("alex", "1-4-7-11"), ("alex", "4"), ("alex", "7"),
                                                 ("alex", "11")]
    assert {(c[0], c[1]) for c in cells} == expected


def test_per_layer_scores_each_point_from_one_pass(torch_home, bapps, tmp_path, forwards):
    points = [1, 4, 11]
    args = ["--net", "alex", "--layers", *map(str, points), "--per-layer", "--method", "all", "--channel-norm", "both"]
    assert run_experiment([*args, "--limit", "2"], bapps, tmp_path / "limited") == 0
    assert forwards.images["alex", "eval"] == IMAGES_PER_NET  # every point from one pass per image
    assert run_experiment(args, bapps, tmp_path) == 0
    rows = read_results_csv(tmp_path)
    model = torchvision.models.alexnet(weights=None)
    model.load_state_dict(torch.load(torch_home["alex"], weights_only=True))
    for i, point in enumerate(points):
        def compare(f0, f1, i=i):
            return {config: reference_distance(f0[i:i + 1], f1[i:i + 1], *config) for config in ALL_CONFIGS}

        expected = expected_scores(bapps, lambda x: plain_features(model, points, x), compare)
        assert_scores_equal(values(rows, layers=str(point)), expected)


def test_per_layer_lin_takes_weights_for_one_point(torch_home, bapps, tmp_path, capsys):
    path = tmp_path / "lin_point4.pth"
    torch.manual_seed(0)
    weights = DistanceMetric("alex", lin=True, lpips_weights=UNTRAINED, layers=[4]).lpips_state_dict()
    torch.save({key: value.abs() for key, value in weights.items()}, path)
    args = ["--net", "alex", "--layers", "4", "--variant", "lin", "--lpips-weights", str(path), "--splits", "jnd"]
    assert run_experiment([*args, "--per-layer"], bapps, tmp_path / "per") == 0
    assert run_experiment(args, bapps, tmp_path / "whole") == 0
    per, whole = read_results_csv(tmp_path / "per"), read_results_csv(tmp_path / "whole")
    assert {r["layers"] for r in per} == {"4"} and values(per) == values(whole)
    with pytest.raises(SystemExit):
        main(["--net", "alex", "--per-layer", "--variant", "lin", "--lpips-weights", "official"])
    assert "holds linear weights for 5 points" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["--net", "resnet5"], "did you mean resnet50"),
    (["--net", "resnet18", "--layers", "2", "8"], "it has 8 points, 0..7"),
    (["--preset", "paper", "--layers", "1"], "drop --layers"),
    (["--preset", "paper", "--net", "resnet34"], "--preset paper has no resnet34"),
    (["--preset", "paper", "--net", "l2"], "--preset does not apply to the pixel metrics (l2)"),
    (["--net", "resnet50", "--variant", "lin", "--lpips-weights", "official"], "not for resnet50"),
    (["--net", "alex", "--layers", "1", "4", "--variant", "lin", "--lpips-weights", "official"], "at 1-4"),
    (["--net", "vgg16_bn", "--variant", "lin", "--lpips-weights", "official-v0.0"], "official-v0.0 holds LPIPS's"),
    (["--net", "vgg", "--layers", "3", "8", "--variant", "lin", "--lpips-weights", "official-v0.0"], "at 3-8"),
    (["--random-init", "--variant", "lin", "--train"], "--variant scratch"),
])
def test_network_flags_that_cannot_run_are_usage_errors(args, message):
    assert message in usage_error(main, args)


def test_help_documents_registry_points_and_preset():
    code, shown, _ = run_cli(main, ["--help"])
    assert code == 0
    text = " ".join(shown.split())
    for words in ("--layers", "--per-layer", "--preset", "--random-init", "efficientnet_b0..b7", "inception_v3",
                  "last point of each quarter", "ceil(k * P / 4) - 1", "alex 1-4-7-11", "--no_multilayer"):
        assert words in text


@pytest.fixture(scope="module")
def squeezenet1_0(tmp_path_factory):
    """A folder with random squeezenet1_0 weights under torchvision's file name: (folder, model)."""
    folder = tmp_path_factory.mktemp("weights")
    torch.manual_seed(5)
    model = torchvision.models.squeezenet1_0(weights=None)
    torch.save(model.state_dict(), folder / os.path.basename(checkpoint_path("squeezenet1_0")))
    return folder, model


def load_rgb(path):
    rgb = np.asarray(Image.open(path).convert("RGBA"), dtype=np.float32) / 255
    rgb = rgb[..., :3] * rgb[..., 3:] + (1 - rgb[..., 3:])
    return torch.from_numpy(rgb).permute(2, 0, 1)[None]


def test_analysis_takes_a_registry_net_and_points(squeezenet1_0, tmp_path):
    weights, model = squeezenet1_0
    folder = make_folder(tmp_path / "images")
    analysis.main(["--image-dir", str(folder), "--out", str(tmp_path / "out"), "--net", "squeezenet1_0",
                   "--layers", "6", "3", "--method", "sort", "--channel-norm", "on", "--weights-dir", str(weights),
                   "--device", "cpu"])
    rows = read_rows(tmp_path / "out" / "results.csv")
    assert {(r["net"], r["layers"], r["method"]) for r in rows} == {("squeezenet1_0", "3-6", "sort")}
    row = rows[1]
    f0, f1 = (plain_features(model, [3, 6], load_rgb(folder / row[key])) for key in ("image", "variant"))
    expected = reference_distance(f0, f1, "sort", True).item()
    assert abs(float(row["distance"]) - expected) <= 1e-5 * expected


def test_feature_map_takes_a_registry_net_and_points(squeezenet1_0, tmp_path, capsys):
    weights, _ = squeezenet1_0
    folder = make_folder(tmp_path / "images")
    out = tmp_path / "maps"
    feature_map.main(["--path", str(folder / "a/tex.png"), "--network", "squeezenet1_0", "--layers", "3", "12",
                      "--weights-dir", str(weights), "--out", str(out), "--max-channels", "4"])
    assert capsys.readouterr().out.split() == [str(out / f"tex_squeezenet1_0_point{k}.png") for k in (3, 12)]


def test_too_small_images_are_an_error_naming_net_and_minimum(torch_home, tmp_path):
    folder = make_folder(tmp_path / "images")
    code, _, message = run_cli(feature_map.main, ["--path", folder / "a/tex.png", "--network", "alex", "--size", "8",
                                                  "--out", tmp_path / "maps"])
    assert code == 1
    assert "feature_map.py: error: images of 8x8 pixels are too small for alex" in message
    assert "at least" in message and not (tmp_path / "maps").exists()


def test_per_layer_training_trains_each_point_on_its_own(torch_home, bapps_tree, tmp_path):
    bapps = bapps_tree(n_2afc=4, n_jnd=4, parts=("train", "jnd"))
    assert main(["--net", "alex", "--layers", "4", "11", "--per-layer", "--train", "--variant", "lin",
                 "--data-root", bapps, "--no-download", "--out", str(tmp_path / "out"), "--num-workers", "0",
                 "--batch-size", "4", "--epochs", "1", "--logger", "csv", "--train-subsplits", "cnn",
                 "--splits", "jnd"]) == 0
    folders = sorted(p.parent.parent.name for p in (tmp_path / "out").glob("*/version_0/lin.pth"))
    assert folders == ["alex_11_lin_spatial_cn_imagenet", "alex_4_lin_spatial_cn_imagenet"]
    for point in (4, 11):
        path = tmp_path / "out" / f"alex_{point}_lin_spatial_cn_imagenet" / "version_0" / "lin.pth"
        assert list(torch.load(path, weights_only=True)) == ["lin0.model.1.weight"]
    assert {(r["layers"], r["variant"]) for r in read_results_csv(tmp_path / "out")} == {("4", "lin"), ("11", "lin")}
