"""LPIPS training: it learns (recovery of a hidden metric), follows the recipe, resumes, exports.

All runs use random backbone weights (the torch_home fixture) and synthetic triplets judged
by a hidden metric on the same backbone (tests/helpers.py).
"""
import glob
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import lpips
import pytest
import pytorch_lightning as pl
import torch

import experiment
import training
from experiment import main
from helpers import (RECOVERY, Triplets, agreement, assert_close, cli_error, hidden_metric, judged_triplets,
                     lpips_reference, read_results_csv, read_rows, read_set, run_cli, usage_error, values)
from metric import ALL_CONFIGS, PARTS, DistanceMetric, score_2afc
from training import LPIPSTraining, RankingHead, train_version

ROOT = Path(__file__).resolve().parents[1]
QUIET = {"logger": None, "progress": False}
NAME = "alex_lin_spatial_cn_imagenet"  # the folder of the default configuration's versions


class Watch(pl.Callback):
    """Records the learning rate of every step and checks the linear weights after every step."""

    def __init__(self):
        self.lrs, self.epochs = [], []

    def on_train_epoch_start(self, trainer, module):
        self.epochs.append(trainer.current_epoch)

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        lowest = min(p.min().item() for p in module.metric.lins.parameters())
        assert lowest >= 0, f"a linear weight is {lowest} after step {trainer.global_step}"


class Interrupt(Exception):
    pass


class StopAtEpoch(pl.Callback):
    """Interrupts training when `epoch` starts (the previous epoch's checkpoint is on disk)."""

    def __init__(self, epoch):
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, module):
        if trainer.current_epoch == self.epoch:
            raise Interrupt


@pytest.fixture
def tiny(torch_home):
    """20 judged triplets of 32x32 images."""
    return Triplets(judged_triplets(hidden_metric("alex"), 20, size=32, seed=3))


def lin_weights(module):
    return torch.cat([p.detach().flatten() for p in module.metric.lins.parameters()])


def test_ranking_head_and_loss_equal_lpips(torch_home):
    """Our head (logits, BCE with logits) is LPIPS's Dist2LogitLayer + sigmoid + BCERankingLoss."""
    torch.manual_seed(0)
    ours, theirs = RankingHead(), lpips.BCERankingLoss()
    theirs.net.load_state_dict(ours.state_dict())
    d0, d1, judge = torch.rand(6) * 3, torch.rand(6) * 3, torch.rand(6)
    with torch.no_grad():
        expected = theirs.net(d0.view(-1, 1, 1, 1), d1.view(-1, 1, 1, 1)).flatten()
        assert_close(torch.sigmoid(ours(d0, d1)), expected)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(ours(d0, d1), judge)
        assert_close(loss, theirs(d0.view(-1, 1, 1, 1), d1.view(-1, 1, 1, 1), judge.view(-1, 1, 1, 1) * 2 - 1))


@pytest.mark.parametrize("init, seed", [("lpips", 0), ("stable", 7)])
def test_training_recovers_a_hidden_metric(torch_home, tmp_path, init, seed):
    """Judgements of a hidden metric (8 channels of the first layer) are learned from 600 triplets.

    Fails if the loss, the optimiser step or the clamp is broken (checked by breaking each).
    Seed 7 is one where the recipe's init collapses here (tests/collapse_study.py).
    """
    hidden = hidden_metric("alex")
    train = judged_triplets(hidden, RECOVERY["train"], size=RECOVERY["size"], seed=1)
    held_out = judged_triplets(hidden, RECOVERY["held_out"], size=RECOVERY["size"], seed=2)
    options = {"lr": RECOVERY["lr"], "epochs": RECOVERY["epochs"], "init": init}
    pl.seed_everything(seed, verbose=False)
    untrained = LPIPSTraining(**options).metric
    untrained.clamp_weights()
    watch = Watch()
    module = train_version(Triplets(train), str(tmp_path), seed=seed, batch_size=RECOVERY["batch_size"],
                           callbacks=[watch], **QUIET, **options)
    baseline_score = agreement(DistanceMetric("alex"), held_out)
    untrained_score, trained_score = agreement(untrained, held_out), agreement(module.metric, held_out)
    scores = {"baseline": baseline_score, "untrained": untrained_score, "trained": trained_score}
    assert len(watch.lrs) == RECOVERY["epochs"] * RECOVERY["train"] // RECOVERY["batch_size"]
    assert trained_score >= baseline_score + 0.08, scores
    assert trained_score >= untrained_score + 0.05, scores
    # the head, too, predicts the held-out judgements (a flipped target would train an inverted head)
    with torch.no_grad():
        predicted = torch.sigmoid(module.head(*module.distances(held_out)))
    assert ((predicted > 0.5) == (held_out["judge"].flatten() > 0.5)).float().mean() >= 0.75


