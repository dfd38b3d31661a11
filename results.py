"""results.csv: the schema of the BAPPS results, reading, merging, saving, and the table.

One row per measurement (`RESULT_COLUMNS`). A row is identified by every column but its
measurement and value (`result_key`): the configuration, the examples and the weights it was
computed with, so a result is reused only for the same work. A file written before a column
existed is read with that column's meaning for old rows (`OLD_FILE_DEFAULTS`) and rewritten with
it; a damaged line is an error naming the file and the line, and the file is left as it was.
`results_table` lays the rows out as the LPIPS paper does (configurations x subsplits, then the
shift study's columns), each value ± the half-width of its bootstrap interval (`ci_low`, `ci_high`).
"""
import csv
import hashlib
import io
import math
import os
import re
import statistics
from pathlib import Path

from cli import locked, write_atomic
from bapps_archives import SUBSPLITS
from loss_networks import DEFAULT_LAYERS, NETWORKS, layers_text
from metric import (METHODS, NORMALIZATIONS, NOT_APPLICABLE, OFFICIAL_VERSIONS, PIXEL_METRICS, VARIANTS,
                    official_lpips_path)
from shift_study import shift_dataset, shift_of

RESULT_COLUMNS = ("net", "layers", "variant", "method", "channel_norm", "normalize", "version",
                  "dataset", "subsplit", "measure", "value", "n", "limit", "weights", "ci_low", "ci_high", "data")
MEASUREMENT = ("measure", "value", "ci_low", "ci_high")  # what a computation gives; the rest says what was computed
KEY_COLUMNS = tuple(column for column in RESULT_COLUMNS if column not in MEASUREMENT)
# what a results.csv written before a column existed means by it: rows that can never be reused
# (the data and weights they were computed on are unknown), but are kept and shown
OLD_FILE_DEFAULTS = {"layers": lambda row: layers_text(DEFAULT_LAYERS.get(row["net"], ())),
                     "limit": lambda row: "unknown", "weights": lambda row: "unknown",
                     "ci_low": lambda row: "", "ci_high": lambda row: "", "data": lambda row: "unknown"}
TABLE_KEY = ("net", "layers", "variant", "method", "channel_norm", "normalize", "limit", "data", "weights")
TABLE_ORDER = {"net": (*PIXEL_METRICS, *NETWORKS), "variant": VARIANTS, "method": METHODS,
               "channel_norm": ("true", "false"), "normalize": tuple(NORMALIZATIONS)}
TABLE_NOTE = ("2AFC score, JND mAP and rank-flip rates (r_rf) in %. A value ± h: h is how far its 95% bootstrap "
              "interval (results.csv's ci_low, ci_high) reaches from it on the farther side, so value ± h covers the "
              "interval; a mean is over the subsplits present in its row, its h the subsplits' h added in "
              "quadrature, sqrt(sum h_i^2) / k (they are independent samples). A configuration with several "
              "trained versions shows mean ± standard deviation over them instead. shift<n> 2AFC, shift<n> r_rf: "
              "the n-pixel shift study (experiment.py --shift), its mean 2AFC score at shift n (shift0: the "
              "cropped baseline) and the mean share of triplets whose preference flips from shift 0 to shift n. "
              "JND mAP is the mean over the JND subsplits that have a 'same' pair (the mAP of one without is "
              "undefined, nan in results.csv; – when no subsplit has one). "
              "examples: all, or the first N of each set (--limit); data: bapps, or synthetic for a tree written by "
              "dataset_collector.py --synthetic (random, meaningless scores); weights: the backbone file and the "
              "linear weights, each with the start of its SHA-256. l2, ssim: LPIPS's L2 and DSSIM in Lab or RGB, "
              f"where '{NOT_APPLICABLE}' marks what does not apply to them.")


def results_path(out):
    return Path(out) / "results.csv"


_FILE_HASHES = {}


def file_identity(path):
    """`<file name>@<first 8 hex digits of its SHA-256>`: names weights by their content."""
    stat = os.stat(path)
    cache_key = (os.path.realpath(path), stat.st_size, stat.st_mtime_ns)
    if cache_key not in _FILE_HASHES:
        with open(path, "rb") as file:
            _FILE_HASHES[cache_key] = hashlib.file_digest(file, "sha256").hexdigest()[:8]
    return f"{Path(path).name}@{_FILE_HASHES[cache_key]}"


