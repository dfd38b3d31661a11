"""distance.py: its numbers against DistanceMetric and the lpips package on independently loaded files,
folder pairing, CSV and matrix outputs, errors, and interrupted runs."""
import os
import statistics
import subprocess
import sys
from pathlib import Path

import lpips
import numpy as np
import pytest
import torch
from PIL import Image

import distance
import image_stream
from helpers import (HEADER, LPIPS_LAYERS, PAIRED, assert_close, fill, load_white, lpips_reference, picture,
                     read_csv_rows, run_distance, save_picture)
from image_io import load_image
from metric import ALL_CONFIGS, DistanceMetric

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """Two folders pairing PAIRED by relative path (nested), each with one file of its own."""
    root = tmp_path_factory.mktemp("folders")
    return fill(root / "dir0", 0, extra=("only0.png",)), fill(root / "dir1", 100, extra=("only1.png", "zz.png"))


def loaded(path, size=None):
    return load_image(path, size)[None]


@pytest.mark.parametrize("name, flags, kwargs", [
    ("a.png", [], {}),
    ("gray.png", ["--net", "squeeze", "--method", "spatial+sort", "--channel-norm", "off"],
     {"net": "squeeze", "method": "spatial+sort", "channel_norm": False}),
    ("alpha.png", ["--layers", "1", "4", "--normalize", "lpips"], {"layers": [1, 4], "normalize": "lpips"}),
])
def test_two_files_print_the_metric_on_the_loaded_images(torch_home, folders, capsys, name, flags, kwargs):
    path0, path1 = (os.path.join(folder, name) for folder in folders)
    code, out, _ = run_distance([path0, path1, *flags], capsys)
    expected = DistanceMetric(**kwargs)(loaded(path0), loaded(path1))
    assert code == 0 and out.strip() == out.strip().splitlines()[-1]
    assert_close(torch.tensor([float(out)]), expected, rtol=1e-6)


def test_two_files_all_configs_table_equals_all_methods(torch_home, folders, capsys):
    path0, path1 = (os.path.join(folder, "sub/b.png") for folder in folders)
    code, out, _ = run_distance([path0, path1, "--all-configs"], capsys)
    lines = out.strip().splitlines()
    assert code == 0 and lines[0].split() == ["net", "method", "channel_norm", "distance"] and len(lines) == 11
    expected = DistanceMetric("alex").all_methods(loaded(path0), loaded(path1))
    for line, (method, norm) in zip(lines[1:], ALL_CONFIGS):
        net, shown_method, shown_norm, value = line.split()
        assert (net, shown_method, shown_norm) == ("alex", method, str(norm).lower())
        assert_close(torch.tensor([float(value)]), expected[method, norm], rtol=1e-6)


def test_official_lpips_over_two_folders_equals_the_lpips_package(torch_home, tmp_path, capsys):
    names = [f"{i}.png" for i in range(5)] + ["nested/5.png"]
    dir0, dir1 = fill(tmp_path / "gen", 0, names), fill(tmp_path / "gt", 50, names)
    out = tmp_path / "pairs.csv"
    code, _, _ = run_distance([dir0, dir1, "--variant", "lin", "--lpips-weights", "official", "--normalize",
                               "lpips", "--batch-size", "4", "--out", out], capsys)
    assert code == 0
    rows = read_csv_rows(out)[1:]
    assert sorted(row[0] for row in rows) == sorted(names)
    package = lpips_reference("alex", torch_home["alex"])
    for row in rows:
        # as lpips_2dirs.py reads them: RGB bytes, lpips.im2tensor, one forward per pair
        x0, x1 = (lpips.im2tensor(np.array(Image.open(os.path.join(d, row[0])).convert("RGB"))) for d in (dir0, dir1))
        with torch.no_grad():
            theirs = package(x0, x1).flatten()
        assert_close(torch.tensor([float(row[2])]), theirs)
        assert row[3:] == ["alex", "1-4-7-9-11", "lin", "spatial", "true", "lpips"]


def test_lpips_v0_0_on_two_files_equals_the_lpips_package_v0_0(torch_home, lpips_models, folders, capsys):
    path0, path1 = (os.path.join(folder, "sub/b.png") for folder in folders)
    code, out, _ = run_distance([path0, path1, "--variant", "lin", "--lpips-weights", "official-v0.0",
                                 "--normalize", "signed", "--net", "squeeze"], capsys)
    x0, x1 = (lpips.im2tensor(np.array(Image.open(path).convert("RGB"))) for path in (path0, path1))
    with torch.no_grad():
        theirs = lpips_models("squeeze", "v0.0")(x0, x1).flatten()
    assert code == 0
    assert_close(torch.tensor([float(out)]), theirs)