def test_stable_init_starts_non_negative_with_a_neutral_head(torch_home):
    pl.seed_everything(0, verbose=False)
    recipe = LPIPSTraining()
    pl.seed_everything(0, verbose=False)
    stable = LPIPSTraining(init="stable")
    assert lin_weights(recipe).min() < 0
    assert torch.equal(lin_weights(stable), lin_weights(recipe).abs())
    d0, d1 = torch.rand(5), torch.rand(5)
    assert torch.equal(stable.head(d0, d1), torch.zeros(5))
    assert not torch.equal(recipe.head(d0, d1), torch.zeros(5))
    with pytest.raises(ValueError, match="lpips, stable"):
        LPIPSTraining(init="zeros")


def test_lr_schedule_resume_and_reuse(tiny, tmp_path, capsys):
    """Interrupted after one epoch, a rerun resumes there; the lr follows the recipe across both; the weights
    and the CSV log end as those of an uninterrupted training."""
    options = {"batch_size": 10, "lr": 0.01, "epochs": 4, "logger": "csv", "progress": False}
    first, second = Watch(), Watch()
    with pytest.raises(Interrupt):
        train_version(tiny, str(tmp_path), callbacks=[first, StopAtEpoch(1)], **options)
    folder = tmp_path / "alex_lin_spatial_cn_imagenet" / "version_0"
    assert (folder / "last.ckpt").is_file() and not (folder / "lin.pth").exists()
    module = train_version(tiny, str(tmp_path), callbacks=[second], **options)
    assert first.epochs == [0, 1] and second.epochs == [1, 2, 3]
    # 2 steps per epoch: 4 at constant lr, then linear decay towards 0 over the last 4
    assert first.lrs + second.lrs == pytest.approx([0.01] * 5 + [0.0075, 0.005, 0.0025])
    assert torch.load(folder / "last.ckpt", weights_only=True)["global_step"] == 8
    assert lin_weights(module).min() >= 0

    train_version(tiny, str(tmp_path / "whole"), **options)
    whole = tmp_path / "whole" / folder.relative_to(tmp_path)
    resumed, uninterrupted = (torch.load(f / "lin.pth", weights_only=True) for f in (folder, whole))
    assert resumed.keys() == uninterrupted.keys()
    for key in resumed:
        assert_close(resumed[key], uninterrupted[key], rtol=0, atol=1e-6)
    log, whole_log = (read_rows(f / "metrics.csv") for f in (folder, whole))
    assert [row["epoch"] for row in log] == ["0", "1", "2", "3"]
    assert [row.keys() for row in log] == [row.keys() for row in whole_log]
    for row, whole_row in zip(log, whole_log):
        assert {k: float(v) for k, v in row.items()} == pytest.approx({k: float(v) for k, v in whole_row.items()},
                                                                      abs=1e-6)

    stamp = os.path.getmtime(folder / "last.ckpt")
    capsys.readouterr()
    again = train_version(tiny, str(tmp_path), **options)
    assert "trained already" in capsys.readouterr().out
    assert os.path.getmtime(folder / "last.ckpt") == stamp
    assert torch.equal(lin_weights(again), lin_weights(module))
    with pytest.raises(ValueError, match=r"epochs=4 there, 5 now.*version_0"):
        train_version(tiny, str(tmp_path), **{**options, "epochs": 5})


def test_a_version_is_reused_only_with_the_settings_and_data_it_was_trained_with(tiny, tmp_path):
    options = {"batch_size": 10, "lr": 0.01, "epochs": 1, **QUIET}
    train_version(tiny, str(tmp_path), **options)
    folder = tmp_path / NAME / "version_0"
    reversed_data = Triplets({key: value.flip(0) for key, value in tiny.tensors.items()})
    for data, change, difference in [(tiny, {"seed": 1}, "seed=0 there, 1 now"),
                                     (tiny, {"batch_size": 5}, "batch_size=10 there, 5 now"),
                                     (tiny, {"lr": 0.02}, "lr=0.01 there, 0.02 now"),
                                     (tiny, {"init": "stable"}, "init='lpips' there, 'stable' now"),
                                     (reversed_data, {}, "data='items:20:")]:
        with pytest.raises(ValueError, match=re.escape(difference)) as error:
            train_version(data, str(tmp_path), **{**options, **change})
        assert f"pass another --out, or delete {folder} to train anew" in str(error.value)
    (folder / "training.json").unlink()
    with pytest.raises(ValueError, match="without training.json .* is unknown"):
        train_version(tiny, str(tmp_path), **options)


