"""LPIPS training: a Lightning module around DistanceMetric, trained with the recipe of Zhang
et al. (2018) to predict 2AFC human judgements through LPIPS's ranking head.

It is `experiment.py --train`'s engine (experiment.py imports it only then: it brings
Lightning); `experiment.LPIPSTraining` (and the other names here) still resolve, importing
this module on first use.

Each version lives in `OUT/<net>[_<points>]_<variant>_<method>_<cn|nocn>_<normalize>/version_K/`
(`<points>`, such as `1-4-7-11`, when they are not the net's default extraction points):
`training.json` (the settings and data it is trained with: it is resumed or reused only with
those), Lightning's `last.ckpt` (the whole module, trained backbone included, and the random
states that make a resumed training end as an uninterrupted one) and `lin.pth`, the linear
weights in the LPIPS file format. To reuse a trained metric:

    DistanceMetric(net, method, channel_norm, lin=True, normalize=..., lpips_weights=".../lin.pth")  # lin
    LPIPSTraining.load_from_checkpoint(".../last.ckpt").metric    # any variant; images in [0, 1]
    lpips.LPIPS(net=net, model_path=".../lin.pth")(2 * x0 - 1, 2 * x1 - 1)  # see below

`lpips.LPIPS` gives the same distances only for `lin` trained with the spatial method,
channel norm on and `--normalize lpips` (its own input scaling), on the ImageNet backbone.
It loads lin.pth non-strictly: for a sum (`spatial+sort`, `spatial+mean`) it reads only
the spatial part (`lin{k}`) and ignores the second part's `{part}_lin{k}` weights.
"""
import contextlib
import csv
import hashlib
import io
import json
import logging
import os
import warnings

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import ConcatDataset, DataLoader, RandomSampler, Subset

from cli import write_atomic
from dataset_collector import dataset_collector, tree_kind
from loss_networks import canonical_net, checkpoint_path, layers_text, load_state_dict_file
from metric import INITS, TRAINED_VARIANTS, UNTRAINED, DistanceMetric, score_2afc
from results import weights_identity

# a version's folder holds its checkpoint, settings and logs: Lightning's warnings that it is not empty are
# expected (and the CSV logger's, that it deletes metrics.csv, is answered by ResumedCSVLogger)
RESUME_WARNING = r"(Checkpoint|Experiment logs) directory .* exists and is not empty"
# Lightning 2.6 on torch >= 2.10 warns about its own use of torch's pytree: nothing a user can act on
LIGHTNING_PYTREE_WARNING = r"`isinstance\(treespec, LeafSpec\)` is deprecated"
SETTINGS_FILE = "training.json"
LIGHTNING_LOGGERS = ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "lightning.fabric")