def lin_identity(path, lpips_weights):
    """The linear weights' part of `weights`; a trained version is named by its training's folder."""
    name = file_identity(path)
    if lpips_weights in OFFICIAL_VERSIONS:
        return f"{lpips_weights}:{name}"
    folder = Path(path).parent
    return f"{folder.parent.name}/{folder.name}/{name}" if re.fullmatch(r"version_\d+", folder.name) else name


def weights_identity(net, backbone_file=None, lpips_weights=None, random_seed=0):
    """What a result was computed with: the backbone weights file (None: random, drawn from `random_seed`)
    and the linear weights (a path, or "official" / "official-v0.0", the lpips package's).

    Files are named by the start of their SHA-256, so a result is reused only for the same weights.
    """
    backbone = file_identity(backbone_file) if backbone_file is not None else f"random:seed{random_seed}"
    if lpips_weights is None:
        return backbone
    path = official_lpips_path(net, lpips_weights) if lpips_weights in OFFICIAL_VERSIONS else lpips_weights
    return f"{backbone} lin={lin_identity(path, lpips_weights)}"


def backbones_identity(net, backbones, lpips_weights=None):
    """`weights_identity` of `net` with its backbone from `backbones` (a `cli.Backbones`: a weights file, or
    random weights drawn from its seed)."""
    return weights_identity(net, backbones.file(net), lpips_weights, backbones.random_seed)


def run_columns(net, variant="baseline", normalize="imagenet", version=0, limit=None, weights=None):
    """The columns every results row of one evaluation of `net` shares; `limit` is --limit (None: all),
    `weights` the `weights_identity` of what it was computed with (a pixel metric has none)."""
    limit = "all" if limit is None else str(limit)
    if net in PIXEL_METRICS:  # no backbone: nothing trained, no variant or weights; normalize is the colour space
        return {"net": net, "variant": NOT_APPLICABLE, "normalize": normalize.lower(), "version": "0",
                "limit": limit, "weights": NOT_APPLICABLE}
    return {"net": net, "variant": variant, "normalize": normalize, "version": str(version), "limit": limit,
            "weights": weights}


def config_row(run, config, bapps_set):
    """The key columns of a results row, as written in results.csv; config is (method, channel_norm, points),
    or a pixel metric's PIXEL_CONFIG, which has no points; `bapps_set` an `evaluation.BappsSet`."""
    method, norm, *points = config
    return {**run, "layers": layers_text(points[0]) if points else NOT_APPLICABLE, "method": method,
            "channel_norm": {True: "true", False: "false"}.get(norm, norm), "dataset": bapps_set.dataset,
            "subsplit": bapps_set.subsplit, "n": str(len(bapps_set.data)), "data": bapps_set.identity}


def result_key(row):
    """What identifies a computed configuration, its data and its weights: everything but measure and value."""
    return tuple(row[column] for column in KEY_COLUMNS)


def score_rows(run, bapps_set, scores):
    """results.csv rows for {config: {measure: bootstrap.Estimate}} on one set (`evaluation.evaluate`'s scores)."""
    return [{**config_row(run, config, bapps_set), "measure": measure, "value": repr(estimate.value),
             "ci_low": "" if estimate.low is None else repr(estimate.low),
             "ci_high": "" if estimate.high is None else repr(estimate.high)}
            for config, measures in scores.items() for measure, estimate in measures.items()]


def read_results(path):
    """The rows of a results.csv (dicts of strings); [] when there is no file yet.

    A file written before a column existed is read with that column's meaning for old
    rows (`OLD_FILE_DEFAULTS`). A line that is cut, has extra fields or a value that is
    not a number is an error naming the file and the line: such a file is never used.
    """
    if not os.path.exists(path):
        return []
    with open(path, newline="") as file:
        reader = csv.DictReader(file)
        columns = tuple(reader.fieldnames or ())
        required = [c for c in RESULT_COLUMNS if c not in OLD_FILE_DEFAULTS]
        if not set(required) <= set(columns) <= set(RESULT_COLUMNS):
            raise ValueError(f"{path} has the columns {','.join(columns)}, not {','.join(RESULT_COLUMNS)}: "
                             f"it is not a results file of this program; move it away or choose another --out")
        return [checked_row(row, path, reader.line_num, len(columns)) for row in reader]


