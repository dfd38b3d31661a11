"""BAPPS scoring and evaluation: hand-computed cases, the lpips package's formulas, results.csv."""
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import evaluation
from experiment import main
from helpers import (IMAGES_PER_NET, LIMIT, assert_scores_equal, cli_error, expected_scores, lpips_2afc, lpips_jnd,
                     lpips_reference, read_results_csv, reference_distance, reference_features, run_cli, run_experiment,
                     table_cells, table_row, usage_error, values)
from metric import ALL_CONFIGS, METHODS, UNTRAINED, DistanceMetric, score_2afc, score_jnd
from results import result_key, results_table

ROOT = Path(__file__).resolve().parents[1]


def test_score_2afc_hand_computed_with_ties():
    d0 = torch.tensor([1.0, 2.0, 3.0, 3.0, 5.0])
    d1 = torch.tensor([2.0, 1.0, 3.0, 4.0, 5.0])
    judge = torch.tensor([0.2, 0.7, 0.6, 1.0, 0.3])
    # agreement: 0.8, 0.7, tie 0.5, 0.0, tie 0.5; accuracy: 1, 1, 1 (tie, judge >= .5), 0, 0 (tie, judge < .5)
    score, accuracy = score_2afc(d0, d1, judge)
    assert score == pytest.approx((0.8 + 0.7 + 0.5 + 0.0 + 0.5) / 5)
    assert accuracy == pytest.approx(3 / 5)


def test_score_2afc_equals_lpips_on_random_distances_with_ties():
    g = torch.Generator().manual_seed(0)
    d0 = torch.randint(0, 4, (200,), generator=g).float()  # many ties
    d1 = torch.randint(0, 4, (200,), generator=g).float()
    judge = torch.rand(200, generator=g)
    assert score_2afc(d0, d1, judge)[0] == pytest.approx(lpips_2afc(d0, d1, judge), abs=1e-12)


def test_score_jnd_hand_computed():
    d = torch.tensor([0.1, 0.4, 0.2, 0.3])
    same = torch.tensor([1.0, 0.0, 0.0, 1.0])
    # ranked: same, diff, same, diff -> precision 1, 1/2, 2/3, 1/2 at recall 1/2, 1/2, 1, 1;
    # envelope: 1 up to recall 1/2, then 2/3 up to recall 1
    assert score_jnd(d, same) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    assert score_jnd(d, same) == pytest.approx(lpips_jnd(d, same))


def test_score_jnd_all_same_is_one_and_no_positive_is_nan():
    d = torch.tensor([0.3, 0.1, 0.2])
    assert score_jnd(d, torch.ones(3)) == pytest.approx(1.0)
    assert math.isnan(score_jnd(d, torch.zeros(3)))


@pytest.mark.parametrize("fractional", [False, True])
def test_score_jnd_equals_lpips_on_random_distances(fractional):
    g = torch.Generator().manual_seed(1)
    d = torch.rand(300, generator=g)
    same = torch.rand(300, generator=g)
    same = same if fractional else (same < 0.4).float()
    assert score_jnd(d, same) == pytest.approx(lpips_jnd(d, same), abs=1e-12)


def test_scores_refuse_empty_or_mismatched_inputs():
    with pytest.raises(ValueError, match="lengths 2, 3, 2"):
        score_2afc(torch.zeros(2), torch.zeros(3), torch.zeros(2))
    with pytest.raises(ValueError, match="lengths 0, 0"):
        score_jnd(torch.zeros(0), torch.zeros(0))


# ---------------------------------------------------------------- evaluation on a small BAPPS tree


