"""results.csv never serves stale numbers: rows are reused only on the same data and weights."""
import multiprocessing
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import read_results_csv, run_experiment, table_cells, table_row
from metric import DistanceMetric
from results import RESULT_COLUMNS, results_table, save_results


@pytest.fixture
def bapps(bapps_tree):
    """JND only: 6 pairs per subsplit."""
    return bapps_tree(n_jnd=6, parts=("jnd",))


def maps(rows):
    return {(r["subsplit"], r["n"], r["weights"]): float(r["value"]) for r in rows}


def test_a_limited_run_is_not_reused_by_a_full_one(torch_home, bapps, tmp_path):
    assert run_experiment(["--splits", "jnd", "--limit", "2"], bapps, tmp_path) == 0
    assert run_experiment(["--splits", "jnd"], bapps, tmp_path) == 0
    rows = read_results_csv(tmp_path)
    assert sorted((r["subsplit"], r["n"], r["limit"]) for r in rows) == [
        ("cnn", "2", "2"), ("cnn", "6", "all"), ("traditional", "2", "2"), ("traditional", "6", "all")]
    cells = {tuple(c[:8]): c for c in table_cells((tmp_path / "results.md").read_text())}
    assert len(cells) == 2
    full = [float(r["value"]) for r in rows if r["n"] == "6"]
    (all_row,) = [c for key, c in cells.items() if key[6] == "all"]
    assert all_row[-1].split(" ± ")[0] == f"{100 * sum(full) / 2:.2f}"


def test_other_linear_weights_are_computed_not_served_the_official_numbers(torch_home, bapps, tmp_path):
    lin = ["--variant", "lin", "--splits", "jnd"]
    assert run_experiment([*lin, "--lpips-weights", "official"], bapps, tmp_path) == 0
    other = DistanceMetric("alex", lin=True, lpips_weights="official").lpips_state_dict()
    torch.manual_seed(0)
    other = {key: weight * torch.rand_like(weight) for key, weight in other.items()}
    torch.save(other, tmp_path / "other.pth")
    assert run_experiment([*lin, "--lpips-weights", str(tmp_path / "other.pth")], bapps, tmp_path) == 0
    rows = read_results_csv(tmp_path)
    weights = sorted({r["weights"] for r in rows})
    assert len(rows) == 4 and len(weights) == 2
    assert weights[0].endswith("lin=official:alex.pth@" + weights[0][-8:])
    assert " lin=other.pth@" in weights[1] and weights[0].split()[0] == weights[1].split()[0]
    assert len(table_cells((tmp_path / "results.md").read_text())) == 2
    official, others = ([float(r["value"]) for r in rows if r["weights"] == w] for w in weights)
    assert official != others


def test_a_changed_backbone_file_is_computed_anew(torch_home, bapps, tmp_path, monkeypatch):
    home = tmp_path / "home"
    shutil.copytree(torch_home["home"], home)
    monkeypatch.setenv("TORCH_HOME", str(home))
    assert run_experiment(["--splits", "jnd"], bapps, tmp_path / "out") == 0
    file = home / "hub" / "checkpoints" / Path(torch_home["alex"]).name
    state = torch.load(file, weights_only=True)
    torch.save({key: value.flip(0) if value.dim() else value for key, value in state.items()}, file)
    assert run_experiment(["--splits", "jnd"], bapps, tmp_path / "out") == 0
    assert len({r["weights"] for r in read_results_csv(tmp_path / "out")}) == 2


OLD_FORMAT = ("net,variant,method,channel_norm,normalize,version,dataset,subsplit,measure,value,n\n"
              "alex,baseline,spatial,true,imagenet,0,jnd,cnn,map,0.25,6\n")


def test_a_file_of_the_old_format_is_read_kept_and_rewritten(torch_home, bapps, tmp_path):
    (tmp_path / "results.csv").write_text(OLD_FORMAT)
    assert run_experiment(["--splits", "jnd", "--subsplits", "cnn"], bapps, tmp_path) == 0
    rows = read_results_csv(tmp_path)
    assert list(rows[0]) == list(RESULT_COLUMNS)
    assert rows[0] == {"net": "alex", "layers": "1-4-7-9-11", "variant": "baseline", "method": "spatial",
                       "channel_norm": "true", "normalize": "imagenet", "version": "0", "dataset": "jnd",
                       "subsplit": "cnn", "measure": "map", "value": "0.25", "n": "6", "limit": "unknown",
                       "weights": "unknown", "ci_low": "", "ci_high": "", "data": "unknown"}
    assert len(rows) == 2 and rows[1]["weights"].startswith("alexnet-owt-7be5be79.pth@")
    cells = table_cells((tmp_path / "results.md").read_text())
    assert [c[6:9] for c in cells] == [["all", "synthetic", rows[1]["weights"]], ["unknown", "unknown", "unknown"]]
    assert cells[1][-1] == "25.00"  # no interval: a row from before intervals


