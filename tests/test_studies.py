"""The robustness studies of experiment.py: the n-pixel shift study against plain-torch crops and counting, the
bootstrap intervals, the paired comparison and the saved distances."""
import contextlib
import io
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import evaluation
from bootstrap import RESAMPLES, map_interval, mean_intervals, paired_difference
from dataset_collector import dataset_collector
from experiment import main as experiment_main
from helpers import (ForwardCounter, lpips_2afc, read_results_csv, read_set, reference_distance, reference_features,
                     run_experiment, table_cells, usage_error)
from metric import DistanceMetric, score_jnd

SUBSPLITS = ("traditional", "cnn", "superres", "deblur", "color", "frameinterp")
METHODS = ("spatial", "sort")
SHIFTS = (1, 2, 3)
TRIPLETS = 4  # per subsplit, in the `bapps` tree


@pytest.fixture(scope="module")
def study(weights_home, bapps_tree, tmp_path_factory):
    """One run of the shift study with saved distances and a comparison: (tree, out, rows, stdout, images seen)."""
    tree, out, stdout = bapps_tree(), tmp_path_factory.mktemp("study"), io.StringIO()
    counter = ForwardCounter()
    try:
        with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(stdout):
            patch.setenv("TORCH_HOME", weights_home["home"])
            code = run_experiment(["--net", "alex", "--method", *METHODS, "--splits", "val", "--shift",
                                   *map(str, SHIFTS), "--compare", "spatial", "sort"], tree, out)
    finally:
        counter.remove()
    assert code == 0
    return tree, out, read_results_csv(out), stdout.getvalue(), counter.images


def crops(images, n, width=64):
    """ST-LPIPS's crops, written out: p0, p1 columns [n, W - 3 + n), the reference [0, W - 3), every row."""
    return images["ref"][:, :, :, 0:width - 3], images["p0"][:, :, :, n:width - 3 + n], \
        images["p1"][:, :, :, n:width - 3 + n]


def reference_shift_study(tree, path):
    """{(method, subsplit, n): (d0, d1, judge)} in float64 plain torch, for n = 0 and SHIFTS, the features of every
    crop from one call."""
    batches, judges = [], {}
    for subsplit in SUBSPLITS:
        images, judges[subsplit] = read_set(tree, "2afc", subsplit, ("ref", "p0", "p1"), "judge")
        batches += [crop for n in (0, *SHIFTS) for crop in crops(images, n)]
    features = reference_features("alex", path, torch.cat(batches))
    found, start = {}, 0
    for subsplit in SUBSPLITS:
        for n in (0, *SHIFTS):
            ref, p0, p1 = ([f[start + k * TRIPLETS: start + (k + 1) * TRIPLETS] for f in features] for k in range(3))
            start += 3 * TRIPLETS
            for method in METHODS:
                found[method, subsplit, n] = (reference_distance(ref, p0, method, True),
                                              reference_distance(ref, p1, method, True), judges[subsplit])
    return found


def row_values(rows, dataset, measure):
    return {(r["method"], r["subsplit"]): float(r["value"]) for r in rows
            if r["dataset"] == dataset and r["measure"] == measure}


def test_shift_study_equals_plain_torch_crops_and_flip_counts(study, weights_home):
    tree, out, rows, _, _ = study
    reference = reference_shift_study(tree, weights_home["alex"])
    cells = {tuple(c[:4]): c for c in table_cells((out / "results.md").read_text())}
    header = [h.strip() for h in (out / "results.md").read_text().splitlines()[0].strip("|").split("|")]
    for n in (0, *SHIFTS):
        scores, flips = row_values(rows, f"shift{n}", "score"), row_values(rows, f"shift{n}", "rank_flips")
        assert len(scores) == len(METHODS) * len(SUBSPLITS) and len(flips) == (len(scores) if n else 0)
        for method in METHODS:
            expected_scores, expected_flips = [], []
            for subsplit in SUBSPLITS:
                d0, d1, judge = reference[method, subsplit, n]
                expected_scores.append(lpips_2afc(d0, d1, judge))
                assert scores[method, subsplit] == pytest.approx(expected_scores[-1], abs=1e-9), (n, method, subsplit)
                if n:
                    base0, base1, _ = reference[method, subsplit, 0]
                    count = int(((d0 < d1) != (base0 < base1)).sum())
                    expected_flips.append(count / TRIPLETS)
                    assert flips[method, subsplit] == count / TRIPLETS, (n, method, subsplit)
            cell = cells["alex", "1-4-7-9-11", "baseline", method]
            shown = cell[header.index(f"shift{n} 2AFC")].split(" ± ")[0]
            assert shown == f"{100 * np.mean(expected_scores):.2f}"
            if n:
                shown = cell[header.index(f"shift{n} r_rf")].split(" ± ")[0]
                assert shown == f"{100 * np.mean(expected_flips):.2f}"


