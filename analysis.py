"""The flaw analysis: where deep perceptual similarity metrics fail.

    python analysis.py                      # 3 nets x 5 methods x 2 channel norms over images/
    python analysis.py --net alex --method spatial sort --channel-norm on --device cpu
    python analysis.py --net resnet50 --layers 2 4 5 7      # any torchvision net of the registry
    python analysis.py --sweep translate rotate invert stain  # graded sweeps: ratio against magnitude

Every case of `IMAGE_DIR/manifest.csv` (`category,image,variant,rule`, paths relative
to IMAGE_DIR) is a question with a known answer: is the variant (a rotation, a shift,
an inversion, a global colour offset) closer to the image than every reference in
`IMAGE_DIR/ref/` (rule `closer_than_refs`), or than another variant (rule
`closer_than:<path>`)? The manifest is UTF-8 (a leading BOM, as Excel writes it, is
fine); a case listed twice (also under another spelling of its paths, such as `./a/x.png`) is an
error, and so is a `closer_than:` rule naming the case's own variant. For each network every distinct image goes
through the backbone once and each method's view of it is computed once; all
configurations are compared from those views.

Outputs in OUT (`--out`, default `logs`, checked writable, and its results.csv readable, before anything is
computed). Runs accumulate: a configuration (net, layers, weights, image set, method, channel norm) that
results.csv already holds for every case is reused, not recomputed (`--overwrite` recomputes the ones asked
for, replacing only their rows); the others are added; nothing earlier is lost. The outputs are written after
every distance is known, under a lock of OUT (two runs writing there at once keep the rows of both) and all or
nothing (each written in full to a temporary folder in OUT, then renamed over the old one; Ctrl-C or an error
leaves the old outputs as they were):

- `results.csv`: one row per configuration and case, columns
  `net,layers,method,channel_norm,category,image,variant,rule,distance,threshold_distance,
  threshold_image,success,weights,images` then `ref:<file>` for each reference (empty for the rows of an image
  set without that reference). `distance` is image to variant; `threshold_distance` is what it must beat: the
  smallest reference distance (`threshold_image` names that reference) or the distance from the image to the
  other variant of a `closer_than:` rule; `success` is `distance < threshold_distance`. `ref:<file>` is the
  distance from the image to `ref/<file>`, for every rule. `net` is canonical (`alex`, `squeeze`, `vgg`, or the
  torchvision name); `layers` the extraction points joined by `-`; `channel_norm` and `success` are
  `true`/`false`; `weights` as in experiment.py's results (`alexnet-owt-7be5be79.pth@<start of its SHA-256>`,
  `random:seed<k>`); `images` the image set, `<folder name>:<start of a SHA-256>` of the manifest, of every
  image file the cases read (relative path and content) and of `--size` (`@<N>px` added with it). A file
  written before `layers`, `weights` or `images` existed is read with the net's default points and `unknown`
  weights and images: its rows are kept and summarised, never reused.
- `summary.csv`, `summary.md`: every configuration of results.csv, a row each: `net,layers,weights,images,
  method,channel_norm`, `this_run` (`computed` or `reused` by this run, `earlier` for the others), then one
  column per category and `total`, each cell `successes/cases` (`-`: no case of that category). The run prints
  the rows of its own configurations.
- `summary.png`: the same table as a heat map (success rate), each cell labelled, each row by its net, points,
  weights, method and channel norm, this run's in bold.

`--sweep translate rotate invert stain` runs graded sweeps instead (`sweeps.py`): every original
image of the manifest transformed at a series of magnitudes (`NAME=M1,M2,...` chooses them), for
every net, method and channel norm the distance to the original divided by the original's median
distance to the references (1: as far as an unrelated image), into

- `sweep_<NAME>.csv`: one row per image, configuration and magnitude, columns
  `transform,magnitude,image,net,layers,method,channel_norm,weights,distance,median_ref_distance,
  min_ref_distance,ratio,closer_than_refs,tolerance`; `tolerance` is the image's largest
  magnitude up to which every transformed image is closer than every reference (empty: not even
  magnitude 0, an original equal to a reference);
- `sweep_<NAME>.png`: the mean ratio over the images against the magnitude, a panel per net, a
  line per method and channel norm (the median tolerance over the images in its label), the
  line ratio = 1 drawn;

and prints the median tolerances. They too are written all or nothing.

Backbone weights: torchvision's ImageNet weights from `$TORCH_HOME/hub/checkpoints`
(downloaded when missing and online), or from `--weights-dir DIR` holding files with
torchvision's names (`alexnet-owt-7be5be79.pth`, ...), or random (`--random-init`, from
`--seed`); every file the run needs is checked before anything is computed.
"""
import argparse
import csv
import math
import os
import posixpath
import shutil
import statistics
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass

import torch
from matplotlib.figure import Figure
from tqdm import tqdm

from analysis_results import (KEY_COLUMNS, RESULT_COLUMNS, cell_text, complete_configs, config_key, csv_text,
                              image_set_identity, markdown_table, merge_rows, read_results, summarize, summary_rows)
from cli import (CHANNEL_NORMS, Backbones, UserError, add_weights_flags, build_metric, check_writable, device_arg,
                 locked, network_name, positive_int, preflight, requested_configs, run_main, write_atomic)
import sweeps
from image_io import figure_png, image_files, load_image
from loss_networks import LPIPS_NETS, check_layers, layers_text
from metric import METHODS
from results import backbones_identity

MANIFEST_COLUMNS = ("category", "image", "variant", "rule")
OUTPUTS = ("results.csv", "summary.csv", "summary.md", "summary.png")
RULE_REFS = "closer_than_refs"
RULE_OTHER = "closer_than:"
REF_FOLDER = "ref"


class AnalysisError(UserError):
    """A problem with the image folder or its manifest, for the user to fix."""


@dataclass(frozen=True)
class Case:
    line: int  # line of the manifest, for error messages
    category: str
    image: str
    variant: str
    rule: str

    @property
    def other(self):
        """The variant a `closer_than:` rule compares against, else None."""
        return self.rule[len(RULE_OTHER):] if self.rule.startswith(RULE_OTHER) else None


def read_manifest(image_dir):
    """The cases of `image_dir/manifest.csv`, checked: encoding, columns, rules, that every file exists and
    that no case is listed twice."""
    path = os.path.join(image_dir, "manifest.csv")
    if not os.path.isfile(path):
        raise AnalysisError(f"no manifest at {path}: generate the images with `python images/make_images.py` "
                            f"or pass --image-dir FOLDER (a folder holding manifest.csv)")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:  # -sig: the BOM that Excel writes is skipped
            reader = csv.DictReader(f)
            missing = [c for c in MANIFEST_COLUMNS if c not in (reader.fieldnames or ())]
            if missing:
                raise AnalysisError(f"manifest {path}: header {reader.fieldnames} lacks the columns {missing}; "
                                    f"expected {','.join(MANIFEST_COLUMNS)}")
            cases = [check_case(path, image_dir, reader.line_num, row) for row in reader]
    except UnicodeDecodeError as err:
        raise AnalysisError(f"manifest {path} is not UTF-8 text (it has the byte {err.object[err.start]:#04x}); "
                            f"save it as UTF-8 (in Excel: CSV UTF-8)") from None
    if not cases:
        raise AnalysisError(f"manifest {path} lists no cases")
    first = {}
    for case in cases:
        key = (case.category, case.image, case.variant, case.rule)
        if key in first:
            raise AnalysisError(f"manifest {path}, line {case.line} repeats the case of line {first[key]} "
                                f"({','.join(key)}): delete one of them")
        first[key] = case.line
    return cases


