"""analysis.py: its distances against the metric on independently loaded pairs, its rules, files and errors."""
import csv
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

import analysis
from cli import write_atomic
from helpers import (CASES, REFS, assert_close, cli_error, load_dropping_alpha, load_white, make_folder, read_rows,
                     run_cli, save_array, texture, usage_error, write_manifest)
from metric import ALL_CONFIGS, DistanceMetric

ROOT = Path(__file__).resolve().parents[1]
ATOL = 1e-7  # distances are float32 sums: an image against itself gives up to ~1e-12, not 0


@pytest.fixture(scope="module")
def synthetic(weights_home, tmp_path_factory):
    """One in-process run of analysis.py over the synthetic folder with AlexNet: (folder, out, rows, stdout)."""
    folder = make_folder(tmp_path_factory.mktemp("images"))
    out = tmp_path_factory.mktemp("out")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TORCH_HOME", weights_home["home"])
        analysis.main(["--image-dir", str(folder), "--out", str(out), "--net", "alexnet", "--device", "cpu"])
    return folder, out, read_rows(out / "results.csv")


def test_rows_columns_and_rules(synthetic, weights_home):
    folder, _, rows = synthetic
    assert list(rows[0]) == [*analysis.RESULT_COLUMNS, *(f"ref:{Path(r).name}" for r in REFS)]
    sha = hashlib.sha256(Path(weights_home["alex"]).read_bytes()).hexdigest()[:8]
    assert {(r["layers"], r["weights"]) for r in rows} == {("1-4-7-9-11", f"alexnet-owt-7be5be79.pth@{sha}")}
    assert len({r["images"] for r in rows}) == 1 and rows[0]["images"].startswith(f"{folder.name}:")
    assert len(rows) == len(ALL_CONFIGS) * len(CASES)
    assert {(r["net"], r["method"], r["channel_norm"]) for r in rows} == {
        ("alex", m, str(n).lower()) for m, n in ALL_CONFIGS}
    for row in rows:
        refs = {ref: float(row[f"ref:{Path(ref).name}"]) for ref in REFS}
        expected = row["rule"].removeprefix("closer_than:") if row["rule"] != "closer_than_refs" \
            else min(refs, key=refs.get)
        assert row["threshold_image"] == expected
        if row["rule"] == "closer_than_refs":
            assert float(row["threshold_distance"]) == min(refs.values())
        assert row["success"] == str(float(row["distance"]) < float(row["threshold_distance"])).lower()


def test_distances_equal_the_metric_on_independently_loaded_pairs(synthetic, torch_home):
    folder, _, rows = synthetic
    metrics = {(m, n): DistanceMetric("alex", method=m, channel_norm=n) for m, n in ALL_CONFIGS}
    for row in rows:
        metric = metrics[row["method"], row["channel_norm"] == "true"]
        x = load_white(folder / row["image"])
        partners = {"distance": row["variant"], "threshold_distance": row["threshold_image"],
                    **{f"ref:{Path(r).name}": r for r in REFS}}
        for column, partner in partners.items():
            with torch.no_grad():
                expected = metric(x, load_white(folder / partner)).item()
            assert_close(float(row[column]), expected, atol=ATOL)


def test_identical_variant_is_closer_than_every_reference(synthetic):
    _, _, rows = synthetic
    same = [r for r in rows if r["category"] == "same"]
    assert len(same) == len(ALL_CONFIGS)
    for row in same:
        assert float(row["distance"]) == 0.0 and row["success"] == "true"
        assert all(float(row[f"ref:{Path(r).name}"]) > 0 for r in REFS)


def test_transparent_pixels_are_composited_over_white(synthetic, torch_home):
    folder, _, rows = synthetic
    x = load_white(folder / "b/pic.png")
    white, dropped = load_white(folder / "b/pic_alpha.png"), load_dropping_alpha(folder / "b/pic_alpha.png")
    assert (dropped[0, :, :, 0].T == torch.tensor([1.0, 0.0, 1.0])).all()  # the hidden magenta is really there
    for row in (r for r in rows if r["category"] == "alpha"):
        metric = DistanceMetric("alex", method=row["method"], channel_norm=row["channel_norm"] == "true")
        with torch.no_grad():
            composited, without_alpha = metric(x, white).item(), metric(x, dropped).item()
        assert_close(float(row["distance"]), composited, atol=ATOL)
        assert without_alpha > 1e-3 and abs(float(row["distance"]) - without_alpha) > 0.5 * without_alpha


