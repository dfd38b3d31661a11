"""The flaw analysis: where deep perceptual similarity metrics fail.

    python analysis.py                      # 3 nets x 5 methods x 2 channel norms over images/
    python analysis.py --net alex --method spatial sort --channel-norm on --device cpu
    python analysis.py --net resnet50 --layers 2 4 5 7      # any torchvision net of the registry

Every case of `IMAGE_DIR/manifest.csv` (`category,image,variant,rule`, paths relative
to IMAGE_DIR) is a question with a known answer: is the variant (a rotation, a shift,
an inversion, a global colour offset) closer to the image than every reference in
`IMAGE_DIR/ref/` (rule `closer_than_refs`), or than another variant (rule
`closer_than:<path>`)? The manifest is UTF-8 (a leading BOM, as Excel writes it, is
fine); a case listed twice (also under another spelling of its paths, such as `./a/x.png`) is an
error, and so is a `closer_than:` rule naming the case's own variant. For each network every distinct image goes
through the backbone once and each method's view of it is computed once; all
configurations are compared from those views.

Outputs in OUT (`--out`, default `logs`, checked writable before anything is computed),
written only after every distance is known and all or nothing (each written in full to a
temporary folder in OUT, then renamed over the old one; Ctrl-C or an error leaves the old
outputs as they were):

- `results.csv`: one row per net, method, channel norm and case, columns
  `net,layers,method,channel_norm,category,image,variant,rule,distance,threshold_distance,
  threshold_image,success` then `ref:<file>` for each reference. `distance` is image to
  variant; `threshold_distance` is what it must beat: the smallest reference distance
  (`threshold_image` names that reference) or the distance from the image to the other
  variant of a `closer_than:` rule; `success` is `distance < threshold_distance`.
  `ref:<file>` is the distance from the image to `ref/<file>`, for every rule.
  `net` is canonical (`alex`, `squeeze`, `vgg`, or the torchvision name); `layers` the
  extraction points joined by `-`; `channel_norm` and `success` are `true`/`false`.
- `summary.csv`, `summary.md`: rows net, method, channel norm; one column per category
  and `total`, each cell `successes/cases`.
- `summary.png`: the same table as a heat map (success rate), each cell labelled.

Backbone weights: torchvision's ImageNet weights from `$TORCH_HOME/hub/checkpoints`
(downloaded when missing and online), or from `--weights-dir DIR` holding files with
torchvision's names (`alexnet-owt-7be5be79.pth`, ...), or random (`--random-init`, from
`--seed`); every file the run needs is checked before anything is computed.
"""
import argparse
import csv
import io
import os
import posixpath
import shutil
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass

import torch
from matplotlib.figure import Figure
from tqdm import tqdm

from cli import (CHANNEL_NORMS, Backbones, UserError, add_weights_flags, build_metric, check_writable, device_arg,
                 network_name, positive_int, preflight, requested_configs, run_main, write_atomic)
from image_io import image_files, load_image
from loss_networks import LPIPS_NETS, check_layers, layers_text
from metric import METHODS

MANIFEST_COLUMNS = ("category", "image", "variant", "rule")
RESULT_COLUMNS = ("net", "layers", "method", "channel_norm", "category", "image", "variant", "rule", "distance",
                  "threshold_distance", "threshold_image", "success")
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


def case_rows(net, layers, configs, cases, refs, distances):
    """One result row per configuration and case (values typed: floats and bools)."""
    rows = []
    for method, norm in configs:
        for case in cases:
            d = {p: distances[case.image, p][method, norm]
                 for p in (case.variant, case.other, *refs) if p is not None}
            threshold_image = case.other if case.other is not None else min(refs, key=d.__getitem__)
            row = dict(net=net, layers=layers_text(layers), method=method, channel_norm=norm,
                       category=case.category, image=case.image, variant=case.variant, rule=case.rule,
                       distance=d[case.variant], threshold_distance=d[threshold_image], threshold_image=threshold_image,
                       success=d[case.variant] < d[threshold_image])
            rows.append(row | {ref_column(ref): d[ref] for ref in refs})
    return rows


def csv_text(header, rows):
    """CSV of `rows` (lists); floats written exactly (repr), bools as true/false."""
    def cell(value):
        if isinstance(value, bool):
            return str(value).lower()
        return repr(value) if isinstance(value, float) else value
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([cell(v) for v in row] for row in rows)
    return buffer.getvalue()