@pytest.mark.parametrize("damage, problem", [
    (lambda line: line[: len(line) // 2], "cut or has extra fields"),
    (lambda line: line + ",extra", "cut or has extra fields"),
    (lambda line: line.replace(",map,", ",map,high"), "value 'high"),
    (lambda line: ",".join(["many" if i == 11 else field for i, field in enumerate(line.split(","))]), "n 'many'"),
])
def test_a_damaged_line_is_an_error_naming_file_and_line(torch_home, bapps, tmp_path, capsys, damage, problem):
    assert run_experiment(["--splits", "jnd"], bapps, tmp_path) == 0
    path = tmp_path / "results.csv"
    lines = path.read_text().splitlines()
    lines[2] = damage(lines[2])
    path.write_text("\n".join(lines) + "\n")
    before, table = path.read_bytes(), (tmp_path / "results.md").read_bytes()
    capsys.readouterr()
    assert run_experiment(["--splits", "jnd", "--method", "sort"], bapps, tmp_path) == 1
    err = capsys.readouterr().err
    assert f"{path}, line 3" in err and problem in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert path.read_bytes() == before and (tmp_path / "results.md").read_bytes() == table


def test_the_table_never_merges_other_weights_and_shows_a_retrained_version_once():
    score = ("2afc", "cnn", "score")
    rows = (table_row(("alex", "lin", "spatial", "true"), 0, {score: 0.6}, weights="b@1 lin=official:alex.pth@2")
            + table_row(("alex", "lin", "spatial", "true"), 0, {score: 0.7}, weights="b@1 lin=other.pth@3")
            + table_row(("alex", "lin", "spatial", "true"), 0, {score: 0.7}, weights="b@1", limit="5")
            + table_row(("alex", "lin", "spatial", "true"), 0, {score: 0.1}, weights="b@1 lin=e/version_0/lin.pth@4")
            + table_row(("alex", "lin", "spatial", "true"), 1, {score: 0.3}, weights="b@1 lin=e/version_1/lin.pth@5")
            + table_row(("alex", "lin", "spatial", "true"), 0, {score: 0.5}, weights="b@1 lin=e/version_0/lin.pth@6"))
    cells = {(c[6], c[8]): (c[9], c[11]) for c in table_cells(results_table(rows))}
    assert cells == {("all", "b@1 lin=official:alex.pth@2"): ("1", "60.00"),
                     ("all", "b@1 lin=other.pth@3"): ("1", "70.00"),
                     ("5", "b@1"): ("1", "70.00"),
                     ("all", "b@1 lin=e/version_*"): ("2", "40.00 ± 14.14")}


# ---------------------------------------------------------------- concurrent writers


def save_many(path, writer, count):
    """`count` saves of one row each, as a run saves after each set."""
    for i in range(count):
        row = table_row(("alex", "baseline", "spatial", "true"), 0, {("jnd", f"w{writer}s{i}", "map"): 0.5})
        save_results(path, row)


def test_a_jnd_subsplit_without_a_same_pair_does_not_hide_the_other():
    config = ("alex", "baseline", "spatial", "true")
    rows = table_row(config, 0, {("jnd", "traditional", "map"): 0.625, ("jnd", "cnn", "map"): float("nan")})
    assert table_cells(results_table(rows))[0][-1] == "62.50"
    rows = table_row(config, 0, {("jnd", "traditional", "map"): float("nan"), ("jnd", "cnn", "map"): float("nan")})
    assert table_cells(results_table(rows))[0][-1] == "–"
    assert "JND mAP is the mean over the JND subsplits that have a 'same' pair" in results_table(rows)


def test_concurrent_writers_keep_every_row(tmp_path):
    """Four processes saving 15 rows each into one file keep all 60 (without the lock, about a third are lost)."""
    path, writers, count = tmp_path / "results.csv", 4, 15
    context = multiprocessing.get_context("fork")
    processes = [context.Process(target=save_many, args=(path, w, count)) for w in range(writers)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(60)
    assert all(process.exitcode == 0 for process in processes)
    kept = [row["subsplit"] for row in read_results_csv(tmp_path)]
    assert sorted(kept) == sorted(f"w{w}s{i}" for w in range(writers) for i in range(count))


# ---------------------------------------------------------------- the identity of the data


def changed_copy(tree, folder, stems=("000001",)):
    """A copy of the BAPPS tree `tree` whose JND `same` judgements of `stems` are flipped: same counts, other data."""
    shutil.copytree(tree, folder)
    for subsplit in ("traditional", "cnn"):
        for stem in stems:
            path = Path(folder) / "jnd/val" / subsplit / "same" / f"{stem}.npy"
            np.save(path, 1 - np.load(path))
    return str(folder)


def test_rows_are_reused_only_on_the_same_examples(torch_home, bapps, tmp_path, monkeypatch):
    assert run_experiment(["--splits", "jnd"], bapps, tmp_path / "out") == 0
    first = read_results_csv(tmp_path / "out")
    other = changed_copy(bapps, tmp_path / "other")
    assert run_experiment(["--splits", "jnd"], other, tmp_path / "out") == 0
    rows = read_results_csv(tmp_path / "out")
    assert len(rows) == 4 and len({r["data"] for r in rows}) == 4  # computed anew, not served the first tree's
    assert {r["data"].split(":")[0] for r in rows} == {"synthetic"}
    assert [r["value"] for r in rows[:2]] == [r["value"] for r in first]
    monkeypatch.setattr(DistanceMetric, "features", lambda *a: pytest.fail("the same examples were computed again"))
    assert run_experiment(["--splits", "jnd"], str(shutil.copytree(bapps, tmp_path / "copy")), tmp_path / "out") == 0
    assert read_results_csv(tmp_path / "out") == rows  # a copy elsewhere is the same data: reused