def test_each_crop_goes_through_the_backbone_once_and_plain_rows_stay_apart(study):
    _, _, rows, _, images = study
    plain, shifted = 3, 1 + 2 * (1 + len(SHIFTS))  # the reference crop serves every shift
    assert images["alex", "eval"] == len(SUBSPLITS) * TRIPLETS * (plain + shifted)
    datasets = {r["dataset"] for r in rows}
    assert datasets == {"2afc", "shift0", "shift1", "shift2", "shift3"}
    assert {r["measure"] for r in rows if r["dataset"] == "2afc"} == {"score", "accuracy"}
    assert {r["measure"] for r in rows if r["dataset"] == "shift0"} == {"score", "accuracy"}
    assert {r["measure"] for r in rows if r["dataset"] == "shift2"} == {"score", "accuracy", "rank_flips"}
    for row in rows:
        assert float(row["ci_low"]) <= float(row["value"]) <= float(row["ci_high"]), row


def test_shift_zero_equals_an_evaluation_of_the_cropped_tree(study, weights_home, tmp_path, monkeypatch):
    tree, _, rows, _, _ = study
    cropped = tmp_path / "cropped"
    for path in Path(tree, "val").rglob("*"):
        target = cropped / "val" / path.relative_to(Path(tree, "val"))
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        elif path.suffix == ".png":
            Image.open(path).crop((0, 0, 61, 64)).save(target)  # box: left, top, right, bottom
        else:
            target.write_bytes(path.read_bytes())
    monkeypatch.setenv("TORCH_HOME", weights_home["home"])
    metric = DistanceMetric("alex")
    metrics = {(method, True, (1, 4, 7, 9, 11)): metric for method in METHODS}
    shift0 = row_values(rows, "shift0", "score")
    for subsplit in SUBSPLITS:
        data = dataset_collector("BAPPS", "val", subsplit, root=str(cropped), download=False, load_size=None)
        assert data[0]["ref"].shape == (3, 64, 61)
        found = evaluation.evaluate(metrics, evaluation.make_loader(data, batch_size=5), "2afc")["2afc"]
        for (method, *_), measures in found.scores.items():
            assert measures["score"].value == pytest.approx(shift0[method, subsplit], abs=1e-12)


def constant_tree(root, triplets=3, subsplits=("traditional", "cnn")):
    """2AFC val subsplits whose every image is one random colour: shifting a crop changes nothing."""
    rng = np.random.default_rng(5)
    for subsplit in subsplits:
        for folder in ("ref", "p0", "p1", "judge"):
            (root / "val" / subsplit / folder).mkdir(parents=True)
        for i in range(triplets):
            for folder in ("ref", "p0", "p1"):
                colour = rng.integers(0, 256, 3).astype(np.uint8)
                Image.fromarray(np.tile(colour, (64, 64, 1))).save(root / "val" / subsplit / folder / f"{i}.png")
            np.save(root / "val" / subsplit / "judge" / f"{i}.npy", np.array([rng.random()], dtype=np.float32))
    return str(root)


@pytest.mark.parametrize("flags", [["--method", "spatial"],
                                   ["--net", "l2", "alex", "--variant", "lin", "--lpips-weights", "official",
                                    "--normalize", "lpips"]])
