"""distance.py's outputs: never an input file nor each other, non-UTF-8 file names in the CSV, batches sized by
their own images, SIGTERM leaving no partial or temporary file, --skip-bad over --all-pairs."""
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import distance
import image_stream
from helpers import picture, read_csv_rows, run_distance, save_picture

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def no_compute(monkeypatch):
    """Fail the test if distance.py gets as far as loading a network."""
    def load_metrics(*args):
        raise AssertionError("the output check must come before any network loads")
    monkeypatch.setattr(distance, "load_metrics", load_metrics)


def images_in(folder, names=("a.png", "b.png", "c.png")):
    return [save_picture(folder, name, picture(k, size=32)) for k, name in enumerate(names)]


@pytest.mark.parametrize("case", ["second file", "link to a file", "file in a folder", "file of all pairs"])
def test_out_never_names_an_input_file(tmp_path, capsys, no_compute, case):
    a, b, c = images_in(tmp_path / "dir")
    link = tmp_path / "link.csv"
    link.symlink_to(c)
    argv, victim = {"second file": ([a, b, "--out", b], b),
                    "link to a file": ([a, c, "--out", link], c),
                    "file in a folder": ([tmp_path / "dir", tmp_path / "dir", "--out", link], c),
                    "file of all pairs": (["--all-pairs", tmp_path / "dir", "--out", a], a)}[case]
    before = Path(victim).read_bytes()
    code, out, err = run_distance(argv, capsys)
    assert code == 1 and not out
    assert f"is the input file {victim}: writing would replace it; write to a file that is not an input" in err
    assert Path(victim).read_bytes() == before


def test_plot_never_names_out(tmp_path, capsys, no_compute):
    images_in(tmp_path / "dir")
    out = tmp_path / "m.csv"
    code, _, err = run_distance(["--all-pairs", tmp_path / "dir", "--out", out, "--plot", tmp_path / "." / "m.csv"],
                                capsys)
    assert code == 1 and "is the --out file: the picture would replace the CSV; give --plot another" in err
    with pytest.raises(SystemExit) as exit_:
        distance.main(["--all-pairs", str(tmp_path / "dir"), "--out", str(tmp_path / "m.png"), "--plot"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and f"which is --out {tmp_path / 'm.png'} itself: name the CSV" in err
    code, _, err = run_distance(["--all-pairs", tmp_path / "dir", "--out", tmp_path / "dir"], capsys)
    assert code == 1 and f"--out {tmp_path / 'dir'} is a folder" in err
    assert sorted(os.listdir(tmp_path)) == ["dir"]


def test_a_file_name_that_is_not_utf8_is_written_as_its_bytes(torch_home, tmp_path, capsys):
    name = b"caf\xe9.png"  # Latin-1, not UTF-8
    for folder in ("dir0", "dir1"):
        (tmp_path / folder).mkdir()
        picture(0 if folder == "dir0" else 1, size=32).save(os.fsencode(tmp_path / folder) + b"/" + name)
    save_picture(tmp_path / "dir0", "b.png", picture(2, size=32))
    out = tmp_path / "pairs.csv"
    code, _, err = run_distance([tmp_path / "dir0", tmp_path / "dir0", "--out", out], capsys)
    assert code == 0, err
    assert out.read_bytes().splitlines()[2].startswith(name + b"," + name + b",0,")
    code, _, err = run_distance(["--all-pairs", tmp_path / "dir0", "--out", out], capsys)
    assert code == 0, err
    rows = read_csv_rows(out.read_text(encoding="utf-8", errors="surrogateescape"))
    assert rows[0][:3] == ["path", "b.png", os.fsdecode(name)] and os.fsencode(rows[2][0]) == name


def test_skip_bad_over_all_pairs_skips_an_image_of_another_size(torch_home, tmp_path, capsys):
    images_in(tmp_path / "dir", ("a.png", "b.png", "c.png"))
    odd = save_picture(tmp_path / "dir", "b2.png", picture(5, size=(48, 40)))
    code, _, err = run_distance(["--all-pairs", tmp_path / "dir"], capsys)
    assert code == 1 and "48x40" in err and "--skip-bad" in err
    code, out, err = run_distance(["--all-pairs", tmp_path / "dir", "--skip-bad"], capsys)
    first = tmp_path / "dir" / "a.png"
    assert code == 0 and f"skipped: images of different sizes: {first} is 32x32, {odd} is 48x40" in err
    assert [row[0] for row in read_csv_rows(out)] == ["path", "a.png", "b.png", "c.png"]


def test_batches_are_sized_by_their_own_images_not_the_first(torch_home, tmp_path, capsys, monkeypatch):
    for folder in ("dir0", "dir1"):
        save_picture(tmp_path / folder, "a.png", picture(0, size=32))
        for k in range(5):
            save_picture(tmp_path / folder, f"b{k}.png", picture(k, size=256))
    real, batches = distance.image_batches, []

    def recorded(*args, **kwargs):
        for groups, errors in real(*args, **kwargs):
            batches.append([len(indices) * x0.shape[-2] * x0.shape[-1] for indices, (x0, _) in groups])
            yield groups, errors

    monkeypatch.setattr(distance, "image_batches", recorded)
    pixel_metric = ["--net", "l2", "--colorspace", "RGB"]  # cheap: batching is the same for every metric
    code, _, err = run_distance([tmp_path / "dir0", tmp_path / "dir1", *pixel_metric], capsys)
    assert code == 0, err
    assert batches == [[32 * 32, 3 * 256 * 256], [2 * 256 * 256]]  # 204,800 pixels per image of a pair at most
    assert all(sum(batch) <= image_stream.PIXELS_PER_IMAGE_BATCH for batch in batches)
    batches.clear()
    assert run_distance([tmp_path / "dir0", tmp_path / "dir1", *pixel_metric, "--batch-size", "2"], capsys)[0] == 0
    assert batches == [[32 * 32, 256 * 256], [2 * 256 * 256], [2 * 256 * 256]]


def test_sigterm_exits_130_leaving_no_output_nor_temporary_file(torch_home, tmp_path):
    for folder in ("dir0", "dir1"):
        for k in range(40):
            save_picture(tmp_path / folder, f"{k:02d}.png", picture(k, size=256))  # seconds of work after 1/40
    out = tmp_path / "out" / "pairs.csv"
    out.parent.mkdir()
    run = subprocess.Popen([sys.executable, "distance.py", tmp_path / "dir0", tmp_path / "dir1", "--out", out,
                            "--batch-size", "1"], cwd=ROOT, stderr=subprocess.PIPE,
                           text=True, env={**os.environ, "TORCH_HOME": torch_home["home"]})
    seen = ""
    while " 1/40 " not in seen:  # a pair is done: the run is inside --out's temporary file
        char = run.stderr.read(1)
        assert char, seen
        seen += char
    assert os.listdir(out.parent) == [f"pairs.csv.{run.pid}.tmp"], seen
    run.send_signal(signal.SIGTERM)
    _, err = run.communicate(timeout=60)
    assert run.returncode == 130 and "distance.py: interrupted: no output file was written" in err, seen + err
    assert os.listdir(out.parent) == [], seen + err
