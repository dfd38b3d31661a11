"""Deep perceptual similarity metrics and the BAPPS experiments.

`DistanceMetric` compares two images through the activations of a loss network
(`loss_networks.FeatureExtractor`) by one of five methods, with or without
channel-wise normalisation and LPIPS linear calibration. The computation is split
where the cost is: `features` (one backbone pass per image), `views` (each method's
transform of the activations, computed once per image) and `compare` (distances
between two images' views, for any number of configurations at once).
"""
import os
import warnings
from importlib import resources

import pytorch_lightning as pl
import torch
import torch.nn as nn
import torch.nn.functional as F

from loss_networks import FeatureExtractor, canonical_net, load_state_dict_file

METHODS = ("spatial", "sort", "mean", "spatial+sort", "spatial+mean")
PARTS = {method: tuple(method.split("+")) for method in METHODS}
ALL_CONFIGS = tuple((method, norm) for method in METHODS for norm in (True, False))
NORMALIZATIONS = {
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "lpips": ((-0.030, -0.088, -0.188), (0.458, 0.448, 0.450)),
}
RANGE_TOLERANCE = 1e-3


def check_images(x, name="x"):
    """Raise ValueError unless `x` is a float tensor (N, 3, H, W) with values in [0, 1]."""
    if not torch.is_tensor(x):
        raise ValueError(f"{name} must be a torch.Tensor of shape (N, 3, H, W), got {type(x).__name__}")
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(
            f"{name} has shape {tuple(x.shape)}, expected (N, 3, H, W) RGB; add a batch dimension "
            f"with x[None] or replicate grayscale with x.expand(-1, 3, -1, -1)"
        )
    if not x.is_floating_point():
        raise ValueError(f"{name} has dtype {x.dtype}, expected floats in [0, 1]: use x.float() / 255")
    lo, hi = torch.aminmax(x.detach())
    lo, hi = lo.item(), hi.item()
    if lo < -RANGE_TOLERANCE or hi > 1 + RANGE_TOLERANCE:
        hint = "rescale with (x + 1) / 2" if lo < 0 else "divide by 255" if hi > 2 else "clamp to [0, 1]"
        raise ValueError(f"{name} has values in [{lo:.4g}, {hi:.4g}], expected [0, 1]: {hint}")


def transform(f, part):
    """One method's view of activations f (N, C, H, W): as is, sorted per channel, or channel means.

    The mean view is kept at (N, C, 1, 1): every position of its broadcast is equal, so
    the mean over positions of the distance is the same.
    """
    if part == "spatial":
        return f
    if part == "sort":
        return f.flatten(2).sort(dim=2).values.view_as(f)
    if part == "mean":
        return f.mean((2, 3), keepdim=True)
    raise ValueError(f"unknown method part {part!r}; expected spatial, sort or mean")


def channel_normalize(f, eps=1e-10):
    """Divide by the L2 norm over channels at each position (LPIPS's normalize_tensor)."""
    return f / (f.square().sum(1, keepdim=True).sqrt() + eps)


def layer_distance(a0, a1, lin=None):
    """Mean over positions of the (learned, if `lin`) sum over channels of (a0 - a1)**2; shape (N,)."""
    diff = (a0 - a1).square()
    summed = lin(diff) if lin is not None else diff.sum(1, keepdim=True)
    return summed.mean((2, 3)).flatten()


class LinearLayer(nn.Module):
    """LPIPS's NetLinLayer: dropout, then a bias-free 1x1 conv to one channel (kept >= 0)."""

    def __init__(self, channels):
        super().__init__()
        self.model = nn.Sequential(nn.Dropout(), nn.Conv2d(channels, 1, 1, bias=False))

    def forward(self, x):
        return self.model(x)


def official_lpips_path(net):
    """The LPIPS v0.1 linear weights shipped inside the `lpips` package."""
    try:
        root = resources.files("lpips")
    except ModuleNotFoundError:
        raise FileNotFoundError("lpips_weights='official' needs the lpips package: pip install lpips") from None
    return str(root / "weights" / "v0.1" / f"{net}.pth")