PIXEL_MODELS = {"l2": lpips.L2, "ssim": lpips.DSSIM}


def lpips_pixel_distance(net, colorspace, path0, path1):
    """lpips.L2 or lpips.DSSIM of two files, read as LPIPS's BAPPS loader feeds them (ToTensor's x / 255, then
    Normalize(0.5, 0.5), that is 2x - 1), transparency over white."""
    x0, x1 = (load_white(path) for path in (path0, path1))
    return PIXEL_MODELS[net](use_gpu=False, colorspace=colorspace)(2 * x0 - 1, 2 * x1 - 1).item()


@pytest.mark.parametrize("colorspace", ("Lab", "RGB"))
def test_pixel_metrics_beside_a_network_over_two_folders_equal_lpips_l2_and_dssim(
        torch_home, lpips_ssim, folders, tmp_path, capsys, colorspace):
    out = tmp_path / "pairs.csv"
    flags = [] if colorspace == "Lab" else ["--colorspace", "RGB"]  # Lab is the default
    code, summary, _ = run_distance([*folders, "--net", "l2", "alex", "ssim", *flags, "--out", out], capsys)
    rows = read_csv_rows(out)
    assert code == 0 and rows[0] == HEADER and len(rows) == 1 + 3 * len(PAIRED)
    assert [row[3] for row in rows[1:4]] == ["l2", "alex", "ssim"]
    for row in rows[1:]:
        paths = [os.path.join(folder, row[0]) for folder in folders]
        if row[3] == "alex":
            assert_close(torch.tensor([float(row[2])]), DistanceMetric()(*map(loaded, paths)), rtol=1e-6)
            continue
        assert row[4:] == ["-", "-", "-", "-", colorspace.lower()]
        # 9 significant digits print a float32 exactly; DSSIM in RGB is float64 inside, within 1e-9 of LPIPS's
        assert float(row[2]) == pytest.approx(lpips_pixel_distance(row[3], colorspace, *paths), rel=1e-6)
    lines = summary.splitlines()
    assert "distance mean ± standard deviation" in lines[0] and [line.split()[0] for line in lines[1:4]] == [
        "l2", "alex", "ssim"]


def test_pixel_metrics_on_two_files_and_all_pairs(torch_home, lpips_ssim, folders, capsys):
    pair = [os.path.join(folder, "a.png") for folder in folders]
    code, out, _ = run_distance([*pair, "--net", "ssim"], capsys)
    assert code == 0 and float(out) == pytest.approx(lpips_pixel_distance("ssim", "Lab", *pair), rel=1e-6)
    code, out, _ = run_distance([*pair, "--net", "l2", "squeeze"], capsys)
    lines = out.strip().splitlines()
    assert code == 0 and len(lines) == 3 and lines[1].split()[:3] == ["l2", "-", "-"]
    assert float(lines[1].split()[3]) == pytest.approx(lpips_pixel_distance("l2", "Lab", *pair), rel=1e-6)
    code, out, _ = run_distance(["--all-pairs", folders[0], "--net", "l2", "alex", "--batch-size", "4"], capsys)
    rows = read_csv_rows(out)
    n = len(PAIRED) + 1
    assert code == 0 and len(rows) == 1 + 2 * n and [row[-6] for row in rows[1::n]] == ["l2", "alex"]
    names = rows[0][1: n + 1]
    for i, j in ((0, 1), (2, 5), (4, 3)):
        paths = [os.path.join(folders[0], names[k]) for k in (i, j)]
        assert float(rows[1 + i][1 + j]) == pytest.approx(lpips_pixel_distance("l2", "Lab", *paths), rel=1e-6)
        assert_close(torch.tensor([float(rows[1 + n + i][1 + j])]), DistanceMetric()(*map(loaded, paths)),
                     rtol=1e-6)