def test_all_baseline_configurations_equal_independent_scores(torch_home, bapps, tmp_path):
    assert run_experiment(["--net", "alex", "--method", "all", "--channel-norm", "both"], bapps, tmp_path) == 0

    def features(x):
        return reference_features("alex", torch_home["alex"], x)

    def compare(f0, f1):
        return {config: reference_distance(f0, f1, *config) for config in ALL_CONFIGS}

    rows = read_results_csv(tmp_path)
    assert len(rows) == len(ALL_CONFIGS) * (6 * 2 + 2)
    assert {(r["net"], r["variant"], r["normalize"], r["version"]) for r in rows} == {
        ("alex", "baseline", "imagenet", "0")}
    assert {(r["dataset"], r["n"]) for r in rows} == {("2afc", "4"), ("jnd", "8")}
    assert_scores_equal(values(rows), expected_scores(bapps, features, compare))


def test_official_lpips_equals_lpips_package_scores(torch_home, bapps, tmp_path, net="alex"):
    args = ["--net", net, "--variant", "lin", "--normalize", "lpips", "--lpips-weights", "official"]
    assert run_experiment(args, bapps, tmp_path) == 0
    model = lpips_reference(net, torch_home[net])

    def compare(f0, f1):
        with torch.no_grad():
            return {("spatial", True): model(2 * f0[0] - 1, 2 * f1[0] - 1).flatten()}

    rows = read_results_csv(tmp_path)
    assert {(r["net"], r["variant"], r["normalize"]) for r in rows} == {(net, "lin", "lpips")}
    assert_scores_equal(values(rows), expected_scores(bapps, lambda x: [x], compare))


def test_lpips_v0_0_rows_equal_the_package_v0_0_and_stay_apart_from_v0_1(
        torch_home, bapps_tree, tmp_path, lpips_models):
    bapps, lin = bapps_tree(n_2afc=2, n_jnd=4), ["--net", "alex", "--variant", "lin"]
    assert run_experiment([*lin, "--normalize", "signed", "--lpips-weights", "official-v0.0"], bapps, tmp_path) == 0
    assert run_experiment([*lin, "--normalize", "lpips", "--lpips-weights", "official", "--splits", "jnd"], bapps,
                          tmp_path) == 0
    model = lpips_models("alex", "v0.0")

    def compare(f0, f1):
        with torch.no_grad():
            return {("spatial", True): model(2 * f0[0] - 1, 2 * f1[0] - 1).flatten()}

    rows = read_results_csv(tmp_path)
    kinds = {(r["normalize"], r["weights"].split(" lin=")[1].split("@")[0]) for r in rows}
    assert kinds == {("signed", "official-v0.0:alex.pth"), ("lpips", "official:alex.pth")}
    assert_scores_equal(values(rows, normalize="signed"), expected_scores(bapps, lambda x: [x], compare))
    assert {r["dataset"] for r in rows if r["normalize"] == "lpips"} == {"jnd"}


def test_each_image_goes_through_each_network_once(torch_home, bapps, tmp_path, forwards):
    flags = ["--net", "alex", "squeeze", "--method", "all", "--channel-norm", "both", *LIMIT]
    assert run_experiment(flags, bapps, tmp_path) == 0
    assert forwards.images["alex", "eval"] == forwards.images["squeeze", "eval"] == IMAGES_PER_NET
    assert all(len(ids) == 1 for ids in forwards.extractors.values())


def test_lin_configurations_share_one_backbone_pass(torch_home, bapps, tmp_path, forwards):
    args = ["--net", "alex", "--variant", "lin", "--lpips-weights", "official", "--method", "spatial", "sort",
            "mean", "--channel-norm", "both", *LIMIT]
    assert run_experiment(args, bapps, tmp_path) == 0
    assert forwards.images["alex", "eval"] == IMAGES_PER_NET
    assert len({(r["method"], r["channel_norm"]) for r in read_results_csv(tmp_path)}) == 6


def printed_marks(out):
    """{(method, channel norm): "this run" cell} of the table rows printed in `out`."""
    rows = [line.strip("|").split(" | ") for line in out.splitlines() if line.startswith("| alex ")]
    return {(row[3], row[4]): row[-1].strip() for row in rows}


