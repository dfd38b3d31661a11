"""BAPPS archives: download (resumed, retried, length-checked) and safe extraction into the layout.

``fetch_part(root, part)`` makes a part (``train``, ``val``, ``jnd``) present under ``root``:
it fetches the official archive (``twoafc_train.tar.gz``, ``twoafc_val.tar.gz``,
``jnd.tar.gz``) from the base URL (default: the official bucket, or ``$BAPPS_URL``) into
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
``keep_archive``, and also when it cannot be extracted; one placed by hand is never deleted.
``ROOT/<archive>.downloaded`` says which is which while the archive is there, so that an archive
kept after a full disk stopped its extraction is still deleted once a later run extracted it. A
file that cannot be written (a full disk) is an error naming it and the part.

A part whose folder is on disk, in this layout or LPIPS's (``ROOT/2afc/{train,val}``,
``ROOT/jnd/val``), whoever extracted it, is used as it is: never fetched again, nothing
of it deleted or replaced.
"""
import gzip
import os
import posixpath
import re
import shutil
import sys
import tarfile
import time
import zlib
from pathlib import Path, PurePosixPath

import requests
import urllib3
from tqdm import tqdm

from image_io import FileError

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
DOWNLOADED_NOTE = "The archive beside this file was downloaded by dataset_collector.py: it is deleted once extracted.\n"


class DatasetError(FileError):
    """A problem with BAPPS on disk or its download that the user has to act on (its message survives
    DataLoader workers: see `image_io.FileError`)."""


class DownloadError(DatasetError):
    """A download that failed for good (after the retries)."""


class DiskError(DatasetError):
    """A file of the dataset that could not be written (a full disk, no permission)."""


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
                    f"could not download {url} ({_reason(err)}). Check the network or the base URL "
                    f"(--url / $BAPPS_URL) and rerun to resume, or download the file by hand "
                    f"and place it at {dest}") from err
            wait = delay * 2 ** attempt
            print(f"download of {url} failed ({_reason(err)}); retry {attempt + 1}/{retries} "
                  f"in {wait:g} s", file=sys.stderr)
            time.sleep(wait)
        except requests.RequestException as err:
            raise DownloadError(f"could not download {url} ({_reason(err)}); check the base URL "
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


def _reason(err):
    """A network error in a few words ("Connection refused", "timed out"): urllib3's own text, with
    its connection pools and object addresses, runs to hundreds of characters."""
    if isinstance(err, requests.Timeout):
        return "timed out"
    match = re.search(r"\[Errno -?\d+\] ([^'\")]+)", str(err))
    if match:
        return match.group(1).strip()
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= 100 else text[:97] + "..."


def _disk_error(err, path, action, fix):
    """DiskError naming `path`, for an OSError (a full disk, no permission) met while `action`."""
    return DiskError(f"cannot write {path} while {action} ({err.strerror or err}): {fix}")


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
        try:
            _write_stream(response.raw, part, append, total, offset)
        except OSError as err:
            if isinstance(err, requests.RequestException):  # requests' errors are OSErrors too
                raise
            raise _disk_error(err, part, f"downloading {url}", "free space there (or pass another --root) "
                              "and rerun: the download resumes where it stopped") from None
    size = part.stat().st_size
    if total is not None and size != total:
        if size > total:
            part.unlink()
        raise _TransientDownloadError(f"got {size} of the {total} bytes the server announced")


def _write_stream(raw, part, append, total, offset):
    """The server's bytes into `part` (appended, or from the start), with a progress bar; urllib3 reports
    network errors as its own exceptions, so an OSError here is the disk's."""
    with open(part, "ab" if append else "wb") as f, tqdm(
            total=total, initial=offset if append else 0, unit="B", unit_scale=True,
            desc=part.name.removesuffix(".part")) as bar:
        for chunk in raw.stream(1 << 20, decode_content=False):
            f.write(chunk)
            bar.update(len(chunk))


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
    except DatasetError:
        raise
    except OSError as err:
        where = err.filename or staging
        raise _disk_error(err, where, f"extracting {archive} (BAPPS {part})",
                          f"free space under {root} and rerun; nothing of the part was kept") from None
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
    error says to delete it); one this program downloaded (in this run or an earlier one, see
    `downloaded_marker`) is deleted after extraction unless `keep_archive`, and when it is not a
    valid archive; after a full disk stopped its extraction it is kept for the next run.
    """
    if part not in ARCHIVES:
        raise ValueError(f"unknown BAPPS part {part!r}; valid parts: {', '.join(ARCHIVES)}")
    root = Path(root)
    if split_folder(root, SPLIT_OF_PART[part]) is not None:
        return False
    root.mkdir(parents=True, exist_ok=True)
    archive = root / ARCHIVES[part]
    marker = downloaded_marker(archive)
    downloaded = not archive.exists() or marker.exists()
    if not archive.exists():
        base = url or os.environ.get("BAPPS_URL") or BASE_URL
        download(base.rstrip("/") + "/" + ARCHIVES[part], archive, retries, retry_delay)
        marker.write_text(DOWNLOADED_NOTE)
    try:
        extract_part(archive, root, part)
    except DiskError as err:
        kept = "it is kept, and deleted once extracted" if downloaded else "it is kept"
        raise DiskError(f"{err}; the archive {archive} is complete: {kept}") from err
    except DatasetError as err:
        if not downloaded:
            raise type(err)(f"{err}; delete {archive} and rerun to download it again") from err
        archive.unlink()
        marker.unlink(missing_ok=True)
        raise type(err)(f"{err}; the downloaded file was deleted: rerun to download it again, or check "
                        f"the base URL (--url / $BAPPS_URL)") from err
    if downloaded and not keep_archive:
        archive.unlink()
    marker.unlink(missing_ok=True)  # a kept archive is the user's from now on
    return True


def downloaded_marker(archive):
    """The file that says `archive` was downloaded by this program (so deleted once extracted, even by a later
    run after a failed extraction), unlike one placed by hand (never deleted)."""
    return Path(archive).with_name(Path(archive).name + ".downloaded")