def test_spatial_on_constant_images_flips_nothing(torch_home, tmp_path, flags):
    tree = constant_tree(tmp_path / "tree")
    args = [*flags, "--splits", "val", "--subsplits", "traditional", "cnn", "--shift", "1", "2", "3"]
    assert run_experiment(args, tree, tmp_path / "out") == 0
    rows = read_results_csv(tmp_path / "out")
    configs = {(r["net"], r["layers"]) for r in rows}
    assert len(configs) == (1 if len(flags) == 2 else 2)  # alex; or l2 and official LPIPS
    flips = [float(r["value"]) for r in rows if r["measure"] == "rank_flips"]
    assert len(flips) == len(configs) * 2 * 3 and set(flips) == {0.0}
    scores = {n: {(r["net"], r["layers"], r["subsplit"]): r["value"] for r in rows
                  if r["dataset"] == f"shift{n}" and r["measure"] == "score"} for n in (0, 1, 2, 3)}
    assert scores[1] == scores[2] == scores[3] == scores[0]


# ---------------------------------------------------------------- bootstrap intervals


def test_intervals_are_deterministic_contain_the_estimate_and_match_the_normal_width():
    rng = np.random.default_rng(3)
    for n in (50, 400, 3000):
        values = (rng.random((n, 2)) < [0.3, 0.7]).astype(float)
        low, high = mean_intervals(values)
        again = mean_intervals(values)
        assert np.array_equal(low, again[0]) and np.array_equal(high, again[1])
        assert (low <= values.mean(0)).all() and (values.mean(0) <= high).all()
        p = values.mean(0)
        normal = 2 * 1.96 * np.sqrt(p * (1 - p) / n)  # the textbook interval of a proportion
        assert high - low == pytest.approx(normal, rel=0.15)


def test_intervals_shrink_as_one_over_the_root_of_the_examples():
    rng = np.random.default_rng(4)
    widths, map_widths = [], []
    for n in (300, 4800):
        values = rng.random((n, 1))
        low, high = mean_intervals(values)
        widths.append((high - low)[0])
        d, same = rng.random(n), (rng.random(n) < 0.5).astype(float)
        same[d < 0.3] = 1  # small distances mostly "same": an mAP well above chance
        map_low, map_high = map_interval(d, same)
        assert map_low <= score_jnd(torch.tensor(d), torch.tensor(same)) <= map_high
        assert (map_low, map_high) == map_interval(d, same)
        map_widths.append(map_high - map_low)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no pair the same: an undefined mAP, quietly
        assert all(math.isnan(bound) for bound in map_interval(d, np.zeros(len(d))))
    assert widths[0] / widths[1] == pytest.approx(4, rel=0.2)  # sqrt(4800 / 300)
    assert map_widths[0] / map_widths[1] == pytest.approx(4, rel=0.25)


def test_paired_difference_of_a_configuration_with_itself_is_zero_with_p_one():
    rng = np.random.default_rng(6)
    strata = [(a, a) for a in (rng.random(40), rng.random(70))]
    assert tuple(paired_difference(strata)) == (0.0, 0.0, 0.0, 1.0)
    shifted = [(a, a + 0.01 + 0.02 * rng.random(len(a))) for a, _ in strata]  # B is better on every example
    difference = paired_difference(shifted)
    assert difference.value == pytest.approx(np.mean([(b - a).mean() for a, b in shifted]))
    assert 0 < difference.low <= difference.value <= difference.high
    assert difference.p == pytest.approx(2 / (RESAMPLES + 1))  # no resample reaches 0


def test_compare_reports_the_difference_of_the_mean_scores(study):
    _, _, rows, stdout, _ = study
    scores = row_values(rows, "2afc", "score")
    means = {method: np.mean([scores[method, s] for s in SUBSPLITS]) for method in METHODS}
    report = stdout[stdout.index("paired comparison"):]
    assert f"A alex/1-4-7-9-11/spatial/cn: mean 2AFC {100 * means['spatial']:.2f}" in report
    assert f"B alex/1-4-7-9-11/sort/cn: mean 2AFC {100 * means['sort']:.2f}" in report
    assert f"B - A: {100 * (means['sort'] - means['spatial']):+.2f} points" in report