def test_layer_columns_equal_layer_distances_and_sum_to_the_distance(torch_home, folders, tmp_path, capsys):
    out = tmp_path / "pairs.csv"
    code, _, _ = run_distance([*folders, "--net", "alex", "squeeze", "l2", "--method", "spatial+sort",
                               "--layer-columns", "--out", out], capsys)
    rows = read_csv_rows(out)
    points = [1, 4, 7, 9, 10, 11, 12]  # alex's 1 4 7 9 11 and squeeze's 1 4 7 9 10 11 12
    assert code == 0 and rows[0] == HEADER + [f"d_{p}" for p in points]
    names = sorted(PAIRED)  # the order of the rows; all pairs in one batch, as here (float32 depends on the batch)
    x0, x1 = (torch.cat([loaded(os.path.join(folder, name)) for name in names]) for folder in folders)
    for net in ("alex", "squeeze", "l2"):
        mine = [row for row in rows[1:] if row[3] == net]
        assert [row[0] for row in mine] == names
        cells = [dict(zip(points, row[len(HEADER):])) for row in mine]
        if net == "l2":
            assert {value for row in cells for value in row.values()} == {"-"}
            continue
        assert all((row[p] == "-") == (p not in LPIPS_LAYERS[net]) for row in cells for p in points)
        got = torch.tensor([[float(row[p]) for p in LPIPS_LAYERS[net]] for row in cells])
        assert_close(got, DistanceMetric(net, method="spatial+sort").layer_distances(x0, x1), rtol=1e-6)
        assert_close(torch.tensor([float(row[2]) for row in mine]), got.double().sum(1), rtol=1e-6)
    pair = [os.path.join(folder, "a.png") for folder in folders]
    code, printed, _ = run_distance([*pair, "--layer-columns"], capsys)  # one configuration: a table all the same
    header, line = printed.strip().splitlines()
    columns = ["net", "method", "channel_norm", "distance", "d_1", "d_4", "d_7", "d_9", "d_11"]
    assert code == 0 and header.split() == columns
    assert_close(torch.tensor([[float(v) for v in line.split()[4:]]]),
                 DistanceMetric().layer_distances(*map(loaded, pair)), rtol=1e-6)


def test_folders_pair_by_relative_path_and_report_unpaired_files(torch_home, folders, tmp_path, capsys):
    out = tmp_path / "pairs.csv"
    code, stdout, err = run_distance([*folders, "--out", out], capsys)
    rows = read_csv_rows(out)
    assert code == 0 and rows[0] == HEADER
    assert sorted((row[0], row[1]) for row in rows[1:]) == sorted((name, name) for name in PAIRED)
    assert "1 file only in" in err and "only0.png" in err
    assert "2 files only in" in err and "only1.png, zz.png" in err
    for row in rows[1:]:
        expected = DistanceMetric()(*(loaded(os.path.join(folder, row[0])) for folder in folders))
        assert_close(torch.tensor([float(row[2])]), expected, rtol=1e-6)
        assert row[3:] == ["alex", "1-4-7-9-11", "baseline", "spatial", "true", "imagenet"]
    values = [float(row[2]) for row in rows[1:]]
    summary = stdout.splitlines()[0]
    assert summary.startswith(f"{len(PAIRED)} pairs")
    mean, std = (float(x) for x in summary.split("distance ")[1].split(" (")[0].split(" ± "))
    assert mean == pytest.approx(statistics.fmean(values), rel=1e-6)
    assert std == pytest.approx(statistics.stdev(values), rel=1e-6)


def test_strict_makes_unpaired_files_an_error_and_writes_nothing(torch_home, folders, tmp_path, capsys):
    out = tmp_path / "pairs.csv"
    code, _, err = run_distance([*folders, "--strict", "--out", out], capsys)
    assert code == 1 and err.startswith("distance.py: error: ") and "only0.png" in err and "--strict" in err
    assert len(err.strip().splitlines()) == 1 and not out.exists()


def test_all_configs_over_folders_one_row_per_pair_and_configuration(torch_home, folders, capsys):
    code, out, err = run_distance([*folders, "--all-configs", "--batch-size", "2"], capsys)
    rows = read_csv_rows(out)
    assert code == 0 and rows[0] == HEADER and len(rows) == 1 + 10 * len(PAIRED)
    assert "distance mean ± standard deviation" in err  # rows on stdout: the summary goes to stderr
    metric = DistanceMetric()
    expected = {name: metric.all_methods(*(loaded(os.path.join(folder, name)) for folder in folders))
                for name in PAIRED}
    for row in rows[1:]:
        assert_close(torch.tensor([float(row[2])]), expected[row[0]][row[6], row[7] == "true"], rtol=1e-6)
    assert {(row[6], row[7]) for row in rows[1:]} == {(m, str(n).lower()) for m, n in ALL_CONFIGS}


