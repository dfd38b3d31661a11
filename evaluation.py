"""The BAPPS evaluation: the validation sets, every configuration's distances on them, their scores.

`bapps_sets` gives the 2AFC and JND validation sets; `evaluate` scores any number of
configurations on one of them, and on the shift study's crops of a 2AFC set
(`shift_study.py`), with each image (and each crop) through each backbone once (a 2AFC
reference serves both of its comparisons), every score with its bootstrap interval
(`bootstrap.py`); `evaluate_net` computes what a results file (and, with a distances folder,
`distance_files.py`) lacks for one network and saves it set by set, so an interrupted run
keeps what it finished.
"""
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm import tqdm

from bootstrap import Estimate, map_interval, mean_intervals
from dataset_collector import SUBSPLITS, dataset_collector, tree_kind
from distance_files import has_distances, save_distances
from metric import PIXEL_CONFIG, PIXEL_METRICS, agreements_2afc, batch_distances, score_jnd
from results import config_row, read_results, result_key, save_results, score_rows
from shift_study import rank_flips, shift_dataset, shift_of, shift_pairs, shift_sets, shifted_images

BAPPS_SETS = {"val": ("2afc", "val"), "jnd": ("jnd", "jnd/val")}  # --splits name: (dataset column, BAPPS split)
PAIRS = {"2afc": (("ref", "p0"), ("ref", "p1")), "jnd": (("p0", "p1"),)}
LABELS = {"2afc": "judge", "jnd": "same"}
DISTANCE_NAMES = {"2afc": ("d0", "d1"), "jnd": ("d",)}  # the arrays of --save-distances, per pair


def set_distances(metrics, loader, pairs, label, device="cpu", desc=None, images=None):
    """Distances of every configuration on one BAPPS set, each image through the backbone once.

    Returns ({config: [distances (N,) per pair]}, labels (N,)), on the CPU. `pairs` name the
    images compared, (ref, p0) and (ref, p1) for 2AFC (a reference serves both) or (p0, p1) for
    JND, with labels `label` (judge or same); `images(batch)` makes the images the pairs name
    (default: the batch's own). See `batch_distances` for `metrics`.
    """
    distances, labels = {config: [[] for _ in pairs] for config in metrics}, []
    with torch.inference_mode():
        for batch in tqdm(loader, desc=desc, unit="batch"):
            made = images(batch) if images is not None else batch
            needed = {name: made[name].to(device, non_blocking=True) for pair in pairs for name in pair}
            for config, per_pair in batch_distances(metrics, needed, pairs).items():
                for i, d in enumerate(per_pair):
                    distances[config][i].append(d.float().cpu())
            labels.append(batch[label].flatten().float())
    return {config: [torch.cat(d) for d in per_pair] for config, per_pair in distances.items()}, torch.cat(labels)


class SetEvaluation(NamedTuple):
    """What one set gave: {config: {measure: bootstrap.Estimate}}, {config: [distances per pair]}, labels."""
    scores: dict
    distances: dict
    labels: torch.Tensor


def twoafc_measures(distances, judge, base=None):
    """{config: {measure: Estimate}}: 2AFC score and accuracy of {config: (d0, d1)} and, given the shift-0
    distances `base` ({config: (d0, d1)}), the rank flips; the intervals of all from one set of resamples."""
    columns = {}
    for config, (d0, d1) in distances.items():
        columns[config, "score"], columns[config, "accuracy"] = agreements_2afc(d0, d1, judge)
        if base is not None:
            columns[config, "rank_flips"] = rank_flips(d0, d1, *base[config])
    low, high = mean_intervals(np.stack([column.numpy() for column in columns.values()], axis=1))
    scores = {}
    for (config, measure), column, lo, hi in zip(columns, columns.values(), low, high):
        scores.setdefault(config, {})[measure] = Estimate(column.mean().item(), float(lo), float(hi))
    return scores


