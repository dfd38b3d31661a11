"""BAPPS download, verification, safe extraction and datasets; the project's image loader.

Command line (``python dataset_collector.py --help``)::

    python dataset_collector.py --root datasets/BAPPS --parts val jnd train [--url BASE]

fetches the official archives (``twoafc_train.tar.gz``, ``twoafc_val.tar.gz``,
``jnd.tar.gz``) from ``BASE`` (default: the official bucket, or ``$BAPPS_URL``) into
``ROOT/<archive>.part``, resumes a partial file with an HTTP Range request (or starts
over when the server ignores Range), checks the length the server announced and only
then renames it to ``ROOT/<archive>``; a download that is not gzip (an error page) is
deleted. Network errors are retried ``$BAPPS_RETRIES`` times (default 4) after
``$BAPPS_RETRY_DELAY`` seconds (default 2), doubling each time. An archive already at
``ROOT/<archive>`` is used as it is, so one downloaded by hand can be placed there.

Extraction accepts members named ``dataset/2afc/{train,val}/...`` and
``dataset/jnd/val/...``; the leading ``dataset/`` is optional, and so is ``2afc/``
for the 2AFC archives (the layout the LPIPS download script produces). They land in
``ROOT/train``, ``ROOT/val`` and ``ROOT/jnd/val``; other members are skipped with a
warning. Absolute names, names with ``..``, special files and links that leave the
part's folder make the whole archive an error. Each part is extracted into
``ROOT/.extract-<part>``, its layout checked, and moved into place in one rename, so an
interrupted extraction leaves no part folder and is redone: a part is present exactly when
its folder is (trees that still carry the ``.complete-<part>`` markers of earlier versions
read as any other). A downloaded archive is deleted after extraction unless
``--keep-archives``, and also when it cannot be extracted; one placed by hand is never deleted.

A part whose folder is on disk, in this layout or LPIPS's (``ROOT/2afc/{train,val}``,
``ROOT/jnd/val``), whoever extracted it, is used as it is: never fetched again, nothing
of it deleted or replaced.

``python dataset_collector.py --synthetic DIR`` writes a small synthetic tree in the BAPPS layout
(random patches and judgements, with a README saying what it is; ``write_synthetic``), so that
``experiment.py --data-root DIR`` runs end to end offline.

``dataset_collector("BAPPS", split, ...)`` returns the BAPPS datasets (items are dicts of
images in [0, 1] and judgements), ``load_image`` is the one image-file loader of the project
and ``image_files`` the one folder listing of image files.
"""
import argparse
import gzip
import hashlib
import os
import posixpath
import re
import shutil
import sys
import tarfile
import time
import zlib
from pathlib import Path, PurePosixPath

import numpy as np
import requests
import torch
import urllib3
from PIL import Image
from torch.utils.data import ConcatDataset, Dataset
from tqdm import tqdm

from cli import positive_int, run_main
from image_io import load_image

BASE_URL = "https://perceptual-similarity.s3.us-west-2.amazonaws.com/dataset/"
ARCHIVES = {"train": "twoafc_train.tar.gz", "val": "twoafc_val.tar.gz", "jnd": "jnd.tar.gz"}
SPLIT_OF_PART = {"train": "train", "val": "val", "jnd": "jnd/val"}
ARCHIVE_PREFIXES = {
    "train": ("dataset/2afc/train", "2afc/train", "train"),
    "val": ("dataset/2afc/val", "2afc/val", "val"),
    "jnd": ("dataset/jnd/val", "jnd/val"),
}
SUBSPLITS = {
    "train": ("traditional", "cnn", "mix"),
    "val": ("traditional", "cnn", "superres", "deblur", "color", "frameinterp"),
    "jnd/val": ("traditional", "cnn"),
}
PART_OF_SPLIT = {split: part for part, split in SPLIT_OF_PART.items()}
# where a split can be on disk: this project's layout first, then the one LPIPS's download script leaves
SPLIT_FOLDERS = {"train": ("train", "2afc/train"), "val": ("val", "2afc/val"), "jnd/val": ("jnd/val",)}
GZIP_MAGIC = b"\x1f\x8b"
TWOAFC_FOLDERS = {"images": ("ref", "p0", "p1"), "judgement": "judge"}
JND_FOLDERS = {"images": ("p0", "p1"), "judgement": "same"}