def check_case(path, image_dir, line, row):
    """One manifest row as a Case; errors name the manifest, its line and the file."""
    where = f"manifest {path}, line {line}"
    if None in row or None in row.values():
        raise AnalysisError(f"{where}: {row} does not have exactly the columns {','.join(MANIFEST_COLUMNS)}")
    category, image, variant, rule = (row[c].strip() for c in MANIFEST_COLUMNS)
    if rule.startswith(RULE_OTHER) and rule[len(RULE_OTHER):].strip():
        rule = RULE_OTHER + manifest_path(rule[len(RULE_OTHER):])
    case = Case(line, category, manifest_path(image), manifest_path(variant), rule)
    if not case.category:
        raise AnalysisError(f"{where}: empty category")
    if case.rule != RULE_REFS and not (case.other or "").strip():
        raise AnalysisError(f"{where}: unknown rule {case.rule!r}; expected {RULE_REFS} or "
                            f"{RULE_OTHER}<path of another variant>")
    if case.other == case.variant:
        raise AnalysisError(f"{where}: rule {case.rule!r} compares the variant {case.variant!r} with itself; "
                            f"name another variant of {case.image!r}, or use {RULE_REFS}")
    for name in ("image", "variant", "other"):
        rel = getattr(case, name)
        if rel is not None and not os.path.isfile(os.path.join(image_dir, rel)):
            raise AnalysisError(f"{where}: {name} file {rel!r} not found at {os.path.join(image_dir, rel)}")
    return case


def manifest_path(text):
    """A manifest's path in one spelling (`./a/x.png`, `a//x.png` and `a/x.png` are one file), '/'-separated."""
    text = text.strip()
    return posixpath.normpath(text) if text else text


def find_refs(image_dir, cases):
    """The reference images, relative to `image_dir`; an error if a case needs them and there are none."""
    folder = os.path.join(image_dir, REF_FOLDER)
    refs = image_files(folder, image_dir)
    if not refs and any(case.rule == RULE_REFS for case in cases):
        raise AnalysisError(f"rule {RULE_REFS} needs reference images in {folder}, found none; "
                            f"generate them with `python images/make_images.py`")
    return refs


def case_pairs(cases, refs):
    """Every (image, other) pair to measure, grouped by image: variants, rule partners and references."""
    partners = {}
    for case in cases:
        wanted = partners.setdefault(case.image, {})
        wanted.update(dict.fromkeys(p for p in (case.variant, case.other, *refs) if p is not None))
    return [(image, other) for image, wanted in partners.items() for other in wanted]


def image_views(metric, image_dir, paths, configs, size=None, device="cpu"):
    """{path: (size, views)}: one backbone pass per group of equal-size images, each image's views cut out."""
    images = {path: load_image(os.path.join(image_dir, path), size) for path in paths}
    groups = {}
    for path, x in images.items():
        groups.setdefault(tuple(x.shape[1:]), []).append(path)
    out = {}
    for shape, group in groups.items():
        batch = metric.views(metric.features(torch.stack([images[p] for p in group]).to(device)), configs)
        for i, path in enumerate(group):
            # a copy, so the batch's memory goes once every image in it has been compared
            out[path] = shape, {key: [t[i:i + 1].clone() for t in layers] for key, layers in batch.items()}
    return out


def pair_distances(metric, image_dir, pairs, configs, size=None, device="cpu", batch_size=16, desc=None):
    """{pair: {config: distance}}; each image is loaded, passed and viewed once, kept while a pair needs it."""
    order = list(dict.fromkeys(path for pair in pairs for path in pair))
    uses = Counter(path for pair in pairs for path in pair)
    views, out, done = {}, {}, 0
    with torch.inference_mode():
        for pair in tqdm(pairs, desc=desc, unit="pair"):
            while any(path not in views for path in pair):
                batch = order[done:done + batch_size]
                views.update(image_views(metric, image_dir, batch, configs, size, device))
                done += batch_size
            (shape0, v0), (shape1, v1) = views[pair[0]], views[pair[1]]
            if shape0 != shape1:
                raise AnalysisError(f"{pair[0]} is {shape0} pixels but {pair[1]} is {shape1}: compared images "
                                    f"need one size; pass --size N to load every image at N x N")
            distances = metric.compare(v0, v1, configs)
            out[pair] = {config: distances[config].item() for config in configs}
            for path in pair:
                uses[path] -= 1
                if not uses[path]:
                    del views[path]
    return out