def test_rerun_computes_only_what_is_missing_and_overwrite_recomputes(torch_home, bapps, tmp_path, forwards, capsys):
    sets = ["--subsplits", "traditional", "--limit", "3"]
    assert run_experiment(["--net", "alex", *sets], bapps, tmp_path) == 0
    first = values(read_results_csv(tmp_path))
    assert printed_marks(capsys.readouterr().out) == {("spatial", "true"): "computed"}
    forwards.images.clear()

    assert run_experiment(["--net", "alex", "--method", "all", "--channel-norm", "both", *sets], bapps, tmp_path) == 0
    assert forwards.images["alex", "eval"] == 3 * 3 + 3 * 2  # one pass for the nine missing configs
    assert printed_marks(capsys.readouterr().out) == {
        (method, norm): "reused" if (method, norm) == ("spatial", "true") else "computed"
        for method in METHODS for norm in ("true", "false")}
    assert run_experiment(["--net", "alex", "--method", "mean", *sets], bapps, tmp_path) == 0
    shown = capsys.readouterr().out
    assert printed_marks(shown) == {("mean", "true"): "reused"} and "this run's 1 of the 10 configurations" in shown
    assert run_experiment(["--net", "alex", "--method", "mean", "--table", "all", *sets], bapps, tmp_path) == 0
    shown = capsys.readouterr().out
    assert len(printed_marks(shown)) == 10 and "this run" not in shown
    assert (tmp_path / "results.md").read_text() in shown + "\n"
    second = values(read_results_csv(tmp_path))
    assert len(second) == len(ALL_CONFIGS) * (2 + 1) and first.items() <= second.items()
    before = (tmp_path / "results.csv").read_bytes()
    forwards.images.clear()

    assert run_experiment(["--net", "alex", "--method", "all", "--channel-norm", "both", *sets], bapps, tmp_path) == 0
    assert forwards.images == {}  # not even built
    assert (tmp_path / "results.csv").read_bytes() == before

    tampered = before.decode().replace("alex,1-4-7-9-11,baseline,spatial,true,imagenet,0,jnd,traditional,map,",
                                       "alex,1-4-7-9-11,baseline,spatial,true,imagenet,0,jnd,traditional,map,9")
    assert tampered != before.decode()
    (tmp_path / "results.csv").write_text(tampered)
    assert run_experiment(["--net", "alex", "--overwrite", *sets], bapps, tmp_path) == 0
    assert forwards.images["alex", "eval"] == 3 * 3 + 3 * 2
    assert values(read_results_csv(tmp_path)) == second


def test_interrupted_run_keeps_finished_sets_and_resumes(torch_home, bapps, tmp_path, monkeypatch, capsys):
    real_evaluate, calls = evaluation.evaluate, []

    def interrupted_on_third_set(*args, **kwargs):
        calls.append(kwargs["desc"])
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(evaluation, "evaluate", interrupted_on_third_set)
    assert run_experiment(["--net", "alex", *LIMIT], bapps, tmp_path) == 130
    assert "rerun the same command" in capsys.readouterr().err
    assert {r["subsplit"] for r in read_results_csv(tmp_path)} == {"traditional", "cnn"}
    assert os.listdir(tmp_path) == ["results.csv"]  # no temporary file left, no table yet

    assert run_experiment(["--net", "alex", *LIMIT], bapps, tmp_path) == 0
    assert calls[3:] == ["alex 2afc/superres", "alex 2afc/deblur", "alex 2afc/color", "alex 2afc/frameinterp",
                         "alex jnd/traditional", "alex jnd/cnn"]  # only what was missing
    rows = read_results_csv(tmp_path)
    assert len(rows) == 6 * 2 + 2 and len({result_key(r) + (r["measure"],) for r in rows}) == len(rows)