class DatasetError(OSError):
    """A problem with BAPPS on disk or its download that the user has to act on."""


class DownloadError(DatasetError):
    """A download that failed for good (after the retries)."""


class UnsafeArchiveError(DatasetError):
    """An archive member that would land outside the root, or is not a plain file."""


class _TransientDownloadError(Exception):
    """A failed download attempt worth retrying (incomplete transfer, server error)."""


_RETRYABLE = (requests.ConnectionError, requests.Timeout, urllib3.exceptions.HTTPError,
              _TransientDownloadError)


# ---------------------------------------------------------------- download


def retry_settings():
    """(retries, seconds before the first retry) from $BAPPS_RETRIES (default 4) and $BAPPS_RETRY_DELAY
    (default 2); ValueError naming a variable whose value is not a whole number >= 0, resp. a number >= 0."""
    settings = []
    for name, default, kind, wanted in (("BAPPS_RETRIES", "4", int, "a whole number >= 0"),
                                        ("BAPPS_RETRY_DELAY", "2", float, "a number of seconds >= 0")):
        value = os.environ.get(name, default)
        try:
            number = kind(value)
        except ValueError:
            number = None
        if number is None or not 0 <= number < float("inf"):
            raise ValueError(f"${name}={value!r} is not {wanted}; set it so or unset it (default {default})")
        settings.append(number)
    return tuple(settings)


def download(url, dest, retries=None, retry_delay=None):
    """Download the gzip archive ``url`` to ``dest`` through ``dest.part``, resuming and retrying.

    A finished download that is not gzip (an HTML error page, say) is deleted: it is an error,
    never left in place for the next run to trip over.
    """
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    env_retries, env_delay = retry_settings()
    retries = env_retries if retries is None else max(retries, 0)
    delay = env_delay if retry_delay is None else retry_delay
    for attempt in range(retries + 1):
        try:
            _download_once(url, part)
            break
        except _RETRYABLE as err:
            if attempt == retries:
                raise DownloadError(
                    f"could not download {url} ({err}). Check the network or the base URL "
                    f"(--url / $BAPPS_URL) and rerun to resume, or download the file by hand "
                    f"and place it at {dest}") from err
            wait = delay * 2 ** attempt
            print(f"download of {url} failed ({err}); retry {attempt + 1}/{retries} "
                  f"in {wait:g} s", file=sys.stderr)
            time.sleep(wait)
        except requests.RequestException as err:
            raise DownloadError(f"could not download {url} ({err}); check the base URL "
                                f"(--url / $BAPPS_URL)") from err
    with open(part, "rb") as f:
        head = f.read(64)
    if not head.startswith(GZIP_MAGIC):
        part.unlink()
        sent = f"a file starting {head[:32]!r}" if head else "an empty file"
        raise DownloadError(f"{url} sent {sent}, not a gzip archive (an error page?); it was deleted. "
                            f"Check the base URL (--url / $BAPPS_URL), or download the file by hand and "
                            f"place it at {dest}")
    os.replace(part, dest)