def ref_column(ref):
    """The results.csv column of a reference: `ref:<path inside the ref folder>`."""
    return "ref:" + ref[len(REF_FOLDER) + 1:]


def case_rows(run, configs, cases, refs, distances):
    """One result row per configuration and case, as results.csv writes it; `run` holds the net, layers,
    weights and images columns."""
    rows = []
    for method, norm in configs:
        for case in cases:
            d = {p: distances[case.image, p][method, norm]
                 for p in (case.variant, case.other, *refs) if p is not None}
            threshold_image = case.other if case.other is not None else min(refs, key=d.__getitem__)
            row = dict(run, method=method, channel_norm=norm,
                       category=case.category, image=case.image, variant=case.variant, rule=case.rule,
                       distance=d[case.variant], threshold_distance=d[threshold_image], threshold_image=threshold_image,
                       success=d[case.variant] < d[threshold_image])
            rows.append({column: cell_text(value) for column, value in
                         (row | {ref_column(ref): d[ref] for ref in refs}).items()})
    return rows


def summary_label(config, several_image_sets):
    """A summary.png row's label: net, points, weights, (image set), method, channel norm."""
    net, layers, weights, images, method, norm = config
    where = f", images {images}" if several_image_sets else ""
    return f"{net} [{layers}] {weights}{where} | {method}, {'norm' if norm == 'true' else 'no norm'}"