class RankingHead(nn.Module):
    """LPIPS's Dist2LogitLayer: from distances (d0, d1) to the logit of "p1 is judged closer".

    A 1x1 conv net on (d0, d1, d0 - d1, d0 / (d1 + eps), d1 / (d0 + eps)) with LeakyReLU(0.2).
    LPIPS ends it with a sigmoid and applies BCE; the logit with BCE-with-logits is the same
    loss, computed stably (and allowed under mixed precision).
    """

    def __init__(self, hidden=32, eps=0.1):
        super().__init__()
        self.eps = eps
        self.model = nn.Sequential(
            nn.Conv2d(5, hidden, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(hidden, hidden, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(hidden, 1, 1),
        )

    def forward(self, d0, d1):
        d0, d1 = d0.reshape(-1, 1, 1, 1), d1.reshape(-1, 1, 1, 1)
        x = torch.cat((d0, d1, d0 - d1, d0 / (d1 + self.eps), d1 / (d0 + self.eps)), dim=1)
        return self.model(x).flatten()


def lr_factor(step, total_steps, decay_steps):
    """Constant, then linear decay to 0 over the last `decay_steps` of `total_steps`."""
    if step < total_steps - decay_steps:
        return 1.0
    return max(0.0, (total_steps - step) / decay_steps) if decay_steps else 0.0


class LPIPSTraining(pl.LightningModule):
    """A DistanceMetric with linear weights, trained on 2AFC judgements by LPIPS's recipe.

    `variant`: `lin` trains only the linear weights on a frozen pretrained backbone, `tune`
    also trains the pretrained backbone, `scratch` trains a randomly initialised one. The
    optimiser is Adam over every trainable parameter and the ranking head; the linear
    weights are clamped to >= 0 after every step; the learning rate is constant for the
    first half of `epochs` and decays linearly to 0 over the second half.
    """

    def __init__(self, net="alex", method="spatial", channel_norm=True, variant="lin", normalize="imagenet",
                 lr=1e-4, beta1=0.5, epochs=10, init="lpips", weights=None, layers=None):
        super().__init__()
        if variant not in TRAINED_VARIANTS:
            raise ValueError(f"variant {variant!r} cannot be trained; expected one of {', '.join(TRAINED_VARIANTS)}")
        if variant == "scratch" and weights is not None:
            raise ValueError("variant 'scratch' starts from a random backbone: drop the backbone weights path")
        net = canonical_net(net)
        self.save_hyperparameters()
        self.metric = DistanceMetric(net, method, channel_norm, lin=True, normalize=normalize, lpips_weights=UNTRAINED,
                                     pretrained=variant != "scratch", weights=weights, layers=layers)
        self.metric.net.requires_grad_(variant != "lin")
        self.head = RankingHead()
        self.initialise(init)

    def initialise(self, scheme):
        """`lpips`: PyTorch's default init, as LPIPS (the first clamp zeroes the linear weights
        that start negative, about half). `stable`: those weights made non-negative, and
        the head's output layer zero, so the head first learns from the judgements which way
        the distances should move instead of pushing them along its random initial slope; on
        small data that push can drive the linear weights to the clamp, where training stalls.
        """
        if scheme not in INITS:
            raise ValueError(f"unknown init {scheme!r}; expected one of {', '.join(INITS)}")
        if scheme == "stable":
            with torch.no_grad():
                for layers in self.metric.lins.values():
                    for layer in layers:
                        layer.model[1].weight.abs_()
                nn.init.zeros_(self.head.model[-1].weight)
                nn.init.zeros_(self.head.model[-1].bias)

    def distances(self, batch):
        """(d0, d1): distances of p0 and p1 to ref, one backbone pass per image."""
        m = self.metric
        configs = m.configs()
        vr, v0, v1 = (m.views(m.features(batch[k]), configs) for k in ("ref", "p0", "p1"))
        return m.compare(vr, v0, configs)[configs[0]], m.compare(vr, v1, configs)[configs[0]]

    def training_step(self, batch, batch_idx):
        d0, d1 = self.distances(batch)
        judge = batch["judge"].reshape(-1).to(d0.dtype)
        loss = F.binary_cross_entropy_with_logits(self.head(d0, d1), judge)
        score, accuracy = score_2afc(d0.detach(), d1.detach(), judge)
        for name, value in (("train_loss", loss), ("train_2afc", score), ("train_accuracy", accuracy)):
            self.log(name, value, on_step=False, on_epoch=True, sync_dist=True, batch_size=len(judge))
        return loss

    def optimizer_step(self, *args, **kwargs):
        super().optimizer_step(*args, **kwargs)
        self.metric.clamp_weights()

    def configure_optimizers(self):
        params = [p for p in self.parameters() if p.requires_grad]
        optimizer = torch.optim.Adam(params, lr=self.hparams.lr, betas=(self.hparams.beta1, 0.999))
        total = self.trainer.estimated_stepping_batches
        decay = total * (self.hparams.epochs // 2) / self.hparams.epochs
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, total, decay))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def on_fit_start(self):
        self.train()  # Lightning leaves modes alone; the frozen backbone has no dropout or batch norm

    def on_save_checkpoint(self, checkpoint):
        checkpoint["rng_states"] = rng_states()  # dropout's random numbers, for a resume that equals no stop

    def on_load_checkpoint(self, checkpoint):
        self._resumed_rng = checkpoint.get("rng_states")

    def on_train_epoch_start(self):
        # the random state as the last finished epoch left it, restored where the next epoch begins
        if getattr(self, "_resumed_rng", None) is not None:
            restore_rng_states(self._resumed_rng)
            self._resumed_rng = None

    def on_fit_end(self):
        self.eval()


def rng_states():
    """The random states a training step draws from: torch's, and the current CUDA device's when in use."""
    states = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state()
    return states


def restore_rng_states(states):
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state(states["cuda"])


class EpochShuffle(RandomSampler):
    """A shuffle drawn from (seed, epoch) alone, so that a resumed training sees each epoch's order as an
    uninterrupted one does; Lightning calls `set_epoch` before each epoch (and under DDP uses its own
    DistributedSampler, which shuffles the same way)."""

    def __init__(self, data, seed):
        super().__init__(data, generator=torch.Generator())
        self.seed = seed
        self.set_epoch(0)

    def set_epoch(self, epoch):
        self.generator.manual_seed(int(np.random.SeedSequence((self.seed, epoch)).generate_state(1)[0]))


def version_dir(out, version, net, variant, method, channel_norm, normalize, layers=None):
    """Folder of one trained version, e.g. `OUT/alex_lin_spatial_cn_imagenet/version_0`; extraction
    points other than the net's default are part of the name: `OUT/alex_1-4-7-11_lin_...`."""
    points = "" if layers is None else f"_{layers_text(layers)}"
    name = f"{net}{points}_{variant}_{method}_{'cn' if channel_norm else 'nocn'}_{normalize}"
    return os.path.join(out, name, f"version_{version}")


def save_lpips_weights(metric, path):
    """Write the linear weights in the LPIPS file format, atomically."""
    buffer = io.BytesIO()
    torch.save(metric.lpips_state_dict(), buffer)
    write_atomic(path, buffer.getvalue())


def read_checkpoint(path):
    """A Lightning checkpoint's contents (tensors only, on the CPU); a damaged file is an error naming it."""
    fix = f"delete {os.path.dirname(path)} to train anew, or pass another --out"
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except OSError as err:
        raise OSError(f"cannot read the checkpoint {path} ({err.strerror or type(err).__name__}); {fix}") from None
    except Exception as err:  # torch.load reports damaged files as EOFError, UnpicklingError, RuntimeError, ...
        raise ValueError(f"cannot read the checkpoint {path} ({type(err).__name__}): it is damaged (cut short?) "
                         f"or not a checkpoint of this program; {fix}") from None


def training_settings(data, seed, batch_size, hparams, precision=None, version=0):
    """What a version is trained with, as stored in its training.json: the recipe and configuration, the seed,
    the backbone's weights (by content) and the training data (`data_settings`)."""
    model = {k: v for k, v in hparams.items() if k != "weights"}
    if hparams["variant"] == "scratch":
        backbone = weights_identity(hparams["net"], None, random_seed=seed + version)
    else:
        backbone = weights_identity(hparams["net"], hparams["weights"] or checkpoint_path(hparams["net"]))
    settings = {**model, "seed": seed, "batch_size": batch_size, "precision": precision or "32-true",
                "backbone": backbone, **data_settings(data)}
    return json.loads(json.dumps(settings))  # as read back from the file (lists, not tuples)


def data_settings(data):
    """The training data's part of the settings: a `TrainingData`'s own, else the hash of every item."""
    if isinstance(data, TrainingData):
        return data.settings
    digest = hashlib.sha256()
    for index in range(len(data)):
        for key, value in sorted(data[index].items()):
            digest.update(key.encode() + torch.as_tensor(value).numpy().tobytes())
    return {"data": f"items:{len(data)}:{digest.hexdigest()[:8]}"}


def check_same_training(folder, settings):
    """Refuse to resume or reuse the version in `folder` unless its training.json says it was (or is being)
    trained with `settings`; a version without one was trained with settings nobody knows."""
    path = os.path.join(folder, SETTINGS_FILE)
    fix = f"pass another --out, or delete {folder} to train anew"
    if not os.path.isfile(path):
        if any(os.path.exists(os.path.join(folder, name)) for name in ("last.ckpt", "lin.pth")):
            raise ValueError(f"{folder} holds a training without {SETTINGS_FILE} (by an earlier version of this "
                             f"program, or copied there): what it was trained with is unknown; {fix}")
        return
    try:
        with open(path) as file:
            stored = json.load(file)
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot read {path} ({err}); {fix}") from None
    changed = [k for k in dict.fromkeys([*settings, *stored]) if stored.get(k) != settings.get(k)]
    if changed:
        details = ", ".join(f"{k}={stored.get(k)!r} there, {settings.get(k)!r} now" for k in changed)
        raise ValueError(f"{folder} was trained with other settings ({details}); {fix}")


def write_settings(folder, settings):
    write_atomic(os.path.join(folder, SETTINGS_FILE), json.dumps(settings, indent=2) + "\n")


def wandb_offline():
    """Whether wandb logs offline: $WANDB_MODE says so, or (unset) there is no API key (environment or netrc,
    checked without prompting)."""
    import wandb
    if "WANDB_MODE" in os.environ:
        return os.environ["WANDB_MODE"] in ("offline", "dryrun")
    return not (os.environ.get("WANDB_API_KEY") or wandb.login(prompt=False, verify=False))


class ResumedCSVLogger(pl.loggers.CSVLogger):
    """Lightning's CSVLogger, which deletes the metrics.csv it finds, keeping the rows `kept` of the epochs a
    resumed training had finished."""

    def __init__(self, root, name, version, kept=()):
        super().__init__(root, name=name, version=version)
        self.kept = list(kept)

    @property
    def experiment(self):
        fresh = self._experiment is None
        writer = super().experiment
        if fresh and writer is self._experiment:  # rank 0, once: the writer that rewrites metrics.csv
            writer.metrics[:0] = self.kept
        return writer


def finished_metrics(folder, checkpoint):
    """The rows of `folder`/metrics.csv logged before `checkpoint` (its finished epochs); [] without either."""
    path = os.path.join(folder, "metrics.csv")
    if checkpoint is None or not os.path.isfile(path):
        return []
    with open(path, newline="") as file:
        rows = list(csv.DictReader(file))
    return [row for row in rows if row.get("step", "").isdigit() and int(row["step"]) < checkpoint["global_step"]]


def make_logger(kind, folder, kept=()):
    """A Lightning logger writing into a version's folder; wandb falls back to offline mode. The CSV logger
    starts with the rows `kept` (those of a resumed training's finished epochs)."""
    if kind is None:
        return False
    root, name = os.path.split(os.path.dirname(folder))
    version = os.path.basename(folder)
    if kind == "csv":
        return ResumedCSVLogger(root, name, version, kept)
    if kind == "tensorboard":
        return pl.loggers.TensorBoardLogger(root, name=name, version=version, default_hp_metric=False)
    if kind != "wandb":
        raise ValueError(f"unknown logger {kind!r}; expected wandb, csv or tensorboard")
    import wandb
    offline = wandb_offline()
    os.makedirs(folder, exist_ok=True)
    # explicit settings, not the environment: a library leaves the process's environment alone
    settings = wandb.Settings(mode="offline", silent=True) if offline else None
    run_logger = pl.loggers.WandbLogger(project="perceptual-metric", name=f"{name}_{version}", save_dir=folder,
                                        offline=offline, settings=settings)
    # Lightning passes wandb.init anonymous=None, which wandb warns is a setting without effect: leaving it out
    # is the same run, without the warning
    run_logger._wandb_init.pop("anonymous", None)
    return run_logger


def finish_wandb(logger):
    """Close the wandb run; if it was offline, one line says where it is and how to upload it."""
    run_dir = os.path.dirname(logger.experiment.dir)
    offline = logger.experiment.settings.mode in ("offline", "dryrun")
    logger.experiment.finish()
    if offline:
        print(f"wandb: no API key, logged offline to {run_dir}; upload with: wandb sync {run_dir}")


def make_trainer(folder, epochs, logger, callbacks=(), progress=True, **scale):
    """A Lightning Trainer checkpointing every epoch to `folder/last.ckpt`.

    `scale` passes `accelerator`, `devices`, `num_nodes`, `strategy` and `precision` through.
    """
    checkpoint = pl.callbacks.ModelCheckpoint(dirpath=folder, filename="last", enable_version_counter=False)
    return pl.Trainer(max_epochs=epochs, logger=logger, callbacks=[*callbacks, checkpoint],
                      default_root_dir=folder, enable_progress_bar=progress, enable_model_summary=progress,
                      log_every_n_steps=1, **{k: v for k, v in scale.items() if v is not None})


def reuse_version(module, last, lin_path):
    """A finished version in `module` (built with its settings): its checkpoint, whose linear weights lin.pth
    must hold, or for `lin` (frozen backbone) its lin.pth alone."""
    if not os.path.isfile(last):
        if module.hparams.variant != "lin":
            raise FileNotFoundError(f"{last} is missing: it held the trained backbone of {os.path.dirname(last)}; "
                                    f"delete that folder to train anew")
        module.metric.load_lpips_weights(lin_path)
        return module.eval()
    module.load_state_dict(read_checkpoint(last)["state_dict"])
    check_lin_file(module.metric, lin_path, last)
    return module.eval()


def check_lin_file(metric, lin_path, last):
    """Raise ValueError unless `lin_path` holds exactly the linear weights of `metric`, read from `last`."""
    saved, trained = load_state_dict_file(lin_path), metric.lpips_state_dict()
    if saved.keys() != trained.keys() or not all(torch.equal(saved[k], trained[k]) for k in trained):
        folder = os.path.dirname(last)
        raise ValueError(f"{lin_path} does not hold the linear weights of {last}, trained with it: one of them "
                         f"was changed or replaced; delete {folder} to train anew (or pass another --out), or "
                         f"evaluate that file alone with --variant lin --lpips-weights {lin_path}")


def trained_file(folder, variant):
    """The file a version's rows are computed from: lin.pth for `lin` (its backbone is the pretrained one),
    last.ckpt for `tune` and `scratch` (it holds their trained backbone)."""
    return os.path.join(folder, "lin.pth" if variant == "lin" else "last.ckpt")


@contextlib.contextmanager
def lightning_quiet():
    """For a front door's training: Lightning's information lines ("GPU available", tips) left out while the
    block runs (its warnings and errors still show); the loggers' levels are restored after."""
    loggers = [logging.getLogger(name) for name in LIGHTNING_LOGGERS]
    levels = [logger.level for logger in loggers]
    try:
        for logger in loggers:
            logger.setLevel(max(logging.WARNING, logger.level))
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def fit(trainer, module, loader, last):
    """`trainer.fit`, from `last` when given; Ctrl-C (or SIGTERM) is a KeyboardInterrupt, not the exit status 1
    that Lightning turns it into."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", RESUME_WARNING)
        warnings.filterwarnings("ignore", LIGHTNING_PYTREE_WARNING)
        try:
            trainer.fit(module, loader, ckpt_path=last)
        except SystemExit as exit_:
            if isinstance(exit_.__context__, KeyboardInterrupt):
                raise KeyboardInterrupt from None
            raise


def train_version(data, out, version=0, seed=0, batch_size=50, num_workers=0, logger="csv", callbacks=(),
                  progress=True, scale=None, **hparams):
    """Train (or resume, or reuse) version `version` of one configuration; the trained LPIPSTraining.

    `data` yields dicts {ref, p0, p1, judge}. Everything goes to OUT/<experiment>/version_<k>/:
    `training.json` (what it is trained with, `training_settings`), Lightning's `last.ckpt` after
    every epoch and, once training finished, `lin.pth` in the LPIPS file format. An interrupted
    training resumes from the last finished epoch, with the random states, shuffles and CSV log
    rows of an uninterrupted one (the same weights); a version with `lin.pth` is not retrained.
    Either only with the settings of training.json: other settings are an error saying which.
    `hparams` are LPIPSTraining's arguments; `scale` the Trainer's device options.
    """
    pl.seed_everything(seed + version, verbose=False)
    module = LPIPSTraining(**hparams)
    hparams = dict(module.hparams)
    names = ("net", "variant", "method", "channel_norm", "normalize", "layers")
    folder = version_dir(out, version, *(hparams[k] for k in names))
    settings = training_settings(data, seed, batch_size, hparams, (scale or {}).get("precision"), version)
    check_same_training(folder, settings)
    last, lin_path = os.path.join(folder, "last.ckpt"), os.path.join(folder, "lin.pth")
    if os.path.isfile(lin_path):
        print(f"{folder} is trained already: reusing it")
        return reuse_version(module, last, lin_path)
    checkpoint = read_checkpoint(last) if os.path.isfile(last) else None
    if is_global_zero():
        write_settings(folder, settings)
    loader = DataLoader(data, batch_size=batch_size, sampler=EpochShuffle(data, seed + version),
                        num_workers=num_workers, persistent_workers=num_workers > 0,
                        generator=torch.Generator().manual_seed(seed + version))  # worker seeds: not torch's own
    run_logger = make_logger(logger, folder, finished_metrics(folder, checkpoint))
    trainer = make_trainer(folder, hparams["epochs"], run_logger, callbacks, progress, **(scale or {}))
    fit(trainer, module, loader, last if checkpoint is not None else None)
    if trainer.is_global_zero:
        save_lpips_weights(module.metric, lin_path)
        if isinstance(run_logger, pl.loggers.WandbLogger):
            finish_wandb(run_logger)
    return module.eval()


class TrainingData(ConcatDataset):
    """Datasets as one, with `settings`: what they are, for training.json (`training_settings`)."""

    def __init__(self, parts, settings):
        super().__init__(parts)
        self.settings = settings


def training_set(root, subsplits, limit=None, download=True):
    """The BAPPS train `subsplits` under `root` (the first `limit` examples of each) as one dataset, its settings
    naming the subsplits, the limit and the identity of their examples (`BAPPSSubsplit.identity`)."""
    parts, identities = [], []
    for subsplit in subsplits:
        data = dataset_collector("BAPPS", "train", subsplit, root=root, download=download)
        identities.append(f"{subsplit}={data.identity(limit)}")
        parts.append(Subset(data, range(min(limit, len(data)))) if limit else data)
    settings = {"train_subsplits": list(subsplits), "limit": "all" if limit is None else limit,
                "data": f"{tree_kind(root)}:{','.join(identities)}"}
    return TrainingData(parts, settings)


def is_global_zero():
    """Whether this process is the first of a (multi-process) training, or the only one."""
    return pl.utilities.rank_zero_only.rank == 0
