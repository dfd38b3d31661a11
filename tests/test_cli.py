"""What the front doors share: the weights flags and their preflight, one error and exit convention."""
import os
import shutil
import signal
import time
from pathlib import Path
from urllib.error import URLError

import pytest
import torch

import analysis
import distance
import experiment
import feature_map
from cli import atomic_open, run_main
from helpers import make_folder, read_results_csv, read_rows, run_cli
from image_io import load_image
from metric import DistanceMetric
from results import file_identity


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """An empty TORCH_HOME and no network: every download fails as it does without one."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_home"))

    def no_network(url, *args, **kwargs):
        raise URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    monkeypatch.setattr(DistanceMetric, "features", lambda *a: pytest.fail("computed before the weights check"))


@pytest.fixture
def images(tmp_path):
    return make_folder(tmp_path / "images")


def front_doors(images, bapps, out):
    """Each CLI's command line on the same little job, but for its --net flags."""
    pair = [images / "a/tex.png", images / "a/tex_rot90.png"]
    return {
        experiment.main: ["--data-root", bapps, "--no-download", "--out", out / "experiment", "--splits", "jnd",
                          "--num-workers", "0", "--limit", "2"],
        analysis.main: ["--image-dir", images, "--out", out / "analysis", "--method", "spatial", "--channel-norm",
                        "on", "--device", "cpu"],
        feature_map.main: ["--path", pair[0], "--compare", pair[1], "--out", out / "maps", "--max-channels", "2"],
        distance.main: [*pair],
    }


NETS = {experiment.main: ["--net", "alex", "vgg"], analysis.main: ["--net", "alex", "vgg"],
        feature_map.main: ["--network", "vgg"], distance.main: ["--net", "vgg"]}


def test_every_front_door_lists_all_missing_weights_before_computing(offline, images, bapps, tmp_path):
    for main, argv in front_doors(images, bapps, tmp_path / "out").items():
        code, out, err = run_cli(main, argv + NETS[main])
        assert code == 1 and err.count("\n") == 1, err
        assert "vgg16-397923af.pth (vgg, https://download.pytorch.org/models/vgg16-397923af.pth)" in err
        if "alex" in NETS[main]:
            assert "missing weights files alexnet-owt-7be5be79.pth (alex, https://" in err
        assert str(tmp_path / "empty_home" / "hub" / "checkpoints") in err
        assert "--weights-dir DIR" in err and "--random-init" in err and "weights=" not in err
    assert not (tmp_path / "out").exists()


def test_a_missing_linear_weights_file_is_named_too(offline, bapps, tmp_path):
    argv = ["--data-root", bapps, "--no-download", "--variant", "lin", "--lpips-weights", tmp_path / "lin.pth"]
    code, _, err = run_cli(experiment.main, argv)
    assert code == 1 and "alexnet-owt-7be5be79.pth" in err
    assert f"no such linear-weights file {tmp_path / 'lin.pth'}" in err


def test_weights_dir_and_random_init_mean_the_same_in_every_front_door(weights_home, images, bapps, tmp_path,
                                                                       monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_home"))  # nothing but the flags gives weights
    folder = os.path.dirname(weights_home["alex"])
    pair = [images / "a/tex.png", images / "a/tex_rot90.png"]
    x0, x1 = (load_image(path)[None] for path in pair)
    torch.manual_seed(3)
    random_alex = DistanceMetric("alex", pretrained=False)
    expected = {"--weights-dir": DistanceMetric("alex", weights=weights_home["alex"])(x0, x1).item(),
                "--random-init": random_alex(x0, x1).item()}
    for flags, key in ((["--weights-dir", folder], "--weights-dir"),
                       (["--random-init", "--seed", "3"], "--random-init")):
        out = tmp_path / key
        for main, argv in front_doors(images, bapps, out).items():
            code, stdout, err = run_cli(main, argv + flags)
            assert code == 0, (main, err)
        assert float(stdout.splitlines()[-1]) == pytest.approx(expected[key], rel=1e-6)
        row = next(r for r in read_rows(out / "analysis" / "results.csv") if r["variant"] == "a/tex_rot90.png")
        assert float(row["distance"]) == pytest.approx(expected[key], rel=1e-5)
        weights = {r["weights"] for r in read_results_csv(out / "experiment")}
        assert weights == {"random:seed3" if key == "--random-init" else file_identity(weights_home["alex"])}
        assert len(list((out / "maps").glob("*.png"))) == 6


@pytest.mark.parametrize("seed", ["-1", "4294967296", "three"])
def test_a_seed_numpy_cannot_take_is_a_usage_error(seed):
    for main in (experiment.main, analysis.main, distance.main):
        code, _, err = run_cli(main, ["--seed", seed, *(["a", "b"] if main is distance.main else [])])
        assert code == 2 and "argument --seed" in err


def test_sigterm_ends_a_run_as_ctrl_c_does_leaving_no_partial_file(tmp_path, capsys):
    def work():
        with atomic_open(tmp_path / "out.csv", "w") as file:
            file.write("half of the rows")
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(10)

    before = signal.getsignal(signal.SIGTERM)
    assert run_main("prog.py", work, interrupted="interrupted: nothing was written") == 130
    assert capsys.readouterr().err == "prog.py: interrupted: nothing was written\n"
    assert os.listdir(tmp_path) == [] and signal.getsignal(signal.SIGTERM) is before


def test_user_errors_are_one_line_and_other_errors_are_not_hidden(capsys):
    def bad():
        raise FileNotFoundError("no such file x.png:\nlook elsewhere")

    assert run_main("prog.py", bad) == 1
    assert capsys.readouterr().err == "prog.py: error: no such file x.png: look elsewhere\n"
    with pytest.raises(ZeroDivisionError):  # a bug is a bug: its traceback is shown
        run_main("prog.py", lambda: 1 / 0)


def test_the_synthetic_tree_runs_end_to_end_and_says_what_it_is(torch_home, tmp_path, capsys):
    from dataset_collector import main as collector_main
    tree = tmp_path / "dry"
    assert collector_main(["--synthetic", str(tree), "--examples", "3"]) == 0
    assert "A synthetic tree in the BAPPS layout" in (tree / "README.txt").read_text()
    assert f"python experiment.py --data-root {tree}" in capsys.readouterr().out
    assert collector_main(["--synthetic", str(tree)]) == 1  # never written over
    assert "not an empty folder" in capsys.readouterr().err
    assert experiment.main(["--data-root", str(tree), "--no-download", "--out", str(tmp_path / "out"),
                            "--num-workers", "0"]) == 0
    rows = read_results_csv(tmp_path / "out")
    assert len(rows) == 6 * 2 + 2 and {r["n"] for r in rows} == {"3"}
    assert {r["data"].split(":")[0] for r in rows} == {"synthetic"}
    table = (tmp_path / "out" / "results.md").read_text()
    assert "| all | synthetic |" in table and "random, meaningless scores" in table
    shutil.rmtree(tree)
    assert collector_main(["--synthetic", str(tree / "new" / "sub")]) == 0 and Path(tree / "new" / "sub").is_dir()