def _download_once(url, part):
    offset = part.stat().st_size if part.exists() else 0
    headers = {"Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    with requests.get(url, headers=headers, stream=True, timeout=(30, 60)) as response:
        total, append = _expected_total(response, url, part, offset)
        if total is not None and offset == total and append:
            return
        # Raw bytes, as stored on the server; a short transfer keeps what arrived and is
        # caught by the length check below, so that the next attempt resumes after it.
        response.raw.enforce_content_length = False
        with open(part, "ab" if append else "wb") as f, tqdm(
                total=total, initial=offset if append else 0, unit="B", unit_scale=True,
                desc=part.name.removesuffix(".part")) as bar:
            for chunk in response.raw.stream(1 << 20, decode_content=False):
                f.write(chunk)
                bar.update(len(chunk))
    size = part.stat().st_size
    if total is not None and size != total:
        if size > total:
            part.unlink()
        raise _TransientDownloadError(f"got {size} of the {total} bytes the server announced")


def _expected_total(response, url, part, offset):
    """Return (announced total length or None, whether to append to the .part file)."""
    status = response.status_code
    if status == 416:
        match = re.fullmatch(r"bytes \*/(\d+)", response.headers.get("Content-Range", ""))
        if match and int(match.group(1)) == offset:
            return offset, True
        part.unlink()
        raise _TransientDownloadError("the partial file does not fit the server's; starting over")
    if status >= 500 or status in (408, 429):
        raise _TransientDownloadError(f"HTTP {status} {response.reason}")
    if status >= 400:
        raise DownloadError(
            f"could not download {url}: HTTP {status} {response.reason}. Check the base URL "
            f"(--url / $BAPPS_URL), or download the file by hand and place it at "
            f"{part.with_suffix('')}")
    if status == 206:
        match = re.fullmatch(r"bytes (\d+)-\d+/(\d+)", response.headers.get("Content-Range", ""))
        if not match or int(match.group(1)) != offset:
            part.unlink()
            raise _TransientDownloadError("the server resumed at the wrong offset; starting over")
        return int(match.group(2)), True
    if offset:
        print(f"{url}: the server ignored the resume request; starting over", file=sys.stderr)
    length = response.headers.get("Content-Length")
    return (int(length) if length is not None else None), False


# ---------------------------------------------------------------- extraction


def _map_member(name, part):
    """Map an archive path onto its path under the root, or None when outside the part."""
    parts = PurePosixPath(name).parts
    for prefix in ARCHIVE_PREFIXES[part]:
        prefix_parts = PurePosixPath(prefix).parts
        if parts[:len(prefix_parts)] == prefix_parts:
            return "/".join((SPLIT_OF_PART[part],) + parts[len(prefix_parts):])
    return None


def _is_ancestor(name, part):
    """Whether ``name`` is one of the folders that lead to the part (``dataset/``, ...)."""
    parts = PurePosixPath(name).parts
    return any(PurePosixPath(prefix).parts[:len(parts)] == parts
               for prefix in ARCHIVE_PREFIXES[part])


def _unsafe(name):
    """Why an archive path may not be used (absolute, contains ..), or None."""
    path = PurePosixPath(name)
    if path.is_absolute() or re.match(r"^[A-Za-z]:", name):
        return "is absolute"
    if ".." in path.parts:
        return "contains '..'"
    return None


def _safe_member(member, part, archive):
    """Return the member renamed to its place under the root, None to skip it, or raise."""
    reason = _unsafe(member.name)
    if reason:
        raise UnsafeArchiveError(f"{archive}: member {member.name!r} {reason}")
    if not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
        raise UnsafeArchiveError(f"{archive}: member {member.name!r} is a special file")
    mapped = _map_member(member.name, part)
    if not (member.issym() or member.islnk()):
        return None if mapped is None else member.replace(name=mapped, deep=False)
    target = member.linkname
    if member.issym() and not PurePosixPath(target).is_absolute():
        target = posixpath.normpath(posixpath.join(posixpath.dirname(member.name), target))
    mapped_target = None if _unsafe(target) else _map_member(target, part)
    if mapped_target is None:
        raise UnsafeArchiveError(f"{archive}: link {member.name!r} -> {member.linkname!r} "
                                 f"points outside {SPLIT_OF_PART[part]}/")
    if mapped is None:
        return None
    if member.issym():
        linkname = posixpath.relpath(mapped_target, posixpath.dirname(mapped))
    else:
        linkname = mapped_target
    return member.replace(name=mapped, linkname=linkname, deep=False)


def extract_part(archive, root, part):
    """Safely extract one BAPPS archive into ``root``: the part's folder appears whole, in one rename."""
    archive, root = Path(archive), Path(root)
    staging = root / f".extract-{part}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        skipped = _extract_members(archive, staging, part)
        _check_layout(staging / SPLIT_OF_PART[part], part, archive)
        _move_into_place(staging / SPLIT_OF_PART[part], root / SPLIT_OF_PART[part])
    except UnsafeArchiveError as err:
        raise UnsafeArchiveError(f"{err}. The archive is refused and nothing of it was kept") from None
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile, UnicodeError) as err:
        raise DatasetError(f"cannot extract {archive} ({err})") from err
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if skipped:
        print(f"{archive}: skipped {len(skipped)} members outside the BAPPS layout, "
              f"e.g. {skipped[:3]}", file=sys.stderr)