@pytest.mark.parametrize("args, message", [
    (["--variant", "lin"], "--lpips-weights official"),
    (["--lpips-weights", "official"], "no linear layers"),
    (["--variant", "tune"], "needs --train"),
    (["--variant", "scratch"], "needs --train"),
    (["--splits", "jnd", "--subsplits", "superres"], "valid: traditional cnn"),
    (["--net", "resnet"], "unknown network 'resnet'"),
    (["--limit", "0"], "--limit must be at least 1"),
    (["--device", "mps"], "--device mps: MPS (Apple GPU) is not available here; use auto, cpu, cuda or cuda:N"),
    (["--device", "xla"], "--device xla: xla devices are not supported"),
    (["--net", "l2", "--method", "sort"], "--method does not apply to the pixel metrics (l2), which have no network"),
    (["--net", "l2", "ssim", "--channel-norm", "off", "--layers", "1", "--weights-dir", "w"],
     "--layers --channel-norm --weights-dir do not apply to the pixel metrics (l2 ssim)"),
])
def test_impossible_flags_are_usage_errors(args, message):
    assert message in usage_error(main, args)


def test_weights_that_do_not_fit_the_method_fail_before_any_result(torch_home, bapps, tmp_path, capsys):
    args = ["--variant", "lin", "--lpips-weights", "official", "--method", "spatial+sort"]
    assert run_experiment(args, bapps, tmp_path) == 1
    assert "sort_lin0.model.1.weight" in capsys.readouterr().err
    assert not (tmp_path / "results.csv").exists()


def test_damaged_weights_files_are_one_line_errors(torch_home, bapps, tmp_path, monkeypatch, capsys):
    linear = tmp_path / "lin.pth"
    linear.write_bytes(b"")
    assert run_experiment(["--variant", "lin", "--lpips-weights", str(linear)], bapps, tmp_path / "out") == 1
    err = capsys.readouterr().err
    assert err.startswith(f"experiment.py: error: cannot read weights file {linear} (EOFError)")
    assert err.count("\n") == 1
    backbone = tmp_path / "home" / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth"
    backbone.parent.mkdir(parents=True)
    backbone.write_bytes(open(torch_home["alex"], "rb").read()[:1000])
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "home"))
    assert run_experiment(["--splits", "jnd"], bapps, tmp_path / "out") == 1
    err = capsys.readouterr().err
    assert str(backbone) in err and "delete it and download it again" in err and err.count("\n") == 1
    assert not (tmp_path / "out" / "results.csv").exists()


def test_outputs_that_cannot_be_written_are_refused_before_computing(torch_home, bapps, tmp_path, monkeypatch):
    monkeypatch.setattr(DistanceMetric, "features", lambda *a: pytest.fail("computed before checking --out"))
    flags = ["--data-root", bapps, "--no-download", "--num-workers", "0", "--splits", "jnd"]
    (tmp_path / "a_file").write_text("")
    cli_error(main, [*flags, "--out", tmp_path / "a_file"], r"--out .*a_file: .*a_file is a file, not a folder")
    (tmp_path / "out" / "results.md").mkdir(parents=True)
    cli_error(main, [*flags, "--out", tmp_path / "out"], r"out/results.md is a folder, where an output file goes")
    assert os.listdir(tmp_path / "out") == ["results.md"]


def test_a_bad_image_read_by_a_worker_is_one_line_naming_it(torch_home, bapps, tmp_path):
    root = tmp_path / "bapps"
    shutil.copytree(bapps, root)
    bad = root / "jnd" / "val" / "cnn" / "p1" / "000002.png"
    bad.write_bytes(b"not a png")
    cli_error(main, ["--data-root", root, "--no-download", "--out", tmp_path / "out", "--num-workers", "1",
                     "--splits", "jnd", "--subsplits", "cnn"],
              rf"^experiment.py: error: cannot read image {re.escape(str(bad))}: cannot identify image file")


def test_missing_dataset_without_download_names_the_fix(torch_home, tmp_path, capsys):
    assert main(["--data-root", str(tmp_path / "none"), "--no-download", "--out", str(tmp_path)]) == 1
    assert "python dataset_collector.py" in capsys.readouterr().err