def lpips_key(part_index, part, layer):
    """Key of one linear layer in the LPIPS file format; a second part gets its own prefix."""
    return f"lin{layer}.model.1.weight" if part_index == 0 else f"{part}_lin{layer}.model.1.weight"


class DistanceMetric(nn.Module):
    """Deep perceptual distance between image batches in [0, 1]: `metric(x0, x1)` -> (N,)."""

    def __init__(self, net="alex", method="spatial", channel_norm=True, lin=False, normalize="imagenet",
                 pretrained=True, weights=None, lpips_weights=None, layers=None):
        super().__init__()
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")
        if normalize not in NORMALIZATIONS:
            raise ValueError(f"unknown normalize {normalize!r}; expected one of {', '.join(NORMALIZATIONS)}")
        if lpips_weights is not None and not lin:
            raise ValueError("lpips_weights are linear-layer weights: pass lin=True with them")
        self.method, self.channel_norm, self.lin, self.normalize = method, bool(channel_norm), lin, normalize
        self.net = FeatureExtractor(net, layers=layers, pretrained=pretrained, weights=weights)
        mean, std = NORMALIZATIONS[normalize]
        self.register_buffer("shift", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.lins = nn.ModuleDict()
        if lin:
            channels = self._channels()
            for part in PARTS[method]:
                self.lins[part] = nn.ModuleList(LinearLayer(c) for c in channels)
            if lpips_weights is not None:
                self.load_lpips_weights(official_lpips_path(self.net.net) if lpips_weights == "official"
                                        else lpips_weights)
        self.eval()

    def _channels(self):
        with torch.no_grad():
            return [f.shape[1] for f in self.net(torch.zeros(1, 3, 64, 64))]

    def lpips_state_dict(self):
        """The linear weights in the LPIPS file format (`lin{k}.model.1.weight`)."""
        return {lpips_key(i, part, k): layer.model[1].weight.detach().clone()
                for i, part in enumerate(PARTS[self.method]) for k, layer in enumerate(self.lins[part])}

    def load_lpips_weights(self, path):
        """Load LPIPS-format linear weights from `path`, strictly (error names the keys)."""
        state = load_state_dict_file(path)
        expected = self.lpips_state_dict()
        missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
        if missing or unexpected:
            raise ValueError(f"LPIPS weights {path} do not fit {self.net.net}/{self.method}: "
                             f"missing keys {missing or 'none'}, unexpected keys {unexpected or 'none'}")
        for i, part in enumerate(PARTS[self.method]):
            for k, layer in enumerate(self.lins[part]):
                weight = state[lpips_key(i, part, k)]
                if weight.shape != layer.model[1].weight.shape:
                    raise ValueError(f"LPIPS weights {path}: {lpips_key(i, part, k)} has shape "
                                     f"{tuple(weight.shape)}, expected {tuple(layer.model[1].weight.shape)}")
                layer.model[1].weight.data.copy_(weight)

    def clamp_weights(self):
        """Keep the linear weights non-negative (LPIPS clamps after every optimiser step)."""
        with torch.no_grad():
            for layers in self.lins.values():
                for layer in layers:
                    layer.model[1].weight.clamp_(min=0)

    def features(self, x):
        """Backbone activations of images `x` in [0, 1] (normalised here)."""
        check_images(x, "images")
        if self.normalize == "lpips":
            x = 2 * x - 1
        return self.net((x - self.shift) / self.scale)

    def configs(self, method=None, channel_norm=None):
        """[(method, channel_norm)], defaulting to the metric's own configuration."""
        method = self.method if method is None else method
        channel_norm = self.channel_norm if channel_norm is None else bool(channel_norm)
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")
        if self.lin and method != self.method:
            raise ValueError(f"this metric has linear weights for {self.method!r} only, not {method!r}")
        return [(method, channel_norm)]

    def views(self, feats, configs):
        """{(part, channel_norm): per-layer tensors} for every part the configurations need."""
        needed = {(part, norm) for method, norm in configs for part in PARTS[method]}
        out = {}
        for part in dict.fromkeys(part for part, _ in sorted(needed)):
            raw = [transform(f, part) for f in feats]
            for norm in (True, False):
                if (part, norm) in needed:
                    out[part, norm] = [channel_normalize(t) for t in raw] if norm else raw
        return out

    def compare(self, v0, v1, configs):
        """{(method, channel_norm): distances (N,)} between two images' views; shared parts computed once."""
        totals = {}
        for method, norm in configs:
            for part in PARTS[method]:
                if (part, norm) not in totals:
                    lins = self.lins[part] if self.lin else [None] * len(v0[part, norm])
                    totals[part, norm] = sum(layer_distance(a0, a1, lin)
                                             for a0, a1, lin in zip(v0[part, norm], v1[part, norm], lins))
        return {(method, norm): sum(totals[part, norm] for part in PARTS[method]) for method, norm in configs}

    def distance(self, f0, f1, method=None, channel_norm=None):
        """Distance (N,) between two lists of activations from `features`."""
        if len(f0) != len(f1) or any(a.shape != b.shape for a, b in zip(f0, f1)):
            raise ValueError("the two feature lists differ in length or shape: were the images the same size?")
        configs = self.configs(method, channel_norm)
        return self.compare(self.views(f0, configs), self.views(f1, configs), configs)[configs[0]]

    def all_methods(self, x0, x1):
        """{(method, channel_norm): (N,)} for all five methods x both norms, one backbone pass per input."""
        if self.lin:
            raise ValueError("all_methods compares the baseline configurations: use a metric with lin=False")
        check_same_shape(x0, x1)
        v0 = self.views(self.features(x0), ALL_CONFIGS)
        v1 = self.views(self.features(x1), ALL_CONFIGS)
        return self.compare(v0, v1, ALL_CONFIGS)

    def forward(self, x0, x1):
        check_same_shape(x0, x1)
        return self.distance(self.features(x0), self.features(x1))


def check_same_shape(x0, x1):
    """The two inputs of a comparison have one shape (their values are checked by `features`)."""
    if torch.is_tensor(x0) and torch.is_tensor(x1) and x0.shape != x1.shape:
        raise ValueError(f"x0 and x1 differ in shape: {tuple(x0.shape)} vs {tuple(x1.shape)}; "
                         f"resize them to the same (N, 3, H, W)")


# ---------------------------------------------------------------------------------------------
# LPIPS training: a Lightning module around DistanceMetric, trained with the recipe of Zhang et
# al. (2018) to predict 2AFC human judgements through LPIPS's ranking head.
# ---------------------------------------------------------------------------------------------

TRAINED_VARIANTS = ("lin", "tune", "scratch")
# resuming means checkpointing into a folder that holds the checkpoint: expected, not worth a warning
warnings.filterwarnings("ignore", r"Checkpoint directory .* exists and is not empty")
LIN_INITS = ("default", "abs", "ones")


def score_2afc(d0, d1, judge):
    """(score, accuracy) of distances d0, d1 against judgements (fraction preferring p1), as DESIGN.md."""
    d0, d1, judge = d0.flatten().double(), d1.flatten().double(), judge.flatten().double()
    closer0, closer1 = (d0 < d1).double(), (d1 < d0).double()
    score = closer0 * (1 - judge) + closer1 * judge + (d0 == d1).double() * 0.5
    accuracy = ((d0 < d1) == (judge < 0.5)).double()
    return score.mean().item(), accuracy.mean().item()


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


def init_linear_layers(metric, scheme):
    """Initialise the linear weights.

    `default`: PyTorch's conv init, as LPIPS (about half the weights start negative, so the
    first clamp sets them to 0); `abs`: the same weights made non-negative; `ones`: every
    weight 1, so training starts from the uncalibrated metric.
    """
    if scheme not in LIN_INITS:
        raise ValueError(f"unknown linear-layer init {scheme!r}; expected one of {', '.join(LIN_INITS)}")
    with torch.no_grad():
        for layers in metric.lins.values():
            for layer in layers:
                weight = layer.model[1].weight
                if scheme == "abs":
                    weight.abs_()
                elif scheme == "ones":
                    weight.fill_(1.0)


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
                 lr=1e-4, beta1=0.5, epochs=10, lin_init="default", weights=None, layers=None):
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
        init_linear_layers(self.metric, lin_init)
        self.head = RankingHead()

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
        self.train()

    def on_fit_end(self):
        self.eval()