def test_a_version_whose_files_disagree_or_are_damaged_is_an_error_naming_them(tiny, tmp_path):
    options = {"batch_size": 10, "lr": 0.01, "epochs": 1, **QUIET}
    train_version(tiny, str(tmp_path), **options)
    folder = tmp_path / NAME / "version_0"
    lin, last = folder / "lin.pth", folder / "last.ckpt"
    trained = torch.load(lin, weights_only=True)
    torch.save({key: 2 * value for key, value in trained.items()}, lin)
    with pytest.raises(ValueError, match=f"{re.escape(str(lin))} does not hold the linear weights of "
                                         f"{re.escape(str(last))}"):
        train_version(tiny, str(tmp_path), **options)
    torch.save(trained, lin)
    last.write_bytes(last.read_bytes()[:1000])
    with pytest.raises(ValueError, match=f"cannot read the checkpoint {re.escape(str(last))} .*damaged") as error:
        train_version(tiny, str(tmp_path), **options)
    assert "weights_only" not in str(error.value) and "\n" not in str(error.value)


def test_lin_pth_loads_into_lpips_and_our_metric(tiny, torch_home, tmp_path):
    module = train_version(tiny, str(tmp_path), batch_size=10, lr=0.01, epochs=2, normalize="lpips", **QUIET)
    path = str(tmp_path / "alex_lin_spatial_cn_lpips" / "version_0" / "lin.pth")
    x0, x1 = tiny.tensors["ref"][:4], tiny.tensors["p0"][:4]
    ours = DistanceMetric("alex", lin=True, normalize="lpips", lpips_weights=path)
    theirs = lpips_reference("alex", torch_home["alex"], model_path=path)
    with torch.no_grad():
        assert_close(ours(x0, x1), theirs(2 * x0 - 1, 2 * x1 - 1).flatten())
        assert_close(ours(x0, x1), module.metric(x0, x1))


@pytest.mark.parametrize("method, channel_norm", ALL_CONFIGS)
def test_every_method_trains_each_part_with_its_own_weights(tiny, tmp_path, method, channel_norm):
    options = {"method": method, "channel_norm": channel_norm, "lr": 0.01, "epochs": 1}
    pl.seed_everything(0, verbose=False)
    start = LPIPSTraining(**options).metric
    start.clamp_weights()
    module = train_version(tiny, str(tmp_path), batch_size=20, **QUIET, **options)
    for part in PARTS[method]:
        before = torch.cat([p.flatten() for p in start.lins[part].parameters()])
        after = torch.cat([p.detach().flatten() for p in module.metric.lins[part].parameters()])
        assert not torch.equal(before, after), f"the {part} weights of {method} did not train"
        assert after.min() >= 0
    name = f"alex_lin_{method}_{'cn' if channel_norm else 'nocn'}_imagenet"
    saved = torch.load(tmp_path / name / "version_0" / "lin.pth", weights_only=True)
    second = [f"{PARTS[method][1]}_lin{k}.model.1.weight" for k in range(5)] if "+" in method else []
    assert sorted(saved) == sorted([f"lin{k}.model.1.weight" for k in range(5)] + second)


@pytest.mark.parametrize("variant", ["lin", "tune", "scratch"])
def test_variants_freeze_or_train_the_backbone(tiny, torch_home, tmp_path, variant):
    pretrained = DistanceMetric("alex").net.state_dict()
    pl.seed_everything(5, verbose=False)  # not 0: the fixture's random "pretrained" alex is seed 0's init
    start = LPIPSTraining(variant=variant).metric.net.state_dict()
    module = train_version(tiny, str(tmp_path), seed=5, batch_size=10, lr=0.01, epochs=1, variant=variant,
                           **QUIET)
    trained = module.metric.net.state_dict()
    same_as_pretrained = all(torch.equal(start[k], pretrained[k]) for k in pretrained)
    assert same_as_pretrained == (variant != "scratch")
    changed = any(not torch.equal(start[k], trained[k]) for k in start)
    assert changed == (variant != "lin")
    ckpt = glob.glob(str(tmp_path / f"alex_{variant}_*" / "version_0" / "last.ckpt"))[0]
    reloaded = LPIPSTraining.load_from_checkpoint(ckpt, map_location="cpu").eval()
    x0, x1 = tiny.tensors["ref"][:4], tiny.tensors["p1"][:4]
    with torch.no_grad():
        assert torch.equal(reloaded.metric(x0, x1), module.metric(x0, x1))


