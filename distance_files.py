"""Every example's distances (`--save-distances`), as .npz files that numpy alone reads, and the paired
comparison of two configurations from them (`--compare`).

    OUT/distances/<configuration>/<dataset>_<subsplit>_<data>.npz

`<configuration>` is `net_layers_variant_method_cn|nocn_normalize_v<version>_<limit>_<hash>`, the
hash (8 hex digits of a SHA-256) covering every column that names the configuration and its weights;
`<data>` is the set's `data` identity (`bapps-1a2b3c4d`), so files of other examples never replace
each other. Each file holds float32 arrays `d0`, `d1` (the distances of p0 and p1 to the
reference) and `judge` for 2AFC and shift sets, `d` and `same` for JND, in the order of the
set's examples (sorted by file stem), and the results.csv key columns of its rows as 0-d string
arrays (`net`, `layers`, ..., `weights`, `data`):

    z = np.load("logs/perceptual_metric/distances/alex_.../2afc_traditional_bapps-1a2b3c4d.npz")
    agreement = (z["d0"] < z["d1"]) * (1 - z["judge"]) + (z["d1"] < z["d0"]) * z["judge"] + (z["d0"] == z["d1"]) / 2

Each file is written atomically (complete or absent).
"""
import hashlib
from pathlib import Path
from typing import NamedTuple

import numpy as np

from bootstrap import METHOD, paired_difference
from cli import atomic_open
from metric import agreements_2afc
from results import KEY_COLUMNS, config_row

FOLDER = "distances"
SET_COLUMNS = ("dataset", "subsplit", "n", "data")  # what names the set rather than the configuration


def distances_folder(out):
    return Path(out) / FOLDER


def configuration_name(row):
    """The folder of one configuration's files, from its results row."""
    norm = {"true": "cn", "false": "nocn"}.get(row["channel_norm"], row["channel_norm"])
    readable = [row["net"], row["layers"], row["variant"], row["method"], norm, row["normalize"],
                f"v{row['version']}", row["limit"]]
    digest = hashlib.sha256("\0".join(row[c] for c in KEY_COLUMNS if c not in SET_COLUMNS).encode()).hexdigest()
    return "_".join(readable + [digest[:8]])


def distances_path(folder, run, config, bapps_set):
    """Where `config`'s distances on `bapps_set` (an `evaluation.BappsSet`) go."""
    row = config_row(run, config, bapps_set)
    data = row["data"].replace(":", "-")
    return Path(folder) / configuration_name(row) / f"{row['dataset']}_{row['subsplit']}_{data}.npz"


def has_distances(folder, run, config, bapps_set):
    return distances_path(folder, run, config, bapps_set).is_file()


def save_distances(folder, run, config, bapps_set, arrays):
    """Write {name: array} (distances and labels) of `config` on `bapps_set`, with its key columns, atomically."""
    row = config_row(run, config, bapps_set)
    columns = {column: np.array(row[column]) for column in KEY_COLUMNS}
    with atomic_open(distances_path(folder, run, config, bapps_set)) as file:
        np.savez(file, **columns, **{name: np.asarray(a, dtype=np.float32) for name, a in arrays.items()})


def load_distances(folder, run, config, bapps_set):
    """{name: array} of a file written by `save_distances`; OSError naming the file and the fix if it is missing."""
    path = distances_path(folder, run, config, bapps_set)
    try:
        with np.load(path, allow_pickle=False) as file:
            return {name: file[name] for name in file.files}
    except FileNotFoundError:
        raise FileNotFoundError(f"no saved distances at {path}: rerun with --save-distances") from None


# ---------------------------------------------------------------- paired comparison


def config_label(net, config):
    """A configuration as --compare names it: `net/layers/method/cn|nocn` (a pixel metric: its name)."""
    method, norm, *points = config
    if method == "-":
        return net
    layers = "-".join(map(str, points[0])) if points else "default"
    return f"{net}/{layers}/{method}/{'cn' if norm else 'nocn'}"


def find_config(spec, candidates):
    """The one of `candidates` ([(net, config)]) that `spec` names: every `/`-separated part of it is the net, the
    layers, the method or cn / nocn of that configuration. ValueError listing the candidates otherwise."""
    parts = spec.split("/")
    found = [c for c in candidates if all(part in config_label(*c).split("/") for part in parts)]
    if len(found) != 1:
        listed = ", ".join(config_label(*c) for c in candidates)
        problem = "matches none" if not found else f"matches {len(found)}"
        raise ValueError(f"--compare {spec} {problem} of this run's configurations ({listed}); name one by its "
                         f"net, layers, method and cn or nocn, joined by '/'")
    return found[0]


class Comparison(NamedTuple):
    """Two configurations' mean 2AFC scores over the same subsplits and B minus A (`bootstrap.Difference`)."""
    subsplits: tuple
    mean_a: float
    mean_b: float
    difference: object


def compare_2afc(folder, a, b, sets):
    """The paired comparison of configurations `a` and `b` ((run, config) each) on the 2AFC `sets`, from their
    saved distances; ValueError if the two were not evaluated on the same judgements."""
    strata, means = [], ([], [])
    for bapps_set in sets:
        found = [load_distances(folder, run, config, bapps_set) for run, config in (a, b)]
        if not np.array_equal(found[0]["judge"], found[1]["judge"]):
            raise ValueError(f"the saved distances of the two configurations on {bapps_set.subsplit} have other "
                             f"judgements: rerun with --save-distances --overwrite")
        scores = [agreements_2afc(f["d0"], f["d1"], f["judge"])[0].numpy() for f in found]
        strata.append(tuple(scores))
        for mean, score in zip(means, scores):
            mean.append(score.mean())
    return Comparison(tuple(s.subsplit for s in sets), float(np.mean(means[0])), float(np.mean(means[1])),
                      paired_difference(strata))


def comparison_report(label_a, label_b, comparison):
    """The comparison as lines of text, in 2AFC points."""
    d = comparison.difference
    return "\n".join([
        f"paired comparison on the 2AFC subsplits {' '.join(comparison.subsplits)} ({METHOD}, stratified by "
        f"subsplit, the same triplets for both):",
        f"  A {label_a}: mean 2AFC {100 * comparison.mean_a:.2f}",
        f"  B {label_b}: mean 2AFC {100 * comparison.mean_b:.2f}",
        f"  B - A: {100 * d.value:+.2f} points, 95% interval [{100 * d.low:+.2f}, {100 * d.high:+.2f}], "
        f"p = {d.p:.3g}"])