def _extract_members(archive, staging, part):
    skipped = []
    with open(archive, "rb") as raw, tarfile.open(fileobj=raw, mode="r:gz") as tar, tqdm(
            total=archive.stat().st_size, unit="B", unit_scale=True,
            desc=f"extracting {archive.name}") as bar:
        for member in tar:
            renamed = _safe_member(member, part, archive)
            if renamed is None:
                if not _is_ancestor(member.name, part):
                    skipped.append(member.name)
            elif renamed.isdir():
                # Folders are made here, not by tarfile, so that an archived read-only
                # mode cannot stop the files that go inside them.
                (staging / renamed.name).mkdir(parents=True, exist_ok=True)
            else:
                tar.extract(renamed, staging, filter="data")
            bar.update(raw.tell() - bar.n)
        # Reading to the end makes gzip verify its checksum and length trailer.
        while tar.fileobj.read(1 << 20):
            pass
    return skipped


def _check_layout(folder, part, archive):
    kind = JND_FOLDERS if part == "jnd" else TWOAFC_FOLDERS
    for subsplit in SUBSPLITS[SPLIT_OF_PART[part]]:
        for sub in (*kind["images"], kind["judgement"]):
            if not (folder / subsplit / sub).is_dir():
                raise DatasetError(
                    f"{archive} has no {SPLIT_OF_PART[part]}/{subsplit}/{sub}/ folder; it is not "
                    f"the BAPPS archive {ARCHIVES[part]}")


def _move_into_place(source, dest):
    """Rename ``source`` to ``dest`` in one step, so that ``dest`` is never a half-written tree;
    a ``dest`` that appeared meanwhile with files in it makes the rename fail, never lose them."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(source, dest)


def split_folder(root, split):
    """The folder of ``split`` (train, val, jnd/val) under ``root`` in either layout (``ROOT/val`` or
    LPIPS's ``ROOT/2afc/val``), whoever put it there; None when there is none."""
    for name in SPLIT_FOLDERS[split]:
        if (Path(root) / name).is_dir():
            return Path(root) / name
    return None


def fetch_part(root, part, url=None, keep_archive=False, retries=None, retry_delay=None):
    """Make ``part`` (train, val, jnd) present under ``root``; False if its folder already was.

    A folder already on disk, in either layout, is used as it is: never downloaded again,
    never replaced. An archive placed by hand is never deleted (when it fails extraction the
    error says to delete it); one this call downloaded is deleted after extraction unless
    `keep_archive`, and when it fails extraction.
    """
    if part not in ARCHIVES:
        raise ValueError(f"unknown BAPPS part {part!r}; valid parts: {', '.join(ARCHIVES)}")
    root = Path(root)
    if split_folder(root, SPLIT_OF_PART[part]) is not None:
        return False
    root.mkdir(parents=True, exist_ok=True)
    archive = root / ARCHIVES[part]
    downloaded = not archive.exists()
    if downloaded:
        base = url or os.environ.get("BAPPS_URL") or BASE_URL
        download(base.rstrip("/") + "/" + ARCHIVES[part], archive, retries, retry_delay)
    try:
        extract_part(archive, root, part)
    except DatasetError as err:
        if not downloaded:
            raise type(err)(f"{err}; delete {archive} and rerun to download it again") from err
        archive.unlink()
        raise type(err)(f"{err}; the downloaded file was deleted: rerun to download it again, or check "
                        f"the base URL (--url / $BAPPS_URL)") from err
    if downloaded and not keep_archive:
        archive.unlink()
    return True


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
        fetch_part(root, part)
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
        fetched = fetch_part(args.root, part, url=args.url, keep_archive=args.keep_archives)
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
