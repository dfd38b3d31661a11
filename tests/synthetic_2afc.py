"""Synthetic 2AFC triplets judged by a hidden metric, for testing that LPIPS training learns.

The hidden metric is a `DistanceMetric` with linear weights on the same (random) backbone
as the learner, where only some channels of the first layer count. Its judgements are
therefore reachable by training the linear weights, and differ from the uncalibrated
baseline (all channels of all layers equally).
"""
import torch

from experiment import DistanceMetric

# the recovery setting shared by the test and tests/collapse_study.py: a few hundred triplets,
# a higher learning rate and fewer epochs than the LPIPS recipe
RECOVERY = {"train": 600, "held_out": 300, "size": 64, "batch_size": 25, "lr": 1e-2, "epochs": 4}


def smooth_images(n, size, generator):
    """Random images in [0, 1] with structure at several scales."""
    out = torch.zeros(n, 3, size, size)
    for cells in (2, 4, 8, size):
        coarse = torch.rand(n, 3, cells, cells, generator=generator)
        out += torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    return out / 4


def distort(ref, strength, generator):
    """Each image plus noise of a random colour and grain at `strength` (N, 1, 1, 1), clipped to [0, 1]."""
    n, _, size, _ = ref.shape
    colour = torch.randn(n, 3, 1, 1, generator=generator)
    colour = colour / colour.norm(dim=1, keepdim=True)
    grain = torch.randint(1, 4, (n,), generator=generator)
    noise = torch.stack([
        torch.nn.functional.interpolate(torch.randn(1, 1, size // 2 ** g, size // 2 ** g, generator=generator),
                                        size=(size, size), mode="nearest")[0]
        for g in grain.tolist()])
    return (ref + strength * colour * noise).clamp(0, 1)


def hidden_metric(net="alex", method="spatial", channel_norm=True, channels=8, layers=None, seed=0, layer=0):
    """A metric in which only `channels` random channels of one layer count."""
    metric = DistanceMetric(net, method=method, channel_norm=channel_norm, lin=True, layers=layers)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for lins in metric.lins.values():
            for k, lin in enumerate(lins):
                weight = lin.model[1].weight
                weight.zero_()
                if k == layer % len(lins):
                    chosen = torch.randperm(weight.shape[1], generator=generator)[:channels]
                    weight[0, chosen] = 1.0
    return metric.eval()


def judged_triplets(metric, n, size=32, seed=0):
    """{ref, p0, p1, judge} tensors: judge is 1 where the hidden metric finds p1 closer to ref."""
    generator = torch.Generator().manual_seed(seed)
    ref = smooth_images(n, size, generator)
    # one strength for both: which of the two is closer depends on which channels count
    strength = 0.05 + 0.2 * torch.rand(n, 1, 1, 1, generator=generator)
    p0, p1 = distort(ref, strength, generator), distort(ref, strength, generator)
    with torch.no_grad():
        judge = (metric(ref, p1) < metric(ref, p0)).float()
    return {"ref": ref, "p0": p0, "p1": p1, "judge": judge[:, None]}


class Triplets(torch.utils.data.Dataset):
    """A dict of equally long tensors as a dataset of dict items (as the BAPPS datasets yield)."""

    def __init__(self, tensors):
        self.tensors = tensors

    def __len__(self):
        return len(next(iter(self.tensors.values())))

    def __getitem__(self, i):
        return {k: v[i] for k, v in self.tensors.items()}


def agreement(metric, triplets):
    """2AFC score of `metric` on the judged triplets (the fraction of judgements it agrees with)."""
    from experiment import score_2afc
    metric.eval()
    with torch.no_grad():
        d0, d1 = metric(triplets["ref"], triplets["p0"]), metric(triplets["ref"], triplets["p1"])
    return score_2afc(d0, d1, triplets["judge"])[0]
