"""The n-pixel shift study of ST-LPIPS (Ghildyal & Liu, ECCV 2022) on the BAPPS 2AFC validation sets.

For a triplet (ref, p0, p1) and a shift n, the distorted images p0 and p1 are cropped to the
columns [n, W - 3 + n) and the reference to [0, W - 3) (`SHIFT_OFFSET` 3: every crop is W - 3
wide, 61 of BAPPS's 64 columns; all rows are kept, as ST-LPIPS's `get_shifted_pair` keeps them).
Shift 0 is the cropped baseline. At each n the 2AFC score is computed as usual; the rank-flip
rate is the fraction of triplets whose preference `d0 < d1` at shift n differs from that at
shift 0 (ST-LPIPS's `rank_flips.py`: 100 x flips / triplets per subsplit; the mean over
subsplits is the reported r_rf).

Results are sets of their own (`dataset` "shift<n>"), one per subsplit and shift, so they never
mix with the plain 2AFC rows; one pass over a subsplit computes every requested shift, the
reference crop shared by all of them and each crop through the backbone once.
"""
import re

import torch

SHIFT_OFFSET = 3
REF_CROP = "ref_crop"


def shift_dataset(n):
    """The `dataset` of shift n's results: "shift<n>"."""
    return f"shift{n}"


def shift_of(dataset):
    """n of a "shift<n>" dataset, else None."""
    match = re.fullmatch(r"shift(\d+)", dataset)
    return int(match.group(1)) if match else None


def check_shifts(shifts):
    """Raise ValueError unless every shift is a whole number from 0 to SHIFT_OFFSET (crops stay inside the image)."""
    bad = [n for n in shifts if not 0 <= n <= SHIFT_OFFSET]
    if bad:
        raise ValueError(f"--shift {' '.join(map(str, bad))}: shifts go from 1 to {SHIFT_OFFSET} (the crops are "
                         f"{SHIFT_OFFSET} columns narrower than the image, and shift 0 is always computed)")


def shift_sets(sets, shifts):
    """The shift study's sets: for each 2AFC set of `sets` (`evaluation.BappsSet`), one per shift 0 and `shifts`."""
    if not shifts:
        return []
    ns = sorted({0, *shifts})
    return [bapps_set._replace(dataset=shift_dataset(n)) for bapps_set in sets if bapps_set.dataset == "2afc"
            for n in ns]


def crop_name(image, n):
    return f"{image}_shift{n}"


def shift_pairs(shifts):
    """The comparisons of the study: the cropped reference against p0 and p1 at each shift, (d0, d1) in order."""
    return [(REF_CROP, crop_name(p, n)) for n in shifts for p in ("p0", "p1")]


def shifted_images(batch, shifts):
    """{name: images} of one 2AFC batch: the reference's crop and p0's and p1's at each shift (contiguous copies)."""
    width = batch["ref"].shape[-1]
    if width <= SHIFT_OFFSET:
        raise ValueError(f"the shift study crops {SHIFT_OFFSET} columns off images {width} pixels wide: "
                         f"nothing would be left")
    images = {REF_CROP: batch["ref"][..., : width - SHIFT_OFFSET].contiguous()}
    for n in shifts:
        for p in ("p0", "p1"):
            images[crop_name(p, n)] = batch[p][..., n: width - SHIFT_OFFSET + n].contiguous()
    return images


def rank_flips(d0, d1, base_d0, base_d1):
    """Per triplet, float64 (N,): 1 where the preference d0 < d1 differs from that of the shift-0 distances."""
    return ((torch.as_tensor(d0) < torch.as_tensor(d1)) != (torch.as_tensor(base_d0) < torch.as_tensor(base_d1))
            ).double().flatten()
