"""distance.py --all-pairs --plot: the distance matrices as one PNG, a heat map per configuration.

Each panel is titled by its configuration (net, extraction points, method, channel norm, weights, normalisation),
its diagonal (an image with itself) left blank so that the zeros do not set the colour scale, its colourbar
labelled; up to VALUES_IN_CELLS images each cell shows its value, up to NAMED_TICKS images the ticks are the
file names, beyond that indices with a key of the file names beside the matrices. At least 800 px a side.
"""
import math

from matplotlib import colormaps
from matplotlib.figure import Figure

from image_io import figure_png
from metric import PIXEL_METRICS

NAMED_TICKS = 30  # images up to which the matrix's ticks are file names; beyond, indices with a key beside
VALUES_IN_CELLS = 12  # images up to which each cell shows its value
KEY_ROWS = 45  # file names per column of the key
DPI = 100


def matrix_title(config, weights):
    """A panel's title: the configuration its matrix was computed with."""
    net, layers, variant, method, norm, normalize = config
    if net in PIXEL_METRICS:
        return f"{net} ({normalize})"
    lin = " (lin)" if variant == "lin" else ""
    return (f"{net} [points {layers}], {method}{lin}, channel norm {'on' if norm == 'true' else 'off'}\n"
            f"weights {weights}, normalize {normalize}")


def matrix_panel(ax, fig, matrix, names, title):
    """One configuration's matrix in `ax`: the diagonal masked, the values written in the cells of small
    matrices, file names (or indices) on the axes, a labelled colourbar."""
    n = len(names)
    off_diagonal = matrix.clone().fill_diagonal_(float("nan")).numpy()  # the zeros would set the colour scale
    cmap = colormaps["viridis"].with_extremes(bad="lightgray")
    image = ax.imshow(off_diagonal, cmap=cmap, interpolation="nearest")
    if n <= VALUES_IN_CELLS:
        low, high = image.get_clim()
        for i in range(n):
            for j in range(n):
                if i != j:
                    light = (off_diagonal[i, j] - low) / ((high - low) or 1) > 0.6
                    ax.text(j, i, f"{off_diagonal[i, j]:.3g}", ha="center", va="center", fontsize=8,
                            color="black" if light else "white")
    if n <= NAMED_TICKS:
        ax.set_xticks(range(n), names, rotation=90, fontsize=8)
        ax.set_yticks(range(n), names, fontsize=8)
    else:
        ax.set_xlabel("image index (key on the right)")
        ax.set_ylabel("image index")
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, shrink=0.8, label="distance (diagonal, an image with itself: blank)")


def name_key(fig, names):
    """The index -> file name key beside matrices too large for named ticks."""
    columns = math.ceil(len(names) / KEY_ROWS)
    for c, ax in enumerate(fig.subplots(1, columns, squeeze=False)[0]):
        chunk = range(c * KEY_ROWS, min(len(names), (c + 1) * KEY_ROWS))
        ax.text(0, 1, "\n".join(f"{i:>4}  {names[i]}" for i in chunk), va="top", ha="left", fontsize=7,
                family="monospace", transform=ax.transAxes)
        ax.set_axis_off()
    fig.suptitle("key: index  file", fontsize=9)


def plot_matrices(matrices, names, columns, weights):
    """`matrix_figure` as PNG bytes."""
    return figure_png(matrix_figure(matrices, names, columns, weights), dpi=DPI)


def matrix_figure(matrices, names, columns, weights):
    """The matrices {(net, method, channel_norm): (n, n)} as heat maps, one panel per configuration (titled by
    its `columns`, distance.py's configuration cells, and the `weights` {net: weights_identity} it ran with):
    at least 800 px a side, file names as ticks up to NAMED_TICKS images, indices and a key of file names
    beyond."""
    count, n = len(matrices), len(names)
    width = min(count, 5)
    rows = math.ceil(count / width)
    side = max(9 if count == 1 else 6, min(0.3 * n + 3, 24))  # inches: 900 px and more
    key_columns = 0 if n <= NAMED_TICKS else math.ceil(n / KEY_ROWS)
    key_width = 0.07 * max(map(len, names)) * key_columns + 0.6 * key_columns
    fig = Figure(figsize=(side * width + key_width, side * rows + 0.8), layout="constrained")
    main, key = fig.subfigures(1, 2, width_ratios=(side * width, key_width)) if key_columns else (fig, None)
    panels = list(main.subplots(rows, width, squeeze=False).flat)
    for ax, (config, matrix) in zip(panels, matrices.items()):
        matrix_panel(ax, main, matrix, names, matrix_title(columns[config], weights.get(config[0])))
    for ax in panels[count:]:
        ax.set_axis_off()
    if key is not None:
        name_key(key, names)
    fig.suptitle(f"Distances between all pairs of {n} images\n(diagonal left blank: each image with itself, "
                 f"distance 0)", fontsize=11)
    return fig
