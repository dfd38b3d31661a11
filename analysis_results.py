"""analysis.py's results.csv: its schema, the identity of an image set, reading (older files too), merging, and the
summary tables.

A row is one case under one configuration. A configuration is identified by `KEY_COLUMNS`: the network, its
extraction points, the method, the channel norm, the backbone weights (`results.weights_identity`: a file with the
start of its SHA-256, or `random:seed<k>`) and the image set (`image_set_identity`: the folder's name and the start
of a SHA-256 of the manifest and of every image file the cases read, by relative path and content, and of --size).
Rows of a configuration are reused only under the same key, so a changed image, weights file, seed or size is
computed anew. A results.csv written before a column existed reads with `OLD_FILE_DEFAULTS`: `unknown` weights and
image set (its rows are kept and summarised, never reused), the net's default points as layers.
"""
import csv
import hashlib
import io
import os

from results import OLD_FILE_DEFAULTS as BAPPS_OLD_FILE_DEFAULTS

RESULT_COLUMNS = ("net", "layers", "method", "channel_norm", "category", "image", "variant", "rule", "distance",
                  "threshold_distance", "threshold_image", "success", "weights", "images")
KEY_COLUMNS = ("net", "layers", "weights", "images", "method", "channel_norm")  # also the summaries' order
CASE_COLUMNS = ("category", "image", "variant", "rule")
OLD_FILE_DEFAULTS = {"layers": BAPPS_OLD_FILE_DEFAULTS["layers"], "weights": lambda row: "unknown",
                     "images": lambda row: "unknown"}
REF_PREFIX = "ref:"


def image_set_identity(image_dir, paths, size=None):
    """`<folder name>:<8 hex digits>` (`@<size>px` added with --size): a SHA-256 of manifest.csv's bytes, each of
    `paths` (relative to `image_dir`) with its content's SHA-256, and the size they are loaded at. Content, not
    modification times: the analysis images are small, and a copy of the folder keeps its results."""
    digest = hashlib.sha256()
    for path in ("manifest.csv", *sorted(set(paths))):
        with open(os.path.join(image_dir, path), "rb") as file:
            digest.update(f"{path} {hashlib.file_digest(file, 'sha256').hexdigest()}\n".encode())
    digest.update(f"size {size}\n".encode())
    name = os.path.basename(os.path.abspath(image_dir))
    return f"{name}:{digest.hexdigest()[:8]}" + ("" if size is None else f"@{size}px")


def config_key(row):
    return tuple(row[column] for column in KEY_COLUMNS)


def cell_text(value):
    """A value as results.csv writes it: floats exactly (repr), bools as true/false, None as empty."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    return repr(value) if isinstance(value, float) else str(value)


def read_results(path):
    """(rows as dicts of strings, their ref: columns) of an analysis results.csv; ([], []) when there is none.

    Columns missing from an older file get `OLD_FILE_DEFAULTS`; a file with other columns, or a damaged line,
    is an error naming the file (and the line): such a file is never used nor overwritten.
    """
    if not os.path.exists(path):
        return [], []
    with open(path, newline="", encoding="utf-8") as file:
        reader = csv.DictReader(file)
        columns = list(reader.fieldnames or ())
        fixed = [c for c in columns if not c.startswith(REF_PREFIX)]
        required = [c for c in RESULT_COLUMNS if c not in OLD_FILE_DEFAULTS]
        if not set(required) <= set(fixed) <= set(RESULT_COLUMNS):
            raise ValueError(f"{path} has the columns {','.join(columns)}, not {','.join(RESULT_COLUMNS)} and "
                             f"ref:<file>: it is not a results file of analysis.py; move it away or choose another "
                             f"--out")
        rows = [checked_row(row, path, reader.line_num, len(columns)) for row in reader]
    return rows, [c for c in columns if c.startswith(REF_PREFIX)]


def checked_row(row, path, line, width):
    """A row of `path` completed with OLD_FILE_DEFAULTS; ValueError naming the line if it is damaged."""
    fix = "repair or delete that line, or choose another --out"
    if None in row or None in row.values():
        raise ValueError(f"{path}, line {line}: the line is cut or has extra fields (the header has {width}); {fix}")
    for column in ("distance", "threshold_distance"):
        try:
            float(row[column])
        except ValueError:
            raise ValueError(f"{path}, line {line}: {column} {row[column]!r} is not a number; {fix}") from None
    if row["success"] not in ("true", "false"):
        raise ValueError(f"{path}, line {line}: success {row['success']!r} is not true or false; {fix}")
    for column, default in OLD_FILE_DEFAULTS.items():
        if column not in row:
            row[column] = default(row)
    return row


def complete_configs(rows, cases):
    """The keys of the configurations in `rows` that hold a row for each of `cases` (Case objects)."""
    wanted = {(case.category, case.image, case.variant, case.rule) for case in cases}
    found = {}
    for row in rows:
        found.setdefault(config_key(row), set()).add(tuple(row[c] for c in CASE_COLUMNS))
    return {key for key, have in found.items() if have >= wanted}


def merge_rows(earlier, new):
    """`earlier` with the configurations of `new` replaced by its rows (where the first of their old rows stood),
    the other configurations of `new` appended; nothing else changes."""
    by_key = {}
    for row in new:
        by_key.setdefault(config_key(row), []).append(row)
    merged, placed = [], set()
    for row in earlier:
        key = config_key(row)
        if key not in by_key:
            merged.append(row)
        elif key not in placed:
            merged += by_key[key]
            placed.add(key)
    return merged + [row for key, rows in by_key.items() if key not in placed for row in rows]


def csv_text(header, rows):
    """CSV of `rows` (lists), each value as `cell_text` writes it."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([cell_text(v) for v in row] for row in rows)
    return buffer.getvalue()


def summarize(rows):
    """(columns, {KEY_COLUMNS values: {column: (successes, cases)}}) of string rows; columns: the categories in
    order of appearance, then total."""
    columns = list(dict.fromkeys(row["category"] for row in rows)) + ["total"]
    table = {}
    for row in rows:
        cells = table.setdefault(config_key(row), {})
        for column in (row["category"], "total"):
            k, n = cells.get(column, (0, 0))
            cells[column] = (k + (row["success"] == "true"), n + 1)
    return columns, table


def summary_rows(columns, table, status):
    """The summary as rows of strings: KEY_COLUMNS, this run's part (`status`: {key: computed or reused}; earlier
    for the others), then `successes/cases` per column (`-`: no case of that category)."""
    def counts(cells):
        return [f"{k}/{n}" if n else "-" for k, n in (cells.get(c, (0, 0)) for c in columns)]

    return [[*config, status.get(config, "earlier"), *counts(cells)] for config, cells in table.items()]


def markdown_table(header, rows):
    lines = [header, ["---"] * len(header), *rows]
    return "".join("| " + " | ".join(line) + " |\n" for line in lines)