def test_summary_counts_successes_per_category_and_configuration(synthetic):
    _, out, rows = synthetic
    summary = read_rows(out / "summary.csv")
    assert list(summary[0]) == ["net", "layers", "weights", "images", "method", "channel_norm", "this_run", "same",
                                "rotate", "stain", "alpha", "total"]
    assert len(summary) == len(ALL_CONFIGS) and {line["this_run"] for line in summary} == {"computed"}
    assert {(line["layers"], line["weights"]) for line in summary} == {(rows[0]["layers"], rows[0]["weights"])}
    for line in summary:
        mine = [r for r in rows if (r["net"], r["method"], r["channel_norm"])
                == (line["net"], line["method"], line["channel_norm"])]
        for column in ("same", "rotate", "stain", "alpha", "total"):
            cases = [r for r in mine if column in ("total", r["category"])]
            assert line[column] == f"{sum(r['success'] == 'true' for r in cases)}/{len(cases)}"
    markdown = (out / "summary.md").read_text().splitlines()
    assert markdown[0] == ("| net | layers | weights | images | method | channel_norm | this_run | same | rotate | "
                           "stain | alpha | total |")
    assert markdown[2] == "| " + " | ".join(summary[0].values()) + " |" and len(markdown) == 2 + len(summary)
    with Image.open(out / "summary.png") as picture:
        assert picture.format == "PNG" and picture.width > 200


def lines_of(path, method):
    """The results.csv lines (as text) of one method."""
    return [line for line in Path(path).read_text().splitlines()[1:] if line.split(",")[2] == method]


def counting_features(monkeypatch):
    """A list that grows by the batch size of every backbone pass."""
    passed, features = [], DistanceMetric.features
    monkeypatch.setattr(DistanceMetric, "features", lambda self, x: passed.append(len(x)) or features(self, x))
    return passed


def test_runs_accumulate_reuse_and_overwrite(synthetic, torch_home, tmp_path, monkeypatch):
    folder, _, first_rows = synthetic
    out = tmp_path / "out"
    passed = counting_features(monkeypatch)
    analysis.main(analysis_args(folder, out, "--method", "sort", "--channel-norm", "off"))
    sort_lines = lines_of(out / "results.csv", "sort")
    assert len(sort_lines) == len(CASES) and passed
    analysis.main(analysis_args(folder, out, "--method", "mean", "sort", "--channel-norm", "off"))
    rows = read_rows(out / "results.csv")
    assert lines_of(out / "results.csv", "sort") == sort_lines  # kept byte for byte, not recomputed
    assert [r["method"] for r in rows] == ["sort"] * len(CASES) + ["mean"] * len(CASES)
    assert rows == [r for r in first_rows if r["channel_norm"] == "false" and r["method"] in ("sort", "mean")]
    passed.clear()
    code, stdout, _ = run_cli(analysis.main, analysis_args(folder, out, "--method", "mean", "sort",
                                                           "--channel-norm", "off"))
    assert code == 0 and passed == [] and read_rows(out / "results.csv") == rows
    assert stdout.count("| reused |") == 2 and "computed" not in stdout
    cells = sort_lines[1].split(",")
    edited = ",".join([*cells[:8], "9.5", *cells[9:]])
    (out / "results.csv").write_text((out / "results.csv").read_text().replace(sort_lines[1], edited))
    figures, figure_png = [], analysis.figure_png
    monkeypatch.setattr(analysis, "figure_png", lambda fig, **k: figures.append(fig) or figure_png(fig, **k))
    analysis.main(analysis_args(folder, out, "--method", "sort", "--channel-norm", "off", "--overwrite"))
    assert passed and read_rows(out / "results.csv") == rows  # the edited row recomputed, mean's kept
    summary = read_rows(out / "summary.csv")
    assert [(s["method"], s["this_run"]) for s in summary] == [("sort", "computed"), ("mean", "earlier")]
    (fig,) = figures
    labels = fig.axes[0].get_yticklabels()
    assert "Flaw analysis" in fig._suptitle.get_text()
    assert [t.get_text() for t in labels] == [f"alex [1-4-7-9-11] {rows[0]['weights']} | {m}, no norm"
                                              for m in ("sort", "mean")]
    assert [t.get_fontweight() for t in labels] == ["bold", "normal"]


