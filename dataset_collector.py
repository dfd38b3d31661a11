"""BAPPS on disk: the datasets, a synthetic tree for dry runs, and the download command line.

Command line (``python dataset_collector.py --help``)::

    python dataset_collector.py --root datasets/BAPPS --parts val jnd train [--url BASE]
    python dataset_collector.py --synthetic DIR

The first fetches and extracts the official archives (`bapps_archives.py`: resumed, retried,
verified, safely extracted; a part already on disk, in this layout or LPIPS's, is used as it is).
The second writes a small synthetic tree in the BAPPS layout (random patches and judgements,
with a README saying what it is; ``write_synthetic``), so that ``experiment.py --data-root DIR``
runs end to end offline.

``dataset_collector("BAPPS", split, ...)`` returns the BAPPS datasets: items are dicts of
images in [0, 1] (``load_image``) and judgements; ``BAPPSSubsplit.identity`` names what a set's
examples are, so that results are reused only on the same examples.
"""
import argparse
import hashlib
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import ConcatDataset, Dataset

from bapps_archives import (ARCHIVES, BASE_URL, JND_FOLDERS, PART_OF_SPLIT, SPLIT_FOLDERS, SPLIT_OF_PART, SUBSPLITS,
                            TWOAFC_FOLDERS, DatasetError, fetch_part, retry_settings, split_folder)
from cli import locked, positive_int, run_main
from image_io import load_image

# ---------------------------------------------------------------- datasets


class BAPPSSubsplit(Dataset):
    """One BAPPS subsplit folder: 2AFC items {ref, p0, p1, judge} or JND {p0, p1, same}."""

    def __init__(self, folder, jnd=False, image_transform=None, load_size=64):
        self.folder = Path(folder)
        kind = JND_FOLDERS if jnd else TWOAFC_FOLDERS
        self.image_keys, self.judgement_key = kind["images"], kind["judgement"]
        self.image_transform = image_transform
        self.load_size = load_size
        self.stems = self._matched_stems()
        self._identities = {}

    def _matched_stems(self):
        suffixes = {key: ".png" for key in self.image_keys}
        suffixes[self.judgement_key] = ".npy"
        stems = {}
        for key, suffix in suffixes.items():
            sub = self.folder / key
            if not sub.is_dir():
                raise DatasetError(f"missing folder {sub}")
            stems[key] = {p.stem for p in sub.iterdir()
                          if p.suffix == suffix and not p.name.startswith(".")}
        every = set().union(*stems.values())
        for key, found in stems.items():
            missing = sorted(every - found)
            if missing:
                raise DatasetError(
                    f"{self.folder}: stem {missing[0]!r} has no file "
                    f"{self.folder / key / (missing[0] + suffixes[key])} "
                    f"({len(missing)} stems missing from {key}/)")
        if not every:
            raise DatasetError(f"no examples in {self.folder}")
        return sorted(every)

    def __len__(self):
        return len(self.stems)

    def identity(self, count=None):
        """What the first `count` examples (None: all) are, as the start of a SHA-256: each image file's name
        and size and each judgement's bytes (a judgement file's size says nothing of its value)."""
        if count not in self._identities:
            digest = hashlib.sha256()
            for stem in self.stems[:count]:
                for key in self.image_keys:
                    digest.update(f"{key}/{stem} {(self.folder / key / f'{stem}.png').stat().st_size}\n".encode())
                digest.update((self.folder / self.judgement_key / f"{stem}.npy").read_bytes())
            self._identities[count] = digest.hexdigest()[:8]
        return self._identities[count]

    def __getitem__(self, index):
        stem = self.stems[index]
        item = {}
        for key in self.image_keys:
            image = load_image(self.folder / key / f"{stem}.png", self.load_size)
            item[key] = image if self.image_transform is None else self.image_transform(image)
        item[self.judgement_key] = _load_judgement(self.folder / self.judgement_key / f"{stem}.npy")
        return item


def _load_judgement(path):
    try:
        value = np.load(path, allow_pickle=False)
    except Exception as err:  # numpy reports bad files through several exception types
        raise DatasetError(f"cannot read judgement {path}: {err}") from err
    value = np.asarray(value, dtype=np.float32).reshape(-1)
    if value.size != 1 or not 0 <= value[0] <= 1:
        raise DatasetError(f"judgement {path} should be one number in [0, 1], found {value}")
    return torch.from_numpy(value)