def test_worker_processes_give_the_same_rows(torch_home, folders, capsys):
    _, threaded, _ = run_distance([*folders, "--batch-size", "2"], capsys)
    # the same batches: the backbone's float32 results may differ in the last bit between batch sizes
    _, workers, _ = run_distance([*folders, "--batch-size", "2", "--num-workers", "1"], capsys)
    assert read_csv_rows(threaded) == read_csv_rows(workers)


def test_all_pairs_writes_the_symmetric_matrix_and_plot(torch_home, folders, tmp_path, capsys):
    out = tmp_path / "matrix.csv"
    code, stdout, _ = run_distance(["--all-pairs", folders[0], "--out", out, "--plot", "--batch-size", "2"], capsys)
    rows = read_csv_rows(out)
    names = rows[0][1: 1 + len(PAIRED) + 1]
    assert code == 0 and sorted(names) == sorted([*PAIRED, "only0.png"])
    assert rows[0][len(names) + 1:] == HEADER[3:] and [row[0] for row in rows[1:]] == names
    matrix = torch.tensor([[float(v) for v in row[1: len(names) + 1]] for row in rows[1:]])
    assert torch.equal(matrix, matrix.T) and torch.equal(matrix.diagonal(), torch.zeros(len(names)))
    images = {name: loaded(os.path.join(folders[0], name)) for name in names}
    metric = DistanceMetric()
    for i, j in ((0, 1), (2, 5), (3, 4)):
        assert_close(matrix[i, j:j + 1], metric(images[names[i]], images[names[j]]), rtol=1e-6)
    assert f"15 pairs of {len(names)} images" in stdout
    with Image.open(tmp_path / "matrix.png") as plot:
        assert plot.format == "PNG" and min(plot.size) >= 800


def test_all_pairs_all_configs_has_a_block_per_configuration(torch_home, folders, capsys):
    code, out, _ = run_distance(["--all-pairs", folders[1], "--all-configs", "--size", "40"], capsys)
    rows = read_csv_rows(out)
    n = len(rows[0]) - 1 - len(HEADER[3:])
    assert code == 0 and len(rows) == 1 + 10 * n
    assert [(row[-3], row[-2]) for row in rows[1::n]] == [(m, str(c).lower()) for m, c in ALL_CONFIGS]
    first, second = (os.path.join(folders[1], name) for name in rows[0][1:3])
    expected = DistanceMetric().all_methods(loaded(first, 40), loaded(second, 40))
    block = 1 + n * ALL_CONFIGS.index(("sort", False))
    assert_close(torch.tensor([float(rows[block][2])]), expected["sort", False], rtol=1e-6)


def test_different_sizes_are_an_error_naming_both_unless_resized(torch_home, tmp_path, capsys):
    small = save_picture(tmp_path, "small.png", picture(1, size=(40, 30)))
    large = save_picture(tmp_path, "large.png", picture(2, size=48))
    code, out, err = run_distance([small, large], capsys)
    assert code == 1 and not out and "40x30" in err and "48x48" in err and "--size N" in err
    code, out, _ = run_distance([small, large, "--size", "36"], capsys)
    assert code == 0
    assert_close(torch.tensor([float(out)]), DistanceMetric()(loaded(small, 36), loaded(large, 36)), rtol=1e-6)


def test_unreadable_image_is_named_or_skipped(torch_home, folders, tmp_path, capsys):
    broken = tmp_path / "broken"
    for name in ("a.png", "gray.png", "c.png"):
        save_picture(broken, name, picture(7))
    (broken / "gray.png").write_bytes(b"not a png")
    out = tmp_path / "pairs.csv"
    code, _, err = run_distance([broken, folders[0], "--out", out], capsys)
    assert code == 1 and "gray.png" in err and "--skip-bad" in err and not out.exists()
    code, _, err = run_distance([broken, folders[0], "--out", out, "--skip-bad"], capsys)
    assert code == 0 and "skipped: cannot read image" in err and "gray.png" in err
    assert [row[0] for row in read_csv_rows(out)[1:]] == ["a.png"]  # c.png has no pair in folders[0]
    code, out, err = run_distance(["--all-pairs", broken, "--skip-bad"], capsys)
    assert code == 0 and "gray.png" in err and [row[0] for row in read_csv_rows(out)[1:]] == ["a.png", "c.png"]