def checked_row(row, path, line, width):
    """A row of `path` completed with OLD_FILE_DEFAULTS; ValueError naming the line if it is damaged."""
    if None in row or None in row.values():
        raise ValueError(f"{path}, line {line}: the line is cut or has extra fields (the header has {width}); "
                         f"repair or delete that line, or choose another --out")
    for column, kind in (("value", float), ("n", int), ("ci_low", float), ("ci_high", float)):
        if column.startswith("ci_") and row.get(column, "") == "":
            continue  # no interval: rows of files from before intervals
        try:
            kind(row[column])
        except ValueError:
            raise ValueError(f"{path}, line {line}: {column} {row[column]!r} is not a number; repair or delete "
                             f"that line, or choose another --out") from None
    for column, default in OLD_FILE_DEFAULTS.items():
        if column not in row:
            row[column] = default(row)
    return row


def save_results(path, rows):
    """Merge `rows` into results.csv (a measurement already there is replaced), atomically.

    The file is read, merged and replaced under a lock of its folder, so several runs writing
    into one folder at once keep every row of each. A file in an older format is rewritten with
    every column.
    """
    with locked(Path(path).parent):
        merge_rows(path, rows)


def merge_rows(path, rows):
    merged = read_results(path)
    index = {result_key(row) + (row["measure"],): i for i, row in enumerate(merged)}
    for row in rows:
        key = result_key(row) + (row["measure"],)
        if key in index:
            merged[index[key]] = row
        else:
            index[key] = len(merged)
            merged.append(row)
    text = io.StringIO()
    writer = csv.DictWriter(text, RESULT_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(merged)
    write_atomic(path, text.getvalue())


def _cell(estimates):
    """A table cell: one version's value ± its interval's half-width, or several versions' mean ± standard
    deviation; in %."""
    present = [e for e in estimates if e is not None]
    if not present:
        return "–"
    if len(present) == 1:
        value, half = present[0]
        return f"{100 * value:.2f}" + ("" if half is None else f" ± {100 * half:.2f}")
    values = [value for value, _ in present]
    return f"{100 * statistics.fmean(values):.2f} ± {100 * statistics.stdev(values):.2f}"


def half_width(row):
    """How far the interval of a row reaches from its value, on the farther side (None: no interval)."""
    if row["ci_low"] == "" or row["ci_high"] == "":
        return None
    value = float(row["value"])
    return max(value - float(row["ci_low"]), float(row["ci_high"]) - value)


def _set_mean(run, dataset, measure):
    """(mean over the subsplits present, its half-width) of one measure; the subsplits are independent samples,
    so the half-widths add in quadrature: sqrt(sum h_i^2) / k (None if a subsplit has no interval)."""
    found = [estimate for (kind, _, name), estimate in run.items() if (kind, name) == (dataset, measure)]
    if not found:
        return None
    halves = [half for _, half in found]
    half = None if None in halves else math.sqrt(sum(h * h for h in halves)) / len(found)
    return statistics.fmean(value for value, _ in found), half


def _jnd_mean(run):
    """The mean JND mAP over the subsplits where it is defined: a subsplit with no "same" pair has no
    precision-recall curve (its mAP is nan in results.csv) and is left out rather than hide the others."""
    return _set_mean({key: estimate for key, estimate in run.items() if not math.isnan(estimate[0])}, "jnd", "map")


def _table_order(config):
    return tuple((TABLE_ORDER[column].index(value) if value in TABLE_ORDER.get(column, ()) else
                  len(TABLE_ORDER.get(column, ())), _points_order(value) if column == "layers" else value)
                 for column, value in zip(TABLE_KEY, config))


def _points_order(layers):
    # numerically: a net's rows 1, 1-4-7-11, 4, 7, 11 rather than 1, 1-4-7-11, 11, 4, 7
    return tuple(int(point) for point in layers.split("-") if point.isdigit())


def weights_group(weights):
    """`weights` with a trained version's own file left out, so that a training's versions share a row."""
    return re.sub(r"/version_\d+/\S*$", "/version_*", weights)


def table_cell(row, column):
    """What the table shows of `row`'s `column`: a training's versions share their weights' cell, and data
    is shown by its kind (the identity of each set stays in results.csv)."""
    if column == "weights":
        return weights_group(row["weights"])
    return row["data"].split(":")[0] if column == "data" else row[column]


def table_measure(row):
    """Whether the table shows `row`: 2AFC scores, JND mAPs, shift scores and rank flips."""
    measures = ("score", "rank_flips") if shift_of(row["dataset"]) is not None else \
        {"2afc": ("score",), "jnd": ("map",)}.get(row["dataset"], ())
    return row["measure"] in measures


def table_runs(rows):
    """{table row key: [{(dataset, subsplit, measure): (value, half-width)} per version]} of the rows shown.

    Rows of different data (limit) or weights never share a table row; within a trained
    family (`weights_group`), a version evaluated with several files shows the latest.
    """
    runs, latest = {}, {}
    for row in filter(table_measure, rows):
        config = tuple(table_cell(row, column) for column in TABLE_KEY)
        runs.setdefault(config, {}).setdefault((row["version"], row["weights"]), {})[
            row["dataset"], row["subsplit"], row["measure"]] = (float(row["value"]), half_width(row))
        latest.setdefault(config, {})[row["version"]] = row["weights"]
    return {config: [runs[config][version, weights] for version, weights in latest[config].items()]
            for config in runs}


def table_columns(runs):
    """[(header, function of a version's run giving (value, half-width) or None)]: the six 2AFC val subsplits,
    their mean, the JND mAP, and where there are shift rows the mean 2AFC at each shift and the mean rank-flip
    rate at each shift from 1."""
    columns = [(subsplit, lambda run, s=subsplit: run.get(("2afc", s, "score"))) for subsplit in SUBSPLITS["val"]]
    columns += [("2AFC mean", lambda run: _set_mean(run, "2afc", "score")),
                ("JND mAP", _jnd_mean)]
    shifts = sorted({shift_of(dataset) for versions in runs.values() for run in versions for dataset, *_ in run}
                    - {None})
    columns += [(f"{shift_dataset(n)} 2AFC", lambda run, n=n: _set_mean(run, shift_dataset(n), "score"))
                for n in shifts]
    columns += [(f"{shift_dataset(n)} r_rf", lambda run, n=n: _set_mean(run, shift_dataset(n), "rank_flips"))
                for n in shifts if n]
    return columns


def run_marks(run, configs, sets, computed):
    """{table row key: "computed" or "reused"} of a run's `configs` on `sets`, given those `computed` now."""
    marks = {}
    for config in configs:
        for bapps_set in sets:
            key = tuple(table_cell(config_row(run, config, bapps_set), column) for column in TABLE_KEY)
            if marks.get(key) != "computed":
                marks[key] = "computed" if config in computed else "reused"
    return marks


def results_table(rows, marks=None):
    """Markdown table, LPIPS-paper layout: a row per configuration, data and weights; the six 2AFC val
    subsplits, their mean and the JND mAP (mean over the JND subsplits), then any shift study's columns; each
    value ± the half-width of its 95% interval, versions as mean ± std. With `marks` ({table row key: "computed"
    or "reused"}, `run_marks`), only those rows, with a column saying which."""
    runs = table_runs(rows)
    if marks is not None:
        runs = {config: versions for config, versions in runs.items() if config in marks}
    columns = table_columns(runs)
    header = ["net", "layers", "variant", "method", "channel norm", "normalize", "examples", "data", "weights",
              "versions", *(name for name, _ in columns), *(["this run"] if marks is not None else [])]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for config in sorted(runs, key=_table_order):
        versions = runs[config]
        cells = [_cell([value(run) for run in versions]) for _, value in columns]
        mark = [marks[config]] if marks is not None else []
        lines.append("| " + " | ".join([*config, str(len(versions)), *cells, *mark]) + " |")
    return "\n".join(lines + ["", TABLE_NOTE]) + "\n"


def report(out, marks=None):
    """Write OUT/results.md (every configuration of OUT/results.csv) and print the table: of the configurations
    in `marks` (`run_marks`: this run's, each computed now or reused), or without marks, the whole file's."""
    rows = read_results(results_path(out))
    table = results_table(rows)
    write_atomic(Path(out) / "results.md", table)
    if marks is None:
        print(table)
        return
    print(results_table(rows, marks), end="")
    everything = table_runs(rows)
    shown, total = sum(key in everything for key in marks), len(everything)
    if total > shown:
        print(f"(this run's {shown} of the {total} configurations in {results_path(out)}; all of them: "
              f"{Path(out) / 'results.md'}, or --table all)")