def dataset_collector(name, split, subsplit="all", root="datasets/BAPPS", download=True,
                      image_transform=None, load_size=64):
    """The BAPPS dataset of ``split`` (train, val, jnd/val) and ``subsplit``.

    ``subsplit`` is one name of ``SUBSPLITS[split]``, a list of them, or ``"all"``
    (all of them, concatenated in the order of ``SUBSPLITS``). The split is read from
    ``root/<split>`` or LPIPS's ``root/2afc/<split>``, whoever extracted it; with
    ``download`` a split with neither folder is fetched. A requested subsplit whose folder
    is missing is an error listing the subsplits present.
    """
    if name != "BAPPS":
        raise ValueError(f"unknown dataset {name!r}; valid datasets: BAPPS")
    if split not in SUBSPLITS:
        raise ValueError(f"unknown BAPPS split {split!r}; valid splits: {', '.join(SUBSPLITS)}")
    names = SUBSPLITS[split] if subsplit == "all" else (
        (subsplit,) if isinstance(subsplit, str) else tuple(subsplit))
    for sub in names:
        if sub not in SUBSPLITS[split]:
            raise ValueError(f"unknown subsplit {sub!r} of {split}; valid subsplits: "
                             f"{', '.join(SUBSPLITS[split])}, all")
    part, root = PART_OF_SPLIT[split], Path(root)
    if download:
        fetch(root, part)
    folder = split_folder(root, split)
    if folder is None:
        looked = " or ".join(str(root / name) for name in SPLIT_FOLDERS[split])
        raise DatasetError(f"BAPPS {split} is not under {root} (no folder {looked}). "
                           f"Fetch it with: python dataset_collector.py --root {root} --parts {part}")
    _check_subsplits(folder, split, names)
    sets = [BAPPSSubsplit(folder / sub, jnd=(split == "jnd/val"),
                          image_transform=image_transform, load_size=load_size)
            for sub in names]
    return sets[0] if len(sets) == 1 else ConcatDataset(sets)


def fetch(root, part, **options):
    """`fetch_part` under a lock of `root`: a second run fetching into one root waits for the first (saying
    so), then finds the part there."""
    if split_folder(root, SPLIT_OF_PART[part]) is not None:
        return False
    with locked(root, waiting=f"another run is fetching BAPPS into {root}: waiting for it to finish"):
        return fetch_part(root, part, **options)


def tree_kind(root):
    """`synthetic` for a tree that `write_synthetic` wrote (its README.txt says so), else `bapps`."""
    readme = Path(root) / "README.txt"
    first_line = SYNTHETIC_README.split("\n")[0]
    return "synthetic" if readme.is_file() and readme.read_text(errors="replace").startswith(first_line) else "bapps"


def _check_subsplits(folder, split, names):
    """An error naming the first missing subsplit folder and listing those present, suggesting --subsplits."""
    missing = [sub for sub in names if not (folder / sub).is_dir()]
    if not missing:
        return
    present = [sub for sub in SUBSPLITS[split] if (folder / sub).is_dir()]
    only = f"Evaluate only those with --subsplits {' '.join(present)}, or move" if present else "Move"
    raise DatasetError(f"BAPPS subsplit folder {folder / missing[0]} is missing: {folder} has {len(present)} of "
                       f"the {len(SUBSPLITS[split])} {split} subsplits ({', '.join(present) or 'none'}). {only} "
                       f"{folder} away to download the whole part (a folder on disk is never downloaded again "
                       f"or changed)")


# ---------------------------------------------------------------- a synthetic tree

SYNTHETIC_README = """\
A synthetic tree in the BAPPS layout, written by `python dataset_collector.py --synthetic`.

Every image is random noise and every judgement a random number: it is not BAPPS, and scores
on it mean nothing. It exists to check that `python experiment.py --data-root <this folder>` runs end
to end offline (downloads, loading, scoring, results.csv and the table) before fetching the
6.6 GB of the real dataset; its rows are never mixed with BAPPS rows, which are computed on
other examples.
"""


