"""BAPPS scoring and evaluation: hand-computed cases, the lpips package's formulas, results.csv."""
import math

import lpips
import pytest
import torch

from experiment import score_2afc, score_jnd


class OneBatch:
    """The `load_data()` interface of lpips' data loaders, serving one batch."""

    def __init__(self, **batch):
        self.batch = batch

    def load_data(self):
        return [self.batch]


def lpips_2afc(d0, d1, judge):
    """lpips.score_2afc_dataset on given distances: its `func(ref, p)` returns p itself."""
    loader = OneBatch(ref=torch.zeros(len(d0)), p0=d0, p1=d1, judge=judge)
    return lpips.score_2afc_dataset(loader, lambda ref, p: p)[0]


def lpips_jnd(d, same):
    """lpips.score_jnd_dataset on given distances: its `func(p0, p1)` returns p1 itself."""
    loader = OneBatch(p0=torch.zeros(len(d)), p1=d, same=same)
    return lpips.score_jnd_dataset(loader, lambda p0, p1: p1)[0]


def test_score_2afc_hand_computed_with_ties():
    d0 = torch.tensor([1.0, 2.0, 3.0, 3.0, 5.0])
    d1 = torch.tensor([2.0, 1.0, 3.0, 4.0, 5.0])
    judge = torch.tensor([0.2, 0.7, 0.6, 1.0, 0.3])
    # agreement: 0.8, 0.7, tie 0.5, 0.0, tie 0.5; accuracy: 1, 1, 1 (tie, judge >= .5), 0, 0 (tie, judge < .5)
    score, accuracy = score_2afc(d0, d1, judge)
    assert score == pytest.approx((0.8 + 0.7 + 0.5 + 0.0 + 0.5) / 5)
    assert accuracy == pytest.approx(3 / 5)


def test_score_2afc_equals_lpips_on_random_distances_with_ties():
    g = torch.Generator().manual_seed(0)
    d0 = torch.randint(0, 4, (200,), generator=g).float()  # many ties
    d1 = torch.randint(0, 4, (200,), generator=g).float()
    judge = torch.rand(200, generator=g)
    assert score_2afc(d0, d1, judge)[0] == pytest.approx(lpips_2afc(d0, d1, judge), abs=1e-12)


def test_score_jnd_hand_computed():
    d = torch.tensor([0.1, 0.4, 0.2, 0.3])
    same = torch.tensor([1.0, 0.0, 0.0, 1.0])
    # ranked: same, diff, same, diff -> precision 1, 1/2, 2/3, 1/2 at recall 1/2, 1/2, 1, 1;
    # envelope: 1 up to recall 1/2, then 2/3 up to recall 1
    assert score_jnd(d, same) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    assert score_jnd(d, same) == pytest.approx(lpips_jnd(d, same))


def test_score_jnd_all_same_is_one_and_no_positive_is_nan():
    d = torch.tensor([0.3, 0.1, 0.2])
    assert score_jnd(d, torch.ones(3)) == pytest.approx(1.0)
    assert math.isnan(score_jnd(d, torch.zeros(3)))


@pytest.mark.parametrize("fractional", [False, True])
def test_score_jnd_equals_lpips_on_random_distances(fractional):
    g = torch.Generator().manual_seed(1)
    d = torch.rand(300, generator=g)
    same = torch.rand(300, generator=g)
    same = same if fractional else (same < 0.4).float()
    assert score_jnd(d, same) == pytest.approx(lpips_jnd(d, same), abs=1e-12)


def test_scores_refuse_empty_or_mismatched_inputs():
    with pytest.raises(ValueError, match="lengths 2, 3, 2"):
        score_2afc(torch.zeros(2), torch.zeros(3), torch.zeros(2))
    with pytest.raises(ValueError, match="lengths 0, 0"):
        score_jnd(torch.zeros(0), torch.zeros(0))