def test_compare_a_configuration_with_itself_and_names_that_do_not_fit(study, torch_home, capsys):
    tree, out, *_ = study
    args = ["--method", *METHODS, "--splits", "val", "--compare", "spatial", "spatial"]
    assert run_experiment(args, tree, out) == 0
    assert "B - A: +0.00 points, 95% interval [+0.00, +0.00], p = 1" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        run_experiment(["--method", *METHODS, "--compare", "alex", "sort"], tree, out)
    assert "--compare alex matches 2 of this run's configurations (alex/1-4-7-9-11/spatial/cn, " \
           "alex/1-4-7-9-11/sort/cn)" in capsys.readouterr().err


def test_saved_distances_are_numpy_arrays_giving_the_rows_scores(study):
    _, out, rows, _, _ = study
    scores = {(r["method"], r["dataset"], r["subsplit"]): float(r["value"]) for r in rows if r["measure"] == "score"}
    files = sorted((out / "distances").rglob("*.npz"))
    assert len(files) == len(METHODS) * len(SUBSPLITS) * (1 + 1 + len(SHIFTS))
    assert not [p for p in (out / "distances").rglob("*") if p.is_file() and p.suffix != ".npz"]
    for path in files:
        with np.load(path, allow_pickle=False) as saved:
            assert path.name.startswith(f"{saved['dataset']}_{saved['subsplit']}_")
            assert saved["d0"].dtype == np.float32 and saved["d0"].shape == (TRIPLETS,)
            expected = scores[str(saved["method"]), str(saved["dataset"]), str(saved["subsplit"])]
            assert lpips_2afc(*(torch.from_numpy(saved[k]) for k in ("d0", "d1", "judge"))) == pytest.approx(
                expected, abs=1e-12)


def test_a_run_whose_distances_are_saved_computes_nothing_and_one_without_them_does(study, torch_home, tmp_path):
    tree, out, *_ = study
    counter = ForwardCounter()
    try:
        args = ["--method", *METHODS, "--splits", "val", "--shift", *map(str, SHIFTS), "--save-distances"]
        assert run_experiment(args, tree, out) == 0
        assert counter.images == {}
        fresh = tmp_path / "fresh"
        fresh.mkdir()
        (fresh / "results.csv").write_bytes((out / "results.csv").read_bytes())
        assert run_experiment([*args, "--subsplits", "cnn"], tree, fresh) == 0
        assert counter.images["alex", "eval"] == TRIPLETS * (3 + 1 + 2 * (1 + len(SHIFTS)))  # for the distances
        assert read_results_csv(fresh) == read_results_csv(out)  # the same numbers again
    finally:
        counter.remove()


def test_a_row_without_interval_is_computed_again_to_gain_one(torch_home, bapps, tmp_path):
    args = ["--splits", "jnd", "--subsplits", "cnn"]
    assert run_experiment(args, bapps, tmp_path) == 0
    (row,) = read_results_csv(tmp_path)
    header, line = (tmp_path / "results.csv").read_text().splitlines()
    line = line.replace(f",{row['ci_low']},{row['ci_high']},", ",,,")
    (tmp_path / "results.csv").write_text(f"{header}\n{line}\n")
    assert read_results_csv(tmp_path)[0]["ci_low"] == ""  # as a run before intervals wrote it
    assert run_experiment(args, bapps, tmp_path) == 0
    assert read_results_csv(tmp_path) == [row]


def test_shift_flags_that_cannot_run_are_usage_errors():
    for args, message in ((["--shift", "4"], "shifts go from 1 to 3"),
                          (["--shift", "1", "--splits", "jnd"], "--shift works on the 2AFC val subsplits")):
        assert message in usage_error(experiment_main, args)
    assert RESAMPLES >= 1000  # the floor the intervals promise