def write_synthetic(root, n_2afc=6, n_jnd=6, size=64, seed=0, parts=tuple(ARCHIVES), layout="project",
                    subsplits=None):
    """Write a synthetic tree in the BAPPS layout under `root`: `n_2afc` (`n_jnd`) examples per subsplit.

    Stems are ``000000``, ``000001``, ...; images are random RGB `size` x `size` PNGs; a 2AFC
    ``judge`` is a float in [0, 1], a JND ``same`` 0.0 or 1.0, stored as float32 arrays of shape
    (1,). `layout` "project" writes ROOT/val, ...; "lpips" what LPIPS's download script leaves
    (ROOT/2afc/val). `subsplits` (default all) limits the subsplits written. A README.txt says
    what the tree is. Returns ``Path(root)``.
    """
    root, rng = Path(root), np.random.default_rng(seed)
    for part in parts:
        split, jnd = SPLIT_OF_PART[part], part == "jnd"
        kind = JND_FOLDERS if jnd else TWOAFC_FOLDERS
        for subsplit in (s for s in SUBSPLITS[split] if subsplits is None or s in subsplits):
            folder = root / ("2afc/" + split if layout == "lpips" and not jnd else split) / subsplit
            for name in (*kind["images"], kind["judgement"]):
                (folder / name).mkdir(parents=True, exist_ok=True)
            for i in range(n_jnd if jnd else n_2afc):
                for name in kind["images"]:
                    pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                    Image.fromarray(pixels).save(folder / name / f"{i:06d}.png")
                value = float(rng.integers(0, 2)) if jnd else rng.random()
                np.save(folder / kind["judgement"] / f"{i:06d}.npy", np.array([value], dtype=np.float32))
    (root / "README.txt").write_text(SYNTHETIC_README)
    return root


# ---------------------------------------------------------------- command line


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="Download, verify and extract the BAPPS dataset (resumable; parts "
                    "already on disk are skipped).",
        epilog="A part already extracted, by this tool or by hand, in this layout (ROOT/val) or "
               "LPIPS's (ROOT/2afc/val), is used as it is. "
               "An archive downloaded by hand can be placed in ROOT under its own name. "
               "Environment: BAPPS_URL (base URL), BAPPS_RETRIES (default 4), "
               "BAPPS_RETRY_DELAY (seconds before the first retry, doubling; default 2).")
    parser.add_argument("--root", default="datasets/BAPPS",
                        help="dataset folder (default: %(default)s)")
    parser.add_argument("--parts", nargs="+", choices=list(ARCHIVES),
                        default=["val", "jnd", "train"],
                        help="archives to fetch: val (1.1 GB), jnd (0.2 GB), train (5.3 GB); "
                             "default: all")
    parser.add_argument("--url", default=None,
                        help=f"base URL of the archives (default: $BAPPS_URL or {BASE_URL})")
    parser.add_argument("--keep-archives", action="store_true",
                        help="keep the downloaded .tar.gz files after extraction (default: delete them; "
                             "an archive placed by hand is always kept)")
    parser.add_argument("--synthetic", metavar="DIR",
                        help="instead of downloading, write a small synthetic tree in the BAPPS layout into the "
                             "new folder DIR (random patches and judgements, with a README.txt saying so), for "
                             "an offline dry run: python experiment.py --data-root DIR")
    parser.add_argument("--examples", type=positive_int, default=20,
                        help="with --synthetic: examples per subsplit (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        retry_settings()
    except ValueError as err:
        parser.error(str(err))
    return args


def synthetic_tree(folder, examples):
    """Write the synthetic tree into the new folder `folder`, whole or not at all."""
    folder = Path(folder)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise DatasetError(f"--synthetic {folder}: it exists and is not an empty folder; name a new folder")
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
    try:
        write_synthetic(staging, n_2afc=examples, n_jnd=examples)
        os.replace(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    print(f"wrote a synthetic BAPPS tree ({examples} examples per subsplit) to {folder}; "
          f"try: python experiment.py --data-root {folder} --net alex")


def fetch_parts(args):
    for part in args.parts:
        fetched = fetch(args.root, part, url=args.url, keep_archive=args.keep_archives)
        state = "complete" if fetched else "already present"
        print(f"{part}: {state} in {split_folder(args.root, SPLIT_OF_PART[part])}")


def main(argv=None):
    args = parse_args(argv)
    if args.synthetic is not None:
        return run_main("dataset_collector.py", lambda: synthetic_tree(args.synthetic, args.examples))
    return run_main("dataset_collector.py", lambda: fetch_parts(args),
                    interrupted="interrupted; rerun the same command to resume")


if __name__ == "__main__":
    sys.exit(main())
