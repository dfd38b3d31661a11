"""LPIPS training: a Lightning module around DistanceMetric, trained with the recipe of Zhang
et al. (2018) to predict 2AFC human judgements through LPIPS's ranking head.

It is `experiment.py --train`'s engine (experiment.py imports it only then: it brings
Lightning); `experiment.LPIPSTraining` (and the other names here) still resolve, importing
this module on first use.

Each version lives in `OUT/<net>[_<points>]_<variant>_<method>_<cn|nocn>_<normalize>/version_K/`
(`<points>`, such as `1-4-7-11`, when they are not the net's default extraction points):
Lightning's `last.ckpt` (the whole module, trained backbone included) and `lin.pth`, the
linear weights in the LPIPS file format. To reuse a trained metric:

    DistanceMetric(net, method, channel_norm, lin=True, normalize=..., lpips_weights=".../lin.pth")  # lin
    LPIPSTraining.load_from_checkpoint(".../last.ckpt").metric    # any variant; images in [0, 1]
    lpips.LPIPS(net=net, model_path=".../lin.pth")(2 * x0 - 1, 2 * x1 - 1)  # see below

`lpips.LPIPS` gives the same distances only for `lin` trained with the spatial method,
channel norm on and `--normalize lpips` (its own input scaling), on the ImageNet backbone.
It loads lin.pth non-strictly: for a sum (`spatial+sort`, `spatial+mean`) it reads only
the spatial part (`lin{k}`) and ignores the second part's `{part}_lin{k}` weights.
"""
import io
import os
import warnings

import pytorch_lightning as pl
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import Subset

from cli import write_atomic
from dataset_collector import dataset_collector
from loss_networks import canonical_net, layers_text
from metric import INITS, TRAINED_VARIANTS, DistanceMetric, score_2afc

# resuming means checkpointing into a folder that holds the checkpoint: expected, not worth a warning
RESUME_WARNING = r"Checkpoint directory .* exists and is not empty"


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
        self.metric = DistanceMetric(net, method, channel_norm, lin=True, normalize=normalize,
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

    def on_fit_end(self):
        self.eval()


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


def checkpoint_hparams(path):
    """The hyperparameters stored in a Lightning checkpoint of LPIPSTraining."""
    return torch.load(path, map_location="cpu", weights_only=True).get("hyper_parameters", {})


def check_same_training(path, hparams):
    """Refuse to resume or reuse a checkpoint trained with other settings than those requested."""
    stored = checkpoint_hparams(path)
    changed = {k: (stored.get(k), v) for k, v in hparams.items() if stored.get(k) != v}
    if changed:
        details = ", ".join(f"{k}={old!r} there, {new!r} now" for k, (old, new) in changed.items())
        raise ValueError(f"{path} was trained with other settings ({details}); "
                         f"pass another --out or delete {os.path.dirname(path)} to train anew")


def wandb_offline():
    """Whether wandb logs offline: $WANDB_MODE says so, or (unset) there is no API key (environment or netrc,
    checked without prompting)."""
    import wandb
    if "WANDB_MODE" in os.environ:
        return os.environ["WANDB_MODE"] in ("offline", "dryrun")
    return not (os.environ.get("WANDB_API_KEY") or wandb.login(prompt=False, verify=False))


def make_logger(kind, folder):
    """A Lightning logger writing into a version's folder; wandb falls back to offline mode."""
    if kind is None:
        return False
    root, name = os.path.split(os.path.dirname(folder))
    version = os.path.basename(folder)
    if kind == "csv":
        return pl.loggers.CSVLogger(root, name=name, version=version)
    if kind == "tensorboard":
        return pl.loggers.TensorBoardLogger(root, name=name, version=version, default_hp_metric=False)
    if kind != "wandb":
        raise ValueError(f"unknown logger {kind!r}; expected wandb, csv or tensorboard")
    import wandb
    offline = wandb_offline()
    os.makedirs(folder, exist_ok=True)
    # explicit settings, not the environment: a library leaves the process's environment alone
    settings = wandb.Settings(mode="offline", silent=True) if offline else None
    return pl.loggers.WandbLogger(project="perceptual-metric", name=f"{name}_{version}", save_dir=folder,
                                  offline=offline, settings=settings)


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
    """A finished version: its checkpoint, or for `lin` (frozen backbone) its lin.pth alone."""
    if os.path.isfile(last):
        return LPIPSTraining.load_from_checkpoint(last, map_location="cpu").eval()
    if module.hparams.variant != "lin":
        raise FileNotFoundError(f"{last} is missing: it held the trained backbone of {os.path.dirname(last)}; "
                                f"delete that folder to train anew")
    module.metric.load_lpips_weights(lin_path)
    return module.eval()


def train_version(data, out, version=0, seed=0, batch_size=50, num_workers=0, logger="csv", callbacks=(),
                  progress=True, scale=None, **hparams):
    """Train (or resume, or reuse) version `version` of one configuration; the trained LPIPSTraining.

    `data` yields dicts {ref, p0, p1, judge}. Everything goes to OUT/<experiment>/version_<k>/:
    Lightning's `last.ckpt` after every epoch (an interrupted run resumes from it) and, once
    training finished, `lin.pth` in the LPIPS file format. A version with `lin.pth` is not
    retrained. `hparams` are LPIPSTraining's arguments; `scale` the Trainer's device options.
    """
    pl.seed_everything(seed + version, verbose=False)
    module = LPIPSTraining(**hparams)
    hparams = dict(module.hparams)
    folder = version_dir(out, version, *(hparams[k] for k in ("net", "variant", "method", "channel_norm",
                                                               "normalize", "layers")))
    last, lin_path = os.path.join(folder, "last.ckpt"), os.path.join(folder, "lin.pth")
    if os.path.isfile(last):
        check_same_training(last, hparams)
    if os.path.isfile(lin_path):
        print(f"{folder} is trained already: reusing it")
        return reuse_version(module, last, lin_path)
    loader = torch.utils.data.DataLoader(data, batch_size=batch_size, shuffle=True, num_workers=num_workers,
                                         persistent_workers=num_workers > 0)
    run_logger = make_logger(logger, folder)
    trainer = make_trainer(folder, hparams["epochs"], run_logger, callbacks, progress, **(scale or {}))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", RESUME_WARNING)
        trainer.fit(module, loader, ckpt_path=last if os.path.isfile(last) else None)
    if trainer.is_global_zero:
        save_lpips_weights(module.metric, lin_path)
        if isinstance(run_logger, pl.loggers.WandbLogger):
            finish_wandb(run_logger)
    return module.eval()


def training_set(root, subsplits, limit=None, download=True):
    """The BAPPS train `subsplits` under `root` (the first `limit` examples of each) as one dataset."""
    parts = []
    for subsplit in subsplits:
        data = dataset_collector("BAPPS", "train", subsplit, root=root, download=download)
        parts.append(Subset(data, range(min(limit, len(data)))) if limit else data)
    return torch.utils.data.ConcatDataset(parts)


def is_global_zero():
    """Whether this process is the first of a (multi-process) training, or the only one."""
    return pl.utilities.rank_zero_only.rank == 0