@pytest.mark.parametrize("make_paths, message", [
    (lambda tmp, dirs: [tmp / "missing.png", os.path.join(dirs[0], "a.png")], "no such file or folder"),
    (lambda tmp, dirs: [dirs[0], os.path.join(dirs[1], "a.png")], "give two image files or two folders"),
    (lambda tmp, dirs: [dirs[0], tmp], "no image files in"),
    (lambda tmp, dirs: [dirs[0], save_picture(tmp / "other", "unrelated.png", picture(3)).rsplit(os.sep, 1)[0]],
     "no image file in common"),
    (lambda tmp, dirs: ["--all-pairs", os.path.join(dirs[0], "a.png")], "takes a folder"),
])
def test_bad_paths_give_a_one_line_error(torch_home, folders, tmp_path, capsys, make_paths, message):
    code, out, err = run_distance(make_paths(tmp_path, folders), capsys)
    assert code == 1 and not out and err.startswith("distance.py: error: ") and message in err
    assert len(err.strip().splitlines()) == 1


def test_metric_errors_reach_the_user_as_one_line(folders, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    for proxy in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(proxy, "http://127.0.0.1:9")  # nothing listens there: no network
    pair = [os.path.join(folder, "a.png") for folder in folders]
    code, _, err = run_distance(pair, capsys)
    assert code == 1 and err.startswith("distance.py: error: ") and "alexnet-owt-7be5be79.pth" in err
    assert len(err.strip().splitlines()) == 1
    bad_lin = tmp_path / "lin.pth"
    bad_lin.write_bytes(b"garbage")
    code, _, err = run_distance([*pair, "--variant", "lin", "--lpips-weights", bad_lin], capsys)
    assert code == 1 and err.startswith("distance.py: error: ") and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("argv, message", [
    (["one.png"], "two image files or two folders"),
    (["a.png", "b.png", "--variant", "lin"], "--lpips-weights"),
    (["a.png", "b.png", "--all-configs", "--method", "sort"], "--all-configs"),
    (["a.png", "b.png", "--plot"], "--plot"),
    (["a.png", "b.png", "--net", "resnet9000"], "unknown network"),
    (["a.png", "b.png", "--size", "0"], "argument --size: must be at least 1, got 0"),
    (["--all-pairs", "dir", "--layer-columns"], "--layer-columns adds columns to the rows of pairs"),
    (["a.png", "b.png", "--variant", "lin"], "official-v0.0 (LPIPS v0.0)"),
    (["a.png", "b.png", "--net", "alex", "l3"], "unknown network"),
])
def test_flag_errors_are_usage_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        distance.main(argv)
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_interrupted_run_leaves_no_output_and_keeps_an_old_file(torch_home, folders, tmp_path, monkeypatch,
                                                                capsys):
    real, calls = distance.batch_distances, []

    def interrupt_on_second_batch(*args):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(distance, "batch_distances", interrupt_on_second_batch)
    fresh, old = tmp_path / "fresh.csv", tmp_path / "old.csv"
    old.write_text("earlier results\n")
    for out in (fresh, old):
        calls.clear()
        code, _, err = run_distance([*folders, "--batch-size", "1", "--out", out], capsys)
        assert code == 130 and "interrupted" in err and len(calls) == 2
    assert not fresh.exists() and old.read_text() == "earlier results\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.csv"]  # no temporary file left


def test_prefetched_hands_on_items_and_errors():
    def failing():
        yield from range(3)
        raise ValueError("decoder broke")

    seen = []
    with pytest.raises(ValueError, match="decoder broke"):
        for item in image_stream.prefetched(failing()):
            seen.append(item)
    assert seen == [0, 1, 2]


def test_command_line_prints_the_number_last_and_imports_no_training_stack(torch_home, folders):
    """The `$(python distance.py a b)` contract, as a user runs it (and what the import pulls in)."""
    pair = [os.path.join(folder, "sub/deeper/c.png") for folder in folders]
    done = subprocess.run([sys.executable, "-X", "importtime", "distance.py", *pair], cwd=ROOT,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "TORCH_HOME": torch_home["home"]})
    assert done.returncode == 0, done.stderr[-2000:]
    expected = DistanceMetric()(loaded(pair[0]), loaded(pair[1]))
    assert_close(torch.tensor([float(done.stdout.splitlines()[-1])]), expected, rtol=1e-6)
    imported = {line.split("|")[-1].strip().split(".")[0] for line in done.stderr.splitlines() if "|" in line}
    assert "metric" in imported and "experiment" not in imported
    assert not imported & {"pytorch_lightning", "lightning", "wandb", "matplotlib", "training"}