def plot_summary(columns, table, status):
    """PNG bytes of the summary heat map: success rate coloured, each cell labelled successes/cases, a row per
    configuration labelled with its points and weights, this run's rows in bold."""
    image_sets = {config[KEY_COLUMNS.index("images")] for config in table}
    labels = [summary_label(config, len(image_sets) > 1) for config in table]
    cells = [[cells.get(c, (0, 0)) for c in columns] for cells in table.values()]
    rates = [[k / n if n else float("nan") for k, n in row] for row in cells]
    fig = Figure(figsize=(1.1 * len(columns) + 0.075 * max(map(len, labels)) + 2, 0.3 * len(labels) + 2.2),
                 layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(rates, cmap="RdYlGn", vmin=0, vmax=1, aspect="auto")
    for i, row in enumerate(cells):
        for j, (k, n) in enumerate(row):
            ax.text(j, i, f"{k}/{n}" if n else "-", ha="center", va="center", fontsize=8)
    ax.set_xticks(range(len(columns)), columns)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    for tick, config in zip(ax.get_yticklabels(), table):
        tick.set_fontweight("bold" if config in status else "normal")
    ax.xaxis.tick_top()
    fig.colorbar(image, ax=ax, label="success rate (cell: successes / cases)")
    shown = f"image set {image_sets.pop()}" if len(image_sets) == 1 else f"{len(image_sets)} image sets"
    fig.suptitle(f"Flaw analysis: does the variant stay closer than its threshold? ({shown})\n"
                 f"{len(table)} configurations of results.csv, net [extraction points] weights | method, channel "
                 f"norm; bold: this run's", fontsize=9)
    return figure_png(fig, dpi=120)


def analyse(image_dir, nets, configs, results=None, size=None, device="cpu", backbones=Backbones(), batch_size=16,
            layers=None, overwrite=False):
    """(rows, refs, status): result rows for every net and configuration of `configs` that the results.csv at
    `results` (None: none) lacks on these images and weights (all of them with `overwrite`), and {KEY_COLUMNS
    values: "computed" or "reused"}. `layers`: the extraction points of every net (default: each net's own).
    The manifest, the images, results.csv and the weights are all checked before anything is computed."""
    cases = read_manifest(image_dir)
    refs = find_refs(image_dir, cases)
    earlier = read_results(results)[0] if results is not None else []
    preflight(nets, backbones)
    pairs = case_pairs(cases, refs)
    images = image_set_identity(image_dir, {path for pair in pairs for path in pair}, size)
    done = set() if overwrite else complete_configs(earlier, cases)
    rows, status = [], {}
    for net in nets:
        run = {"net": net, "layers": layers_text(check_layers(net, layers)), "images": images,
               "weights": backbones_identity(net, backbones)}
        keys = {(m, n): config_key(run | {"method": m, "channel_norm": cell_text(n)}) for m, n in configs}
        todo = [config for config in configs if keys[config] not in done]
        status.update((keys[config], "computed" if config in todo else "reused") for config in configs)
        if todo:
            metric = build_metric(net, backbones, device, layers)
            distances = pair_distances(metric, image_dir, pairs, todo, size, device, batch_size, desc=net)
            rows += case_rows(run, todo, cases, refs, distances)
    return rows, refs, status


def write_outputs(out, rows, refs, status):
    """Merge `rows` into OUT/results.csv and write the summaries of every configuration in it, all or nothing,
    under the folder's lock (a run writing at the same time waits, and its rows are kept too). Returns (paths,
    the markdown summary of this run's configurations)."""
    with locked(out, waiting=f"waiting for another analysis.py writing into {out}"):
        earlier, ref_columns = read_results(os.path.join(out, "results.csv"))
        merged = merge_rows(earlier, rows)
        header = [*RESULT_COLUMNS, *dict.fromkeys([*ref_columns, *map(ref_column, refs)])]
        columns, table = summarize(merged)
        summary_header = [*KEY_COLUMNS, "this_run", *columns]
        summary = summary_rows(columns, table, status)
        contents = dict(zip(OUTPUTS, (
            csv_text(header, [[row.get(c, "") for c in header] for row in merged]).encode(),
            csv_text(summary_header, summary).encode(),
            markdown_table(summary_header, summary).encode(),
            plot_summary(columns, table, status),
        )))
        paths = write_files(out, contents)
    mine = markdown_table(summary_header, [line for line in summary if line[len(KEY_COLUMNS)] != "earlier"])
    return paths, mine + f"(summary.md: all {len(summary)} configurations of {paths[0]})\n"


def write_files(out, contents):
    """Write {name: bytes} into `out` all or nothing: every file in full beside the outputs before any output is
    replaced. Returns their paths."""
    os.makedirs(out, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".analysis-", dir=out)
    try:
        for name, data in contents.items():
            write_atomic(os.path.join(staging, name), data)
        for name in contents:
            os.replace(os.path.join(staging, name), os.path.join(out, name))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return [os.path.join(out, name) for name in contents]


# ---------------------------------------------------------------- graded sweeps

SWEEP_COLUMNS = ("transform", "magnitude", "image", "net", "layers", "method", "channel_norm", "weights", "distance",
                 "median_ref_distance", "min_ref_distance", "ratio", "closer_than_refs", "tolerance")


def sweep_rows(run, configs, magnitudes, found):
    """One row per image, configuration and magnitude of one net's `sweeps.sweep` result; `run` holds the
    transform, net, layers and weights."""
    rows = []
    for image, result in found.items():
        for method, norm in configs:
            distances, refs = result.distances[method, norm], result.ref_distances[method, norm]
            middle, tolerance = statistics.median(refs), sweeps.tolerance(magnitudes, distances, refs)
            rows += [dict(run, magnitude=m, image=image, method=method, channel_norm=norm, distance=d,
                          median_ref_distance=middle, min_ref_distance=min(refs), ratio=d / middle,
                          closer_than_refs=d < min(refs), tolerance=tolerance)
                     for m, d in zip(magnitudes, distances)]
    return rows


def sweep_tolerances(rows):
    """{(net, method, channel_norm): the lower median over the images of their tolerances}, "none" (below every
    magnitude: an original equal to a reference) counting as the smallest."""
    per_image = {}
    for row in rows:
        per_image.setdefault((row["net"], row["method"], row["channel_norm"]), {})[row["image"]] = row["tolerance"]
    return {config: sorted(found.values(), key=lambda t: -math.inf if t is None else t)[(len(found) - 1) // 2]
            for config, found in per_image.items()}


def sweep_figure(transform, rows, refs):
    """The mean ratio over the images against the magnitude, a panel per net, a line per method and channel norm
    (its tolerance in the legend), the line ratio = 1 drawn and labelled."""
    nets = list(dict.fromkeys(row["net"] for row in rows))
    images = len({row["image"] for row in rows})
    tolerances = sweep_tolerances(rows)
    fig = Figure(figsize=(max(7.5, 5.4 * len(nets)), 6.4), layout="constrained")
    axes = fig.subplots(1, len(nets), squeeze=False)[0]
    colours = dict(zip(METHODS, ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple")))
    for ax, net in zip(axes, nets):
        curves = {}
        for row in (r for r in rows if r["net"] == net):
            curves.setdefault((row["method"], row["channel_norm"]), {}).setdefault(row["magnitude"], []).append(
                row["ratio"])
        top = 1.0
        for (method, norm), points in curves.items():
            tolerance = tolerances[net, method, norm]
            shown = "none" if tolerance is None else tolerance
            label = f"{method}, {'norm' if norm else 'no norm'} (tolerance {shown})"
            means = [statistics.fmean(v) for v in points.values()]
            ax.plot(list(points), means, marker="o", markersize=3, color=colours[method],
                    linestyle="-" if norm else "--", label=label)
            top = max(top, *means)
        ax.axhline(1, color="black", linewidth=1, linestyle=":", label="ratio 1: as far as an unrelated image")
        first = next(r for r in rows if r["net"] == net)
        ax.set_title(f"{net}, points {first['layers']}\nweights {first['weights']}", fontsize=9)
        ax.set_xlabel(transform.axis)
        ax.set_ylabel("d(original, transformed) / median d(original, reference)")
        ax.set_ylim(0, 1.08 * top)
        ax.legend(fontsize=7, title="method, channel norm (tolerance)", title_fontsize=7, loc="upper center",
                  bbox_to_anchor=(0.5, -0.13), ncols=2, handlelength=3)
    fig.suptitle(f"{transform.name} sweep: mean over {images} image{'s' * (images > 1)}, {len(refs)} references\n"
                 f"tolerance: the largest magnitude up to which an image stays\ncloser than every reference "
                 f"(the median over the images)", fontsize=9)
    return fig


def sweep_summary(sweeps_done):
    """Markdown: the tolerance of each configuration (rows) under each transformation (columns)."""
    names = [transform.name for transform, _ in sweeps_done]
    found = [sweep_tolerances(rows) for _, rows in sweeps_done]
    configs = list(dict.fromkeys(config for tolerances in found for config in tolerances))
    body = [[net, method, str(norm).lower(), *(str(t.get((net, method, norm))).replace("None", "none") for t in found)]
            for net, method, norm in configs]
    return markdown_table(["net", "method", "channel_norm", *(f"{n} tolerance" for n in names)], body)


def run_sweeps(args, configs):
    """--sweep: every original image of the manifest under each transformation, for every net and configuration;
    OUT/sweep_<transform>.csv and .png written all or nothing at the end."""
    chosen = [sweeps.parse_sweep(text) for text in args.sweep]
    outputs = [f"sweep_{t.name}.{ext}" for t, _ in chosen for ext in ("csv", "png")]
    check_writable(args.out, outputs)
    cases = read_manifest(args.image_dir)
    refs = find_refs(args.image_dir, cases)
    if not refs:
        raise AnalysisError(f"the sweeps divide by the distance to reference images: put some in "
                            f"{os.path.join(args.image_dir, REF_FOLDER)}")

    def load(paths):
        return {path: load_image(os.path.join(args.image_dir, path), args.size) for path in paths}

    originals, references = load(dict.fromkeys(case.image for case in cases)), load(refs)
    backbones, nets = Backbones.from_flags(args), list(dict.fromkeys(args.net))
    preflight(nets, backbones)
    done = [(transform, []) for transform, _ in chosen]
    for net in nets:
        metric = build_metric(net, backbones, args.device, args.layers)
        for (transform, magnitudes), (_, rows) in zip(chosen, done):
            found = sweeps.sweep(metric, configs, originals, references, transform, magnitudes, args.device,
                                 args.batch_size, desc=f"{net} {transform.name}")
            run = {"transform": transform.name, "net": net, "layers": layers_text(metric.net.layers),
                   "weights": backbones_identity(net, backbones)}
            rows += sweep_rows(run, configs, magnitudes, found)
    contents = {}
    for transform, rows in done:
        contents[f"sweep_{transform.name}.csv"] = csv_text(SWEEP_COLUMNS, [[r[c] for c in SWEEP_COLUMNS]
                                                                           for r in rows]).encode()
        contents[f"sweep_{transform.name}.png"] = figure_png(sweep_figure(transform, rows, references), dpi=110)
    paths = write_files(args.out, contents)
    print(sweep_summary(done), end="")
    print("wrote " + ", ".join(paths))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip(),
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    parser.add_argument("--image-dir", default="images",
                        help="folder with manifest.csv and ref/ (default: images)")
    parser.add_argument("--out", default="logs", help="output folder (default: logs)")
    parser.add_argument("--net", nargs="+", type=network_name, default=list(LPIPS_NETS),
                        help="networks: alex squeeze vgg (aliases alexnet, squeezenet, vgg16) or any other of the "
                             "torchvision registry, such as resnet50 or efficientnet_b0 (python experiment.py "
                             "--help lists them); default: alex squeeze vgg")
    parser.add_argument("--layers", nargs="+", type=int, metavar="I",
                        help="extraction points, for every --net, counted as in experiment.py --layers "
                             "(default: each net's own, see there)")
    parser.add_argument("--method", nargs="+", choices=(*METHODS, "all"), default=["all"], metavar="METHOD",
                        help=f"methods: {', '.join(METHODS)} or all (default: all)")
    parser.add_argument("--channel-norm", choices=tuple(CHANNEL_NORMS), default="both",
                        help="channel-wise normalisation on, off or both (default: both)")
    parser.add_argument("--size", type=positive_int, default=None,
                        help="load every image at SIZE x SIZE (default: as stored; compared images must match)")
    parser.add_argument("--batch-size", type=positive_int, default=16,
                        help="images per backbone pass (default: 16; lower it if memory runs short)")
    parser.add_argument("--device", type=device_arg, default="auto",
                        help="auto (cuda if available), cpu, cuda, cuda:1, ...")
    parser.add_argument("--sweep", nargs="+", metavar="NAME[=M,...]",
                        help="graded sweeps instead of the manifest's cases: every original image of the manifest "
                             "transformed at a series of magnitudes, its distance to the original divided by the "
                             "original's median distance to the references, into OUT/sweep_<NAME>.csv and .png; "
                             "NAME: " + "; ".join(f"{t.name} ({t.axis}, default {','.join(map(str, t.magnitudes))})"
                                                  for t in sweeps.TRANSFORMS.values())
                             + "; NAME=M1,M2,... sets the magnitudes (0 is always added)")
    parser.add_argument("--overwrite", action="store_true",
                        help="recompute the configurations asked for even where OUT/results.csv holds them for these "
                             "images and weights (their rows are replaced; the others are kept)")
    add_weights_flags(parser)
    args = parser.parse_args(argv)
    try:
        for net in args.net:
            check_layers(net, args.layers)
        for text in args.sweep or ():
            sweeps.parse_sweep(text)
    except ValueError as err:
        parser.error(str(err))
    return args


def run(args):
    """The analysis the flags ask for: outputs checked writable first, written all or nothing at the end."""
    configs = requested_configs(args.method, args.channel_norm)
    if args.sweep:
        return run_sweeps(args, configs)
    check_writable(args.out, OUTPUTS)
    rows, refs, status = analyse(args.image_dir, list(dict.fromkeys(args.net)), configs,
                                 os.path.join(args.out, "results.csv"), args.size, args.device,
                                 Backbones.from_flags(args), args.batch_size, args.layers, args.overwrite)
    paths, markdown = write_outputs(args.out, rows, refs, status)
    print(markdown, end="")
    print("wrote " + ", ".join(paths))


def main(argv=None):
    args = parse_args(argv)
    return run_main("analysis.py", lambda: run(args), interrupted=f"interrupted; nothing was written to {args.out}")


if __name__ == "__main__":
    sys.exit(main())
