"""How often LPIPS training collapses on small data, over seeds (run by hand, not by pytest).

    python -m tests.collapse_study --seeds 40 --init lpips
    python -m tests.collapse_study --seeds 40 --init stable

Trains the recovery test's setting (alex with random weights, synthetic triplets judged by
a hidden metric) once per seed and prints, per seed, the held-out agreement and the share
of linear weights at zero. A run has collapsed when its held-out agreement ends below that
of the uncalibrated metric (lin=False) it could have kept: the ranking head settled on
predicting the base rate, its gradients vanished, and Adam's normalised steps drove the
tiny linear weights around the clamp at zero.
"""
import argparse
import os
import tempfile

import torch

from metric import INITS, DistanceMetric
from tests.helpers import (RECOVERY, Triplets, agreement, hidden_metric, judged_triplets,
                           write_random_weights)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--init", choices=INITS, default="lpips")
    parser.add_argument("--lr", type=float, default=RECOVERY["lr"])
    parser.add_argument("--epochs", type=int, default=RECOVERY["epochs"])
    args = parser.parse_args()
    from training import train_version  # Lightning, only past --help
    with tempfile.TemporaryDirectory() as tmp:
        # random AlexNet weights where torchvision looks for the ImageNet ones, as the tests' fixture
        write_random_weights(os.path.join(tmp, "torch_home"), nets=("alex",))
        os.environ["TORCH_HOME"] = os.path.join(tmp, "torch_home")
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