@pytest.mark.parametrize("logger, pattern", [("csv", "metrics.csv"), ("tensorboard", "events.out.tfevents*")])
def test_csv_and_tensorboard_loggers_write_under_out(tiny, tmp_path, logger, pattern):
    train_version(tiny, str(tmp_path), batch_size=10, lr=0.01, epochs=2, logger=logger, progress=False)
    folder = tmp_path / "alex_lin_spatial_cn_imagenet" / "version_0"
    assert glob.glob(str(folder / pattern))
    if logger == "csv":
        rows = (folder / "metrics.csv").read_text().splitlines()
        assert rows[0].split(",")[:2] == ["epoch", "step"]
        assert {"train_loss", "train_2afc", "train_accuracy"} <= set(rows[0].split(","))
        assert len(rows) == 3


def test_wandb_without_account_runs_offline(tiny, tmp_path, monkeypatch, capsys):
    for name in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_DIR", "WANDB_SILENT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    out = tmp_path / "out"
    train_version(tiny, str(out), batch_size=10, lr=0.01, epochs=1, logger="wandb", progress=False)
    printed = capsys.readouterr()
    assert "WARNING" not in printed.err  # such as wandb's about the anonymous setting, which nobody asked for
    lines = [line for line in printed.out.splitlines() if "wandb sync" in line]
    assert len(lines) == 1
    run_dir = lines[0].split("wandb sync ")[1].strip()
    assert run_dir.startswith(str(out)) and glob.glob(os.path.join(run_dir, "*.wandb"))


@pytest.fixture
def bapps(bapps_tree):
    """A tiny BAPPS tree: 6 triplets per train and val subsplit, 4 pairs per JND subsplit, 64x64 (load size)."""
    return bapps_tree(n_2afc=6, n_jnd=4, parts=("train", "val", "jnd"))


def train_argv(bapps, out, *extra):
    return ["--train", "--variant", "lin", "--data-root", bapps, "--no-download", "--out", str(out),
            "--num-workers", "0", "--batch-size", "6", "--epochs", "2", "--lr", "0.01", "--logger", "csv", *extra]


def train_cli(bapps, out, *extra):
    return main(train_argv(bapps, out, *extra))


def test_a_quick_training_is_not_reused_by_a_full_one_and_rows_name_its_file(torch_home, bapps, tmp_path):
    quick = ("--variant", "tune", "--splits", "jnd", "--epochs", "1", "--train-subsplits", "cnn")
    assert train_cli(bapps, tmp_path, *quick, "--limit", "2") == 0
    rows = read_results_csv(tmp_path)
    assert {row["limit"] for row in rows} == {"2"}
    # tune's rows are computed from the checkpoint, which holds its trained backbone, not from lin.pth
    assert all(" lin=alex_tune_spatial_cn_imagenet/version_0/last.ckpt@" in row["weights"] for row in rows)
    changed = r"limit=2 there, 'all' now, data='synthetic:cnn=\w+' there, 'synthetic:cnn=\w+' now"
    cli_error(main, train_argv(bapps, tmp_path, *quick), rf"trained with other settings \({changed}\)")
    assert read_results_csv(tmp_path) == rows


def test_ctrl_c_during_training_is_this_programs_interruption(torch_home, bapps, tmp_path, monkeypatch):
    def interrupt(self, batch, batch_idx):
        raise KeyboardInterrupt

    monkeypatch.setattr(training.LPIPSTraining, "training_step", interrupt)
    code, _, err = run_cli(main, train_argv(bapps, tmp_path, "--splits", "jnd", "--epochs", "1"))
    assert code == 130, err
    assert err.rstrip("\n").split("\n")[-1].startswith("experiment.py: interrupted: ")
    assert "a training resumes from its last finished epoch" in err
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # Lightning ignores Ctrl-C from then on


def test_a_bad_training_image_read_by_a_worker_is_one_line_naming_it(torch_home, bapps, tmp_path):
    root = tmp_path / "bapps"
    shutil.copytree(bapps, root)
    bad = root / "train" / "cnn" / "p1" / "000003.png"
    bad.write_bytes(b"not a png")
    cli_error(main, train_argv(str(root), tmp_path / "out", "--num-workers", "1", "--train-subsplits", "cnn",
                               "--splits", "jnd", "--epochs", "1"),
              rf"experiment.py: error: cannot read image {re.escape(str(bad))}: cannot identify image file")