def experiment_name(net, variant, method, channel_norm, normalize):
    """Folder name of one trained configuration under OUT, e.g. `alex_lin_spatial_cn_imagenet`."""
    return f"{net}_{variant}_{method}_{'cn' if channel_norm else 'nocn'}_{normalize}"


def save_lpips_weights(metric, path):
    """Write the linear weights in the LPIPS file format, atomically."""
    tmp = f"{path}.tmp"
    torch.save(metric.lpips_state_dict(), tmp)
    os.replace(tmp, path)


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


def wandb_has_credentials():
    """Whether wandb finds an API key (environment or netrc), checked without prompting."""
    import wandb
    return bool(os.environ.get("WANDB_API_KEY")) or wandb.login(prompt=False, verify=False)


def make_logger(kind, out, name, version):
    """A Lightning logger writing under OUT/<name>/version_<k>; wandb falls back to offline mode."""
    if kind is None:
        return False
    if kind == "csv":
        return pl.loggers.CSVLogger(out, name=name, version=version)
    if kind == "tensorboard":
        return pl.loggers.TensorBoardLogger(out, name=name, version=version, default_hp_metric=False)
    if kind != "wandb":
        raise ValueError(f"unknown logger {kind!r}; expected wandb, csv or tensorboard")
    import wandb
    if "WANDB_MODE" not in os.environ and not wandb_has_credentials():
        os.environ["WANDB_MODE"] = "offline"
    offline = os.environ.get("WANDB_MODE") in ("offline", "dryrun")
    save_dir = os.path.join(out, name, f"version_{version}")
    os.makedirs(save_dir, exist_ok=True)
    # explicit settings: wandb read the environment once, at the credentials check
    settings = wandb.Settings(mode="offline", silent=True) if offline else None
    return pl.loggers.WandbLogger(project="perceptual-metric", name=f"{name}_v{version}", save_dir=save_dir,
                                  offline=offline, settings=settings)