def jnd_measures(distances, same):
    """{config: {"map": Estimate}} of {config: (d,)}."""
    return {config: {"map": Estimate(score_jnd(d, same), *map(float, map_interval(d.numpy(), same.numpy())))}
            for config, (d,) in distances.items()}


def evaluate(metrics, loader, dataset, device="cpu", desc=None, measured=None):
    """{result dataset: SetEvaluation} of `metrics` on one BAPPS set ("2afc": score, accuracy; "jnd": map).

    `measured` (default: `dataset` alone) names what to compute from this one pass: the set
    itself and, for 2AFC, any of its shift studies "shift<n>" (score, accuracy, and for n >= 1
    rank_flips against shift 0, which is then computed too).
    """
    measured = (dataset,) if measured is None else tuple(measured)
    requested = [shift_of(name) for name in measured if shift_of(name) is not None]
    shifts = sorted({0, *requested}) if requested else []
    plain = list(PAIRS[dataset]) if dataset in measured else []
    pairs = plain + shift_pairs(shifts)
    images = None if not shifts else lambda batch: {**batch, **shifted_images(batch, shifts)}
    distances, labels = set_distances(metrics, loader, pairs, LABELS[dataset], device, desc, images)
    found = {}
    if plain:
        plain_distances = {config: d[:len(plain)] for config, d in distances.items()}
        measures = twoafc_measures if dataset == "2afc" else jnd_measures
        scores = measures(plain_distances, labels)
        found[dataset] = SetEvaluation(scores, plain_distances, labels)
    by_shift = {n: {config: d[len(plain) + 2 * i: len(plain) + 2 * i + 2] for config, d in distances.items()}
                for i, n in enumerate(shifts)}
    for n, shifted in by_shift.items():
        scores = twoafc_measures(shifted, labels, by_shift[0] if n else None)
        found[shift_dataset(n)] = SetEvaluation(scores, shifted, labels)
    return {name: found[name] for name in measured}


class BappsSet(NamedTuple):
    """One BAPPS set to evaluate: `dataset` "2afc" or "jnd", its `subsplit`, the `data` (a Dataset) and the
    `identity` of its examples (`<kind>:<hash>`, see `BAPPSSubsplit.identity`)."""
    dataset: str
    subsplit: str
    data: Dataset
    identity: str


def bapps_sets(root="datasets/BAPPS", splits=tuple(BAPPS_SETS), subsplits=None, download=True, limit=None):
    """[BappsSet] of the requested BAPPS sets, 2AFC before JND, subsplits in BAPPS order.

    `subsplits` (default all) applies to each split that has them; `limit` keeps the
    first examples of each set (and its identity covers only those).
    """
    sets, kind = [], None
    for split in splits:
        dataset, bapps_split = BAPPS_SETS[split]
        for subsplit in SUBSPLITS[bapps_split]:
            if subsplits is None or subsplit in subsplits:
                data = dataset_collector("BAPPS", bapps_split, subsplit, root=root, download=download)
                kind = kind or tree_kind(root)
                identity = f"{kind}:{data.identity(limit)}"
                if limit is not None:
                    data = Subset(data, range(min(limit, len(data))))
                sets.append(BappsSet(dataset, subsplit, data, identity))
    return sets


def make_loader(data, batch_size=50, num_workers=0, device="cpu"):
    """An ordered DataLoader over one set; pinned memory only when feeding a GPU."""
    return DataLoader(data, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                      pin_memory=torch.device(device).type == "cuda")


def net_configs(net, configs, points, per_layer=False):
    """The configurations of one network: (method, channel_norm, points) for each of `configs` over all of
    `points` at once or, `per_layer`, over each point alone; a pixel metric has its one configuration."""
    if net in PIXEL_METRICS:
        return [PIXEL_CONFIG]
    point_sets = [(p,) for p in points] if per_layer else [tuple(points)]
    return [(*config, point_set) for point_set in point_sets for config in configs]