def test_other_images_or_weights_are_computed_anew_beside_the_old_rows(synthetic, torch_home, tmp_path,
                                                                       monkeypatch):
    folder, _, first_rows = synthetic
    out, changed = tmp_path / "out", tmp_path / "images"
    shutil.copytree(folder, changed)
    analysis.main(analysis_args(changed, out, "--method", "sort"))
    passed = counting_features(monkeypatch)
    save_array(changed, "a/tex_rot90.png", texture(5))  # same name and size, other pixels
    analysis.main(analysis_args(changed, out, "--method", "sort"))
    assert passed
    rows = read_rows(out / "results.csv")
    old, new = rows[:len(CASES)], rows[len(CASES):]
    assert len(new) == len(CASES) and old[0]["images"] != new[0]["images"]
    rotated = [(r["variant"], r["distance"]) for r in (old[1], new[1])]
    assert rotated[0][0] == rotated[1][0] == "a/tex_rot90.png" and rotated[0][1] != rotated[1][1]
    passes = []
    for seed in ("1", "2", "1"):
        passed.clear()
        analysis.main(analysis_args(changed, out, "--method", "sort", "--random-init", "--seed", seed))
        passes.append(len(passed))
    assert passes[0] == passes[1] > 0 and passes[2] == 0  # seed 1 computed, seed 2 too, then seed 1 reused
    weights = [r["weights"] for r in read_rows(out / "results.csv")]
    assert weights[2 * len(CASES):] == ["random:seed1"] * len(CASES) + ["random:seed2"] * len(CASES)


