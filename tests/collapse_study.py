"""How often LPIPS training collapses on small data, over seeds (run by hand, not by pytest).

    python tests/collapse_study.py --seeds 40 --init lpips
    python tests/collapse_study.py --seeds 40 --init stable

Trains the recovery test's setting (alex with random weights, synthetic triplets judged by
a hidden metric) once per seed and prints, per seed, the held-out agreement and the share
of linear weights at zero. A run has collapsed when its held-out agreement ends below that
of the uncalibrated metric (lin=False) it could have kept: the ranking head settled on
predicting the base rate, its gradients vanished, and Adam's normalised steps drove the
tiny linear weights around the clamp at zero.
"""
import argparse
import os
import sys
import tempfile

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from conftest import FILES  # noqa: E402
from experiment import INITS, DistanceMetric, train_version  # noqa: E402
from synthetic_2afc import RECOVERY, Triplets, agreement, hidden_metric, judged_triplets  # noqa: E402


def random_torch_home(folder):
    """Random AlexNet weights where torchvision looks for the ImageNet ones (as the test fixture)."""
    constructor, name = FILES["alex"]
    os.makedirs(os.path.join(folder, "hub", "checkpoints"))
    torch.manual_seed(0)
    torch.save(constructor(weights=None).state_dict(), os.path.join(folder, "hub", "checkpoints", name))
    os.environ["TORCH_HOME"] = folder


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--init", choices=INITS, default="lpips")
    parser.add_argument("--lr", type=float, default=RECOVERY["lr"])
    parser.add_argument("--epochs", type=int, default=RECOVERY["epochs"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        random_torch_home(os.path.join(tmp, "torch_home"))
        hidden = hidden_metric()
        train = judged_triplets(hidden, RECOVERY["train"], size=RECOVERY["size"], seed=1)
        held_out = judged_triplets(hidden, RECOVERY["held_out"], size=RECOVERY["size"], seed=2)
        baseline = agreement(DistanceMetric("alex"), held_out)
        print(f"uncalibrated baseline: held-out agreement {baseline:.3f}")
        collapsed = 0
        for seed in range(args.seeds):
            module = train_version(Triplets(train), os.path.join(tmp, f"seed{seed}"), seed=seed, logger=None,
                                   progress=False, batch_size=RECOVERY["batch_size"], lr=args.lr,
                                   epochs=args.epochs, init=args.init)
            weights = torch.cat([p.detach().flatten() for p in module.metric.lins.parameters()])
            zero = (weights == 0).float().mean().item()
            score = agreement(module.metric, held_out)
            collapsed += score < baseline
            print(f"seed {seed:2d}: held-out agreement {score:.3f}, zero weights {zero:.2f}"
                  f"{'  COLLAPSED' if score < baseline else ''}", flush=True)
        print(f"collapsed {collapsed}/{args.seeds} (init={args.init}, lr={args.lr}, epochs={args.epochs})")


if __name__ == "__main__":
    main()