def missing_work(results_file, run, configs, sets, overwrite=False, distances_dir=None):
    """[(BappsSet, configs missing there)] of `sets`: what `results_file` lacks for `run`.

    A configuration counts as done only when computed on the same examples (their number and
    identity) with the same weights (`run`'s columns), with its interval (a row written before
    intervals is computed again to gain one) and, given `distances_dir`, when its distances are
    saved there too; `overwrite` counts nothing as done.
    """
    done = set() if overwrite else {result_key(row) for row in read_results(results_file) if row["ci_low"] != ""}
    todo = []
    for bapps_set in sets:
        missing = [config for config in configs if result_key(config_row(run, config, bapps_set)) not in done
                   or (distances_dir is not None and not has_distances(distances_dir, run, config, bapps_set))]
        if missing:
            todo.append((bapps_set, missing))
    return todo


def passes(todo):
    """[(source set, [(BappsSet, missing configs)])]: `todo` grouped by the examples it reads, so that a
    subsplit's plain 2AFC and shift study results come from one pass over it."""
    grouped = {}
    for bapps_set, missing in todo:
        source = bapps_set._replace(dataset="2afc") if shift_of(bapps_set.dataset) is not None else bapps_set
        grouped.setdefault((source.dataset, source.subsplit, source.identity), (source, []))[1].append(
            (bapps_set, missing))
    return list(grouped.values())


def pass_description(net, source, outputs):
    """The progress bar's label: `alex 2afc/cnn`, with the shifts computed, `alex 2afc/cnn + shift 0 1 2 3`."""
    shifts = [str(shift_of(s.dataset)) for s, _ in outputs if shift_of(s.dataset) is not None]
    return f"{net} {source.dataset}/{source.subsplit}" + (f" + shift {' '.join(shifts)}" if shifts else "")


def evaluate_net(net, configs, sets, results_file, run, build, device="cpu", batch_size=50, num_workers=0,
                 overwrite=False, shifts=(), distances_dir=None):
    """Score `net` on `sets` (and the shift study at `shifts` on their 2AFC sets) for each of `configs` that
    `results_file` lacks, saving after each pass over a set.

    `run` holds the columns every row shares (`results.run_columns`); `build(configs)` returns
    {config: metric} and runs only if something is missing, so a finished net is never even loaded.
    With `distances_dir`, every example's distances are saved there too (`distance_files.py`).
    Returns the configurations computed now (the others were reused).
    """
    todo = missing_work(results_file, run, configs, [*sets, *shift_sets(sets, shifts)], overwrite, distances_dir)
    if not todo:
        print(f"{net}: every requested result is already in {results_file}; --overwrite recomputes them")
        return set()
    computed = list(dict.fromkeys(config for _, missing in todo for config in missing))
    metrics = build(computed)
    for metric in metrics.values():
        metric.to(device).eval()
    for source, outputs in passes(todo):
        needed = dict.fromkeys(config for _, missing in outputs for config in missing)
        found = evaluate({config: metrics[config] for config in needed},
                         make_loader(source.data, batch_size, num_workers, device), source.dataset, device,
                         desc=pass_description(net, source, outputs), measured=[s.dataset for s, _ in outputs])
        rows = []
        for bapps_set, missing in outputs:
            result = found[bapps_set.dataset]
            rows += score_rows(run, bapps_set, {config: result.scores[config] for config in missing})
            if distances_dir is not None:
                for config in missing:
                    save_distances(distances_dir, run, config, bapps_set, distance_arrays(source.dataset, result,
                                                                                          config))
        save_results(results_file, rows)
    return set(computed)


def distance_arrays(dataset, result, config):
    """{name: array} of one configuration on one set, as --save-distances writes it."""
    names = DISTANCE_NAMES[dataset]
    return {**dict(zip(names, result.distances[config])), LABELS[dataset]: result.labels}