def finish_wandb(logger):
    """Close the wandb run; if it was offline, one line says where it is and how to upload it."""
    run_dir = os.path.dirname(logger.experiment.dir)
    logger.experiment.finish()
    if os.environ.get("WANDB_MODE") in ("offline", "dryrun"):
        print(f"wandb: no API key, logged offline to {run_dir}; upload with: wandb sync {run_dir}")


def make_trainer(version_dir, epochs, logger, callbacks=(), progress=True, **scale):
    """A Lightning Trainer checkpointing every epoch to `version_dir/last.ckpt`.

    `scale` passes `accelerator`, `devices`, `num_nodes`, `strategy` and `precision` through.
    """
    checkpoint = pl.callbacks.ModelCheckpoint(dirpath=version_dir, filename="last", enable_version_counter=False)
    return pl.Trainer(max_epochs=epochs, logger=logger, callbacks=[*callbacks, checkpoint],
                      default_root_dir=version_dir, enable_progress_bar=progress, enable_model_summary=progress,
                      log_every_n_steps=1, **{k: v for k, v in scale.items() if v is not None})


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
    name = experiment_name(hparams["net"], hparams["variant"], hparams["method"], hparams["channel_norm"],
                           hparams["normalize"])
    version_dir = os.path.join(out, name, f"version_{version}")
    last, lin_path = os.path.join(version_dir, "last.ckpt"), os.path.join(version_dir, "lin.pth")
    if os.path.isfile(last):
        check_same_training(last, hparams)
    if os.path.isfile(lin_path):
        print(f"{version_dir} is trained already: reusing it")
        return LPIPSTraining.load_from_checkpoint(last, map_location="cpu").eval()
    loader = torch.utils.data.DataLoader(data, batch_size=batch_size, shuffle=True, num_workers=num_workers,
                                         persistent_workers=num_workers > 0)
    run_logger = make_logger(logger, out, name, version)
    trainer = make_trainer(version_dir, hparams["epochs"], run_logger, callbacks, progress, **(scale or {}))
    trainer.fit(module, loader, ckpt_path=last if os.path.isfile(last) else None)
    if trainer.is_global_zero:
        save_lpips_weights(module.metric, lin_path)
        if isinstance(run_logger, pl.loggers.WandbLogger):
            finish_wandb(run_logger)
    return module.eval()
