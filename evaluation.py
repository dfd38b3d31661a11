"""The BAPPS evaluation: the validation sets, every configuration's distances on them, their scores.

`bapps_sets` gives the 2AFC and JND validation sets; `evaluate` scores any number of
configurations on one of them with each image through each backbone once (a 2AFC reference
serves both of its comparisons); `evaluate_net` computes what a results file lacks for one
network and saves it set by set, so an interrupted run keeps what it finished.
"""
from typing import NamedTuple

import torch
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm import tqdm

from dataset_collector import SUBSPLITS, dataset_collector, tree_kind
from metric import PIXEL_CONFIG, PIXEL_METRICS, batch_distances, score_2afc, score_jnd
from results import config_row, read_results, result_key, save_results, score_rows

BAPPS_SETS = {"val": ("2afc", "val"), "jnd": ("jnd", "jnd/val")}  # --splits name: (dataset column, BAPPS split)
PAIRS = {"2afc": (("ref", "p0"), ("ref", "p1")), "jnd": (("p0", "p1"),)}
LABELS = {"2afc": "judge", "jnd": "same"}


def set_distances(metrics, loader, dataset, device="cpu", desc=None):
    """Distances of every configuration on one BAPPS set, each image through the backbone once.

    Returns ({config: [distances (N,) per pair]}, labels (N,)), on the CPU: 2AFC pairs
    are (ref, p0), (ref, p1) with labels `judge` (a reference serves both comparisons);
    JND has (p0, p1) with labels `same`. See `batch_distances` for `metrics`.
    """
    pairs = PAIRS[dataset]
    distances, labels = {config: [[] for _ in pairs] for config in metrics}, []
    with torch.inference_mode():
        for batch in tqdm(loader, desc=desc, unit="batch"):
            images = {name: batch[name].to(device, non_blocking=True) for pair in pairs for name in pair}
            for config, per_pair in batch_distances(metrics, images, pairs).items():
                for i, d in enumerate(per_pair):
                    distances[config][i].append(d.float().cpu())
            labels.append(batch[LABELS[dataset]].flatten().float())
    return {config: [torch.cat(d) for d in per_pair] for config, per_pair in distances.items()}, torch.cat(labels)


def evaluate(metrics, loader, dataset, device="cpu", desc=None):
    """{(method, channel_norm): {measure: value}} on one BAPPS set ("2afc": score, accuracy; "jnd": map)."""
    distances, labels = set_distances(metrics, loader, dataset, device, desc)
    if dataset == "2afc":
        return {config: dict(zip(("score", "accuracy"), score_2afc(d0, d1, labels)))
                for config, (d0, d1) in distances.items()}
    return {config: {"map": score_jnd(d, labels)} for config, (d,) in distances.items()}


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


def missing_work(results_file, run, configs, sets, overwrite=False):
    """[(BappsSet, configs missing there)] of `sets`: what `results_file` lacks for `run`.

    A configuration counts as done only when computed on the same examples (their number and
    identity) with the same weights (`run`'s columns); `overwrite` counts nothing as done.
    """
    done = set() if overwrite else {result_key(row) for row in read_results(results_file)}
    todo = []
    for bapps_set in sets:
        missing = [config for config in configs if result_key(config_row(run, config, bapps_set)) not in done]
        if missing:
            todo.append((bapps_set, missing))
    return todo


def evaluate_net(net, configs, sets, results_file, run, build, device="cpu", batch_size=50, num_workers=0,
                 overwrite=False):
    """Score `net` on `sets` for each of `configs` that `results_file` lacks, saving after each set.

    `run` holds the columns every row shares (`results.run_columns`); `build(configs)` returns
    {config: metric} and runs only if something is missing, so a finished net is never even loaded.
    """
    todo = missing_work(results_file, run, configs, sets, overwrite)
    if not todo:
        print(f"{net}: every requested result is already in {results_file}; --overwrite recomputes them")
        return
    metrics = build(list(dict.fromkeys(config for _, missing in todo for config in missing)))
    for metric in metrics.values():
        metric.to(device).eval()
    for bapps_set, missing in todo:
        loader = make_loader(bapps_set.data, batch_size, num_workers, device)
        scores = evaluate({config: metrics[config] for config in missing}, loader, bapps_set.dataset, device,
                          desc=f"{net} {bapps_set.dataset}/{bapps_set.subsplit}")
        save_results(results_file, score_rows(run, bapps_set, scores))