def test_trained_weights_file_gives_its_version(torch_home, bapps, tmp_path):
    path = tmp_path / "lin_alex" / "version_3" / "lin.pth"
    path.parent.mkdir(parents=True)
    trained = DistanceMetric("alex", lin=True, lpips_weights=UNTRAINED)
    trained.clamp_weights()  # as training leaves them: LPIPS weights are >= 0
    torch.save(trained.lpips_state_dict(), path)
    args = ["--variant", "lin", "--lpips-weights", str(path), "--splits", "jnd", "--limit", "4"]
    assert run_experiment(args, bapps, tmp_path / "out") == 0
    assert {(r["variant"], r["version"], r["n"]) for r in read_results_csv(tmp_path / "out")} == {("lin", "3", "4")}


def test_table_aggregates_versions_and_marks_missing_cells():
    rows = (table_row(("vgg", "baseline", "spatial", "true"), 0,
                      {("2afc", "cnn", "score"): 0.8, ("2afc", "cnn", "accuracy"): 0.1,
                       ("jnd", "cnn", "map"): 0.5, ("jnd", "traditional", "map"): 0.6})
            + table_row(("alex", "lin", "spatial", "true"), 1,
                        {("2afc", "traditional", "score"): 0.5, ("2afc", "color", "score"): 0.7})
            + table_row(("alex", "lin", "spatial", "true"), 2,
                        {("2afc", "traditional", "score"): 0.7, ("2afc", "color", "score"): 0.9}))
    table = results_table(rows)
    assert table.splitlines()[0].split(" | ")[10:] == ["traditional", "cnn", "superres", "deblur", "color",
                                                       "frameinterp", "2AFC mean", "JND mAP |"]
    cells = table_cells(table)
    spread = f"{100 * statistics.stdev([0.5, 0.7]):.2f}"
    assert cells[0] == ["alex", "1-2", "lin", "spatial", "true", "imagenet", "all", "bapps", "w.pth@00000000", "2",
                        f"60.00 ± {spread}", "–", "–", "–", f"80.00 ± {spread}", "–", f"70.00 ± {spread}", "–"]
    assert cells[1] == ["vgg", "1-2", "baseline", "spatial", "true", "imagenet", "all", "bapps", "w.pth@00000000", "1",
                        "–", "80.00", "–", "–", "–", "–", "80.00", "55.00"]
    assert len(cells) == 2


def test_command_line_help_and_a_real_small_run(weights_home, bapps, tmp_path):
    env = {**os.environ, "TORCH_HOME": weights_home["home"]}
    code, shown, _ = run_cli(main, ["--help"])
    assert code == 0
    for flag in ("--net", "--method", "--channel-norm", "--variant", "--normalize", "--lpips-weights", "--data-root",
                 "--no-download", "--splits", "--subsplits", "--limit", "--batch-size", "--num-workers", "--device",
                 "--out", "--overwrite", "--seed"):
        assert flag in shown
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "experiment.py", "--net", "squeeze", "--method", "spatial",
                           "--data-root", bapps, "--no-download", "--out", str(out), "--splits", "jnd",
                           "--limit", "5", "--batch-size", "2", "--num-workers", "2", "--device", "auto"],
                          cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "squeeze jnd/cnn" in done.stderr  # the progress bar
    table = (out / "results.md").read_text()
    assert "| squeeze | 1-4-7-9-10-11-12 |" in done.stdout and "| computed |" in done.stdout
    assert ("| squeeze | 1-4-7-9-10-11-12 | baseline | spatial | true | imagenet | 5 | synthetic | "
            "squeezenet1_1-b8a52dc0.pth@") in table
    assert {(r["dataset"], r["subsplit"], r["n"]) for r in read_results_csv(out)} == {
        ("jnd", "traditional", "5"), ("jnd", "cnn", "5")}