def test_an_old_results_file_is_read_kept_and_not_reused(synthetic, torch_home, tmp_path, monkeypatch):
    folder, _, first_rows = synthetic
    out = tmp_path / "out"
    out.mkdir()
    old = [{k: v for k, v in r.items() if k not in ("layers", "weights", "images")} for r in first_rows
           if r["method"] == "mean"]  # as analysis.py wrote it before those columns
    with open(out / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, list(old[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(old)
    passed = counting_features(monkeypatch)
    analysis.main(analysis_args(folder, out))
    rows = read_rows(out / "results.csv")
    assert passed and len(rows) == len(old) + len(CASES)
    assert rows[:len(old)] == [r | {"layers": "1-4-7-9-11", "weights": "unknown", "images": "unknown"} for r in old]
    assert rows[len(old):] == [r for r in first_rows if (r["method"], r["channel_norm"]) == ("mean", "true")]
    (out / "results.csv").write_text("path,distance\nx,1\n")
    cli_error(analysis.main, analysis_args(folder, out), r"results.csv has the columns path,distance.*move it away")


def test_a_run_writing_meanwhile_keeps_its_rows(synthetic, torch_home, tmp_path, monkeypatch):
    folder, _, _ = synthetic
    out = tmp_path / "out"
    distances = analysis.pair_distances

    def another_run_finishes_first(*args, **kwargs):
        monkeypatch.setattr(analysis, "pair_distances", distances)
        analysis.main(analysis_args(folder, out, "--method", "spatial"))
        return distances(*args, **kwargs)

    monkeypatch.setattr(analysis, "pair_distances", another_run_finishes_first)
    analysis.main(analysis_args(folder, out, "--method", "sort"))
    assert [r["method"] for r in read_rows(out / "results.csv")] == ["spatial"] * len(CASES) + ["sort"] * len(CASES)


def test_each_image_goes_through_the_backbone_once(synthetic, torch_home, tmp_path, monkeypatch):
    folder, _, first_rows = synthetic
    passed = []
    features = DistanceMetric.features
    monkeypatch.setattr(DistanceMetric, "features", lambda self, x: passed.append(len(x)) or features(self, x))
    analysis.main(["--image-dir", str(folder), "--out", str(tmp_path), "--net", "alex", "--batch-size", "3"])
    distinct = {p for case in CASES for p in (case[1], case[2], case[3].removeprefix("closer_than:"))} - {
        "closer_than_refs"}
    assert sum(passed) == len(distinct | set(REFS)) and max(passed) <= 3
    for row, first in zip(read_rows(tmp_path / "results.csv"), first_rows, strict=True):
        assert_close(float(row["distance"]), float(first["distance"]), atol=ATOL)


def test_weights_dir_replaces_torch_home(synthetic, weights_home, tmp_path, monkeypatch):
    folder, _, first_rows = synthetic
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    checkpoints = os.path.dirname(weights_home["alex"])
    out = tmp_path / "out"
    analysis.main(["--image-dir", str(folder), "--out", str(out), "--net", "alex", "--method", "mean",
                   "--weights-dir", checkpoints, "--device", "cpu"])
    assert read_rows(out / "results.csv") == [r for r in first_rows if r["method"] == "mean"]
    cli_error(analysis.main, ["--image-dir", folder, "--out", out, "--net", "squeeze", "--weights-dir", tmp_path],
              "squeezenet1_1-b8a52dc0.pth")


@pytest.mark.parametrize("change, message", [
    (lambda rows: rows + [("rotate", "a/tex.png", "a/missing.png", "closer_than_refs")],
     r"line 6: variant .*missing"),
    (lambda rows: [rows[0][:3] + ("farther_than_refs",)], r"line 2: unknown rule 'farther_than_refs'"),
    (lambda rows: [rows[2][:3] + ("closer_than:a/gone.png",)], r"line 2: other .*a/gone.png"),
    (lambda rows: [("kind", "image", "variant", "rule")] + rows, r"lacks the columns \['category'\]"),
])
def test_bad_manifest_names_the_row_and_keeps_old_outputs(tmp_path, change, message):
    folder = make_folder(tmp_path / "images")
    rows = change(list(CASES))
    if rows[0][0] == "kind":
        with open(folder / "manifest.csv", "w", newline="") as f:
            csv.writer(f).writerows(rows)
    else:
        write_manifest(folder, rows)
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.csv").write_text("earlier results\n")
    error = cli_error(analysis.main, ["--image-dir", folder, "--out", out, "--net", "alex"], message)
    assert str(folder / "manifest.csv") in error
    assert os.listdir(out) == ["results.csv"] and (out / "results.csv").read_text() == "earlier results\n"


def test_images_of_different_sizes_need_size(torch_home, tmp_path):
    folder = make_folder(tmp_path / "images")
    save_array(folder, "a/tex_rot90.png", texture(3, size=40))
    cli_error(analysis.main, ["--image-dir", folder, "--out", tmp_path / "out", "--net", "alex"], r"\(40, 40\).*--size")
    analysis.main(["--image-dir", str(folder), "--out", str(tmp_path / "out"), "--net", "alex", "--size", "40",
                   "--method", "spatial", "--channel-norm", "on"])
    assert len(read_rows(tmp_path / "out" / "results.csv")) == len(CASES)


def test_write_atomic_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "results.csv"
    path.write_bytes(b"old")
    with pytest.raises(TypeError):
        write_atomic(str(path), 12345)
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["results.csv"]


@pytest.fixture(scope="module")
def real_run(weights_home, tmp_path_factory):
    """`python analysis.py` over the project's images/ for all nets, random weights under TORCH_HOME."""
    out = tmp_path_factory.mktemp("logs")
    env = {**os.environ, "TORCH_HOME": weights_home["home"]}
    done = subprocess.run([sys.executable, "analysis.py", "--out", str(out), "--device", "cpu"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return out, read_rows(out / "results.csv"), done.stdout


def test_real_images_all_configurations(real_run):
    out, rows, stdout = real_run
    cases = read_rows(ROOT / "images" / "manifest.csv")
    assert len(rows) == 3 * 5 * 2 * len(cases)
    configs = {(r["net"], r["method"], r["channel_norm"]) for r in rows}
    assert configs == {(net, m, str(n).lower()) for net in ("alex", "squeeze", "vgg") for m, n in ALL_CONFIGS}
    refs = sorted(p.name for p in (ROOT / "images" / "ref").iterdir())
    assert [c for c in rows[0] if c.startswith("ref:")] == [f"ref:{name}" for name in refs]
    summary = read_rows(out / "summary.csv")
    assert len(summary) == 30 and set(summary[0]) >= {"rotate", "translate", "invert", "color_stain", "total"}
    assert all(line["total"].endswith(f"/{len(cases)}") for line in summary)
    assert ("| net | layers | weights | images | method | channel_norm | this_run | rotate | translate | invert | "
            "color_stain | total |") in stdout
    with Image.open(out / "summary.png") as picture:
        assert picture.format == "PNG"


@pytest.mark.parametrize("net", ("alex", "squeeze", "vgg"))
def test_real_image_distances_equal_the_metric(real_run, torch_home, net):
    """Transparent (RGBA, LA, palette) and colour-stain cases, every configuration, recomputed independently."""
    _, rows, _ = real_run
    picked = ("rotate/leaf_rot90.png", "invert/yin_yang_inv.png", "translate/mushroom_dy3.png",
              "color_stain/wood_global.png")
    rows = [r for r in rows if r["net"] == net and r["variant"] in picked]
    assert len(rows) == len(picked) * len(ALL_CONFIGS)
    images = ROOT / "images"
    pairs = {(r["image"], p) for r in rows for p in (r["variant"], r["threshold_image"])}
    with torch.no_grad():
        metric = DistanceMetric(net)
        expected = {pair: metric.all_methods(*(load_white(images / p) for p in pair)) for pair in pairs}
        first = rows[0]
        assert (first["method"], first["channel_norm"]) == ("spatial", "true")
        pair = (load_white(images / first[c]) for c in ("image", "variant"))
        assert_close(float(first["distance"]), metric(*pair).item(), atol=ATOL)
    for row in rows:
        config = (row["method"], row["channel_norm"] == "true")
        assert_close(float(row["distance"]), expected[row["image"], row["variant"]][config].item(), atol=ATOL)
        threshold = expected[row["image"], row["threshold_image"]][config].item()
        assert_close(float(row["threshold_distance"]), threshold, atol=ATOL)


def analysis_args(folder, out, *extra):
    return [str(a) for a in ("--image-dir", folder, "--out", out, "--net", "alex", "--method", "mean",
                             "--channel-norm", "on", "--device", "cpu", *extra)]


def test_manifest_with_a_bom_is_read_and_a_non_utf8_one_is_a_clear_error(tmp_path):
    folder = make_folder(tmp_path / "images")
    plain = analysis.read_manifest(str(folder))
    text = (folder / "manifest.csv").read_text()
    (folder / "manifest.csv").write_bytes(b"\xef\xbb\xbf" + text.encode())  # as Excel's "CSV UTF-8" saves it
    assert analysis.read_manifest(str(folder)) == plain
    (folder / "manifest.csv").write_bytes(text.replace("same", "même").encode("latin-1"))
    with pytest.raises(analysis.AnalysisError, match=r"manifest .* is not UTF-8 text \(it has the byte 0xea\)"):
        analysis.read_manifest(str(folder))


def test_duplicated_case_is_reported_with_both_lines(tmp_path):
    folder = make_folder(tmp_path / "images")
    write_manifest(folder, CASES + [CASES[1]])
    with pytest.raises(analysis.AnalysisError, match=r"line 6 repeats the case of line 3 \(rotate,a/tex.png,"):
        analysis.read_manifest(str(folder))


def test_a_path_spelled_another_way_is_the_same_case_and_a_rule_needs_another_variant(tmp_path):
    folder = make_folder(tmp_path / "images")
    write_manifest(folder, CASES + [("rotate", "./a/tex.png", "a//tex_rot90.png", "closer_than_refs")])
    with pytest.raises(analysis.AnalysisError, match=r"line 6 repeats the case of line 3 \(rotate,a/tex.png,"):
        analysis.read_manifest(str(folder))
    write_manifest(folder, CASES + [("stain", "a/tex.png", "a/tex_rot90.png", "closer_than:./a/tex_rot90.png")])
    with pytest.raises(analysis.AnalysisError, match=r"line 6: rule 'closer_than:a/tex_rot90.png' compares the "
                                                     r"variant 'a/tex_rot90.png' with itself"):
        analysis.read_manifest(str(folder))


def test_unwritable_out_is_refused_before_any_computation(torch_home, tmp_path, monkeypatch):
    folder = make_folder(tmp_path / "images")
    monkeypatch.setattr(DistanceMetric, "features", lambda *a: pytest.fail("computed before checking --out"))
    (tmp_path / "a_file").write_text("")
    cli_error(analysis.main, analysis_args(folder, tmp_path / "a_file" / "logs"),
              r"^analysis.py: error: --out .*a_file/logs: .*a_file is a file")
    (tmp_path / "out" / "summary.png").mkdir(parents=True)
    cli_error(analysis.main, analysis_args(folder, tmp_path / "out"), r"summary.png is a folder")


def test_outputs_are_written_all_or_nothing(torch_home, tmp_path, monkeypatch):
    folder = make_folder(tmp_path / "images")
    out = tmp_path / "out"
    analysis.main(analysis_args(folder, out))
    earlier = {name: (out / name).read_bytes() for name in analysis.OUTPUTS}
    write = analysis.write_atomic

    def disk_full_at_summary_md(path, data):
        if os.path.basename(path) == "summary.md":
            raise OSError(28, "No space left on device")
        write(path, data)

    monkeypatch.setattr(analysis, "write_atomic", disk_full_at_summary_md)
    cli_error(analysis.main, analysis_args(folder, out, "--method", "sort"), "No space left on device")
    assert sorted(os.listdir(out)) == sorted(analysis.OUTPUTS)
    assert all((out / name).read_bytes() == data for name, data in earlier.items())


def test_ctrl_c_is_one_line(torch_home, tmp_path, monkeypatch):
    folder = make_folder(tmp_path / "images")
    monkeypatch.setattr(analysis, "pair_distances", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    code, _, err = run_cli(analysis.main, analysis_args(folder, tmp_path / "out"))
    assert code == 130
    assert err == f"analysis.py: interrupted; nothing was written to {tmp_path / 'out'}\n"
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("flags, message", [
    (["--device", "mps"], "argument --device: mps: MPS (Apple GPU) is not available here"),
    (["--device", "meta"], "argument --device: meta: meta devices are not supported"),
    (["--size", "0"], "argument --size: must be at least 1, got 0"),
    (["--size", "-3"], "argument --size: must be at least 1, got -3"),
])
def test_bad_device_or_size_is_a_usage_error(flags, message):
    assert message in usage_error(analysis.main, flags)


def test_damaged_weights_and_refused_images_are_one_line_errors(weights_home, tmp_path, monkeypatch):
    folder = make_folder(tmp_path / "images")
    weights = tmp_path / "weights" / "alexnet-owt-7be5be79.pth"
    weights.parent.mkdir()
    weights.write_bytes(b"<html>not found</html>")
    cli_error(analysis.main, analysis_args(folder, tmp_path / "out", "--weights-dir", weights.parent),
              rf"^analysis.py: error: cannot read weights file {weights} .*delete it")
    # FeatureExtractor's refusal of an image smaller than the network takes is a ValueError
    monkeypatch.setenv("TORCH_HOME", weights_home["home"])
    monkeypatch.setattr(DistanceMetric, "features", lambda *a: (_ for _ in ()).throw(
        ValueError("images of 8x8 pixels are smaller than alex takes: at least 31x31")))
    cli_error(analysis.main, analysis_args(folder, tmp_path / "out", "--size", "8"),
              r"^analysis.py: error: images of 8x8 pixels .* at least 31x31$")
    assert not (tmp_path / "out").exists()