def summarize(rows):
    """(columns, {(net, method, channel_norm): {column: (successes, cases)}}); columns: categories, total."""
    columns = list(dict.fromkeys(row["category"] for row in rows)) + ["total"]
    table = {}
    for row in rows:
        cells = table.setdefault((row["net"], row["method"], row["channel_norm"]), {})
        for column in (row["category"], "total"):
            k, n = cells.get(column, (0, 0))
            cells[column] = (k + row["success"], n + 1)
    return columns, table


def summary_rows(columns, table):
    """The summary as rows of strings: net, method, channel norm, then `successes/cases` per column."""
    return [[net, method, str(norm).lower(), *(f"{k}/{n}" for k, n in (cells.get(c, (0, 0)) for c in columns))]
            for (net, method, norm), cells in table.items()]


def markdown_table(header, rows):
    lines = [header, ["---"] * len(header), *rows]
    return "".join("| " + " | ".join(line) + " |\n" for line in lines)


def plot_summary(columns, table):
    """PNG bytes of the summary heat map: success rate coloured, each cell labelled successes/cases."""
    labels = [f"{net} / {method} / {'norm' if norm else 'no norm'}" for net, method, norm in table]
    cells = [[cells.get(c, (0, 0)) for c in columns] for cells in table.values()]
    rates = [[k / n if n else float("nan") for k, n in row] for row in cells]
    fig = Figure(figsize=(1.2 * len(columns) + 3.5, 0.3 * len(labels) + 1.5), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(rates, cmap="RdYlGn", vmin=0, vmax=1, aspect="auto")
    for i, row in enumerate(cells):
        for j, (k, n) in enumerate(row):
            ax.text(j, i, f"{k}/{n}", ha="center", va="center", fontsize=8)
    ax.set_xticks(range(len(columns)), columns)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.xaxis.tick_top()
    fig.colorbar(image, ax=ax, label="successes / cases")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    return buffer.getvalue()


def analyse(image_dir, nets, configs, size=None, device="cpu", backbones=Backbones(), batch_size=16, layers=None):
    """(rows, refs): result rows for every net, configuration and case of the manifest; `layers`, the
    extraction points of every net (default: each net's own)."""
    cases = read_manifest(image_dir)
    refs = find_refs(image_dir, cases)
    preflight(nets, backbones)
    pairs = case_pairs(cases, refs)
    rows = []
    for net in nets:
        metric = build_metric(net, backbones, device, layers)
        distances = pair_distances(metric, image_dir, pairs, configs, size, device, batch_size, desc=net)
        rows += case_rows(net, metric.net.layers, configs, cases, refs, distances)
    return rows, refs


def write_outputs(out, rows, refs):
    """results.csv, summary.csv, summary.md and summary.png in `out`; returns (paths, markdown)."""
    header = [*RESULT_COLUMNS, *map(ref_column, refs)]
    columns, table = summarize(rows)
    summary_header = ["net", "method", "channel_norm", *columns]
    summary = summary_rows(columns, table)
    markdown = markdown_table(summary_header, summary)
    contents = dict(zip(OUTPUTS, (
        csv_text(header, [[row[c] for c in header] for row in rows]).encode(),
        csv_text(summary_header, summary).encode(),
        markdown.encode(),
        plot_summary(columns, table),
    )))
    # all or nothing: every file is written in full beside the outputs before any output is replaced
    os.makedirs(out, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".analysis-", dir=out)
    try:
        for name, data in contents.items():
            write_atomic(os.path.join(staging, name), data)
        for name in contents:
            os.replace(os.path.join(staging, name), os.path.join(out, name))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return [os.path.join(out, name) for name in contents], markdown


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
    add_weights_flags(parser)
    args = parser.parse_args(argv)
    try:
        for net in args.net:
            check_layers(net, args.layers)
    except ValueError as err:
        parser.error(str(err))
    return args


def run(args):
    """The analysis the flags ask for: outputs checked writable first, written all or nothing at the end."""
    configs = requested_configs(args.method, args.channel_norm)
    check_writable(args.out, OUTPUTS)
    rows, refs = analyse(args.image_dir, list(dict.fromkeys(args.net)), configs, args.size, args.device,
                         Backbones.from_flags(args), args.batch_size, args.layers)
    paths, markdown = write_outputs(args.out, rows, refs)
    print(markdown, end="")
    print("wrote " + ", ".join(paths))


def main(argv=None):
    args = parse_args(argv)
    return run_main("analysis.py", lambda: run(args), interrupted=f"interrupted; nothing was written to {args.out}")


if __name__ == "__main__":
    sys.exit(main())
