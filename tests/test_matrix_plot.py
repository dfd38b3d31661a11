"""matrix_plot.py: what distance.py --all-pairs --plot draws (configuration titles, the blank diagonal, cell values,
file names or a key), on matrices made here."""
import numpy as np
import pytest
import torch

from matrix_plot import NAMED_TICKS, VALUES_IN_CELLS, matrix_figure

CONFIG = ["alex", "1-4", "baseline", "sort", "false", "imagenet"]


def figure(n, weights="random:seed3"):
    values = torch.rand(n, n, generator=torch.Generator().manual_seed(n)) + 1
    matrix = ((values + values.T) / 2).fill_diagonal_(0)
    names = [f"photo_{i:02d}.png" for i in range(n)]
    fig = matrix_figure({("alex", "sort", False): matrix}, names, {("alex", "sort", False): CONFIG},
                        {"alex": weights})
    fig.canvas.draw()
    return fig, matrix, names


def test_a_small_matrix_names_its_files_writes_its_values_and_leaves_the_diagonal_blank():
    n = 7
    fig, matrix, names = figure(n)
    ax, colourbar = fig.axes[:2]
    title = ax.get_title()
    for part in ("alex", "points 1-4", "sort", "channel norm off", "weights random:seed3"):
        assert part in title
    assert [t.get_text() for t in ax.get_xticklabels()] == names == [t.get_text() for t in ax.get_yticklabels()]
    shown = np.ma.getdata(ax.get_images()[0].get_array())
    assert np.isnan(np.diagonal(shown)).all() and "blank" in colourbar.get_ylabel() + fig._suptitle.get_text()
    np.testing.assert_allclose(shown[~np.eye(n, dtype=bool)], matrix.numpy()[~np.eye(n, dtype=bool)])
    cells = {t.get_text() for t in ax.texts}
    assert len(ax.texts) == n * (n - 1) and f"{matrix[0, 1].item():.3g}" in cells
    assert "distance" in colourbar.get_ylabel()
    width, height = fig.get_size_inches() * 100
    assert min(width, height) >= 800


@pytest.mark.parametrize("n", (VALUES_IN_CELLS + 1, NAMED_TICKS + 1))
def test_larger_matrices_drop_the_values_then_name_by_index_with_a_key(n):
    fig, _, names = figure(n)
    ax = fig.axes[0]
    assert len(ax.texts) == 0
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    key = "\n".join(t.get_text() for a in fig.axes for t in a.texts)
    if n <= NAMED_TICKS:
        assert ticks == names and key == ""
    else:
        assert all(t.lstrip("−-").isdigit() for t in ticks if t) and "index" in ax.get_xlabel()
        assert all(f"{i:>4}  {name}" in key for i, name in enumerate(names))