def test_train_cli_evaluates_every_version_and_tabulates_mean_and_spread(torch_home, bapps, tmp_path, capsys):
    assert train_cli(bapps, tmp_path, "--repetitions", "2", "--splits", "val") == 0
    rows = read_results_csv(tmp_path)
    assert {(r["variant"], r["version"]) for r in rows} == {("lin", "0"), ("lin", "1")}
    assert len(rows) == 2 * 6 * 2  # versions x val subsplits x (score, accuracy)
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("| alex | 1-4-7-9-11 | lin |"))
    assert "| spatial | true | imagenet | all | synthetic | alexnet-owt-7be5be79.pth@" in line
    assert " lin=alex_lin_spatial_cn_imagenet/version_* | 2 |" in line and "±" in line
    for version in (0, 1):
        path = tmp_path / "alex_lin_spatial_cn_imagenet" / f"version_{version}" / "lin.pth"
        metric = DistanceMetric("alex", lin=True, lpips_weights=str(path))
        for subsplit in ("traditional", "color"):
            images, judge = read_set(bapps, "2afc", subsplit, ("ref", "p0", "p1"), "judge")
            with torch.no_grad():
                expected = score_2afc(metric(images["ref"], images["p0"]), metric(images["ref"], images["p1"]), judge)
            got = values(rows, version=str(version))
            assert got["spatial", True, "2afc", subsplit, "score"] == pytest.approx(expected[0], abs=1e-12)

    capsys.readouterr()
    assert train_cli(bapps, tmp_path, "--repetitions", "2", "--splits", "val") == 0
    assert capsys.readouterr().out.count("trained already") == 2
    assert read_results_csv(tmp_path) == rows


def test_train_cli_with_two_methods_and_both_norms_trains_each(torch_home, bapps, tmp_path):
    extra = ("--method", "mean", "spatial+sort", "--channel-norm", "both", "--splits", "jnd", "--epochs", "1",
             "--train-subsplits", "cnn", "--limit", "4")
    assert train_cli(bapps, tmp_path, *extra) == 0
    folders = sorted(p.parent.parent.name for p in tmp_path.glob("*/version_0/lin.pth"))
    assert folders == ["alex_lin_mean_cn_imagenet", "alex_lin_mean_nocn_imagenet",
                       "alex_lin_spatial+sort_cn_imagenet", "alex_lin_spatial+sort_nocn_imagenet"]
    assert {(r["method"], r["channel_norm"], r["n"]) for r in read_results_csv(tmp_path)} == {
        (m, n, "4") for m in ("mean", "spatial+sort") for n in ("true", "false")}


@pytest.mark.parametrize("args, message", [
    (["--train"], "--variant lin, tune, scratch"),
    (["--train", "--variant", "lin", "--lpips-weights", "official"], "drop --lpips-weights"),
    (["--train", "--variant", "tune", "--epochs", "0"], "--epochs must be at least 1"),
    (["--variant", "lin"], "or --train"),
    (["--train", "--variant", "lin", "--devices", "abc"], "argument --devices: 'abc' is not auto, a number"),
])
def test_impossible_training_flags_are_usage_errors(args, message):
    assert message in usage_error(main, args)


def test_help_documents_the_training_flags():
    shown = experiment.build_parser().format_help()
    for flag in ("--train", "--train-subsplits", "--epochs", "--lr", "--repetitions", "--init", "--logger",
                 "--devices", "--num-nodes", "--strategy", "--precision"):
        assert flag in shown


def test_ddp_on_two_cpu_processes_evaluates_and_reports_once(weights_home, bapps, tmp_path):
    """Lightning's DDP relaunches the command per process: only the first may write results."""
    env = {**os.environ, "TORCH_HOME": weights_home["home"], "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "experiment.py", "--train", "--variant", "lin", "--data-root", bapps,
                           "--no-download", "--out", str(tmp_path), "--device", "cpu", "--devices", "2",
                           "--strategy", "ddp", "--logger", "csv", "--epochs", "1", "--lr", "0.01",
                           "--batch-size", "6", "--num-workers", "0", "--splits", "jnd"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    for noise in ("GPU available", "TPU available", "Tip:", "Trainer.fit", "LOCAL_RANK", "LeafSpec"):
        assert noise not in done.stderr, done.stderr  # Lightning's information lines
    assert done.stdout.count("| alex | 1-4-7-9-11 | lin | spatial | true | imagenet | all | synthetic |") == 1
    rows = read_results_csv(tmp_path)
    assert sorted((r["subsplit"], r["version"]) for r in rows) == [("cnn", "0"), ("traditional", "0")]
    assert (tmp_path / "alex_lin_spatial_cn_imagenet" / "version_0" / "lin.pth").is_file()
