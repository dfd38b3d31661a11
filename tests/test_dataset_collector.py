"""dataset_collector.py: download, safe extraction, datasets and load_image, all offline.

Archives are built here from a tiny synthetic BAPPS tree (`write_synthetic`) and served by an
http.server on 127.0.0.1 that supports Range, can ignore it, can cut a transfer off
half-way, and counts requests.
"""
import errno
import functools
import http.server
import io
import os
import re
import shutil
import socket
import subprocess
import sys
import tarfile
import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import experiment
from bapps_archives import ARCHIVES, SUBSPLITS, DatasetError, DownloadError, fetch_part
from cli import locked
from dataset_collector import dataset_collector, main, write_synthetic
from evaluation import bapps_sets
from helpers import run_cli, usage_error
from image_io import ImageLoadError, image_files, load_image

REPO = Path(__file__).resolve().parent.parent
OFFICIAL_PREFIX = {"train": "dataset/2afc/", "val": "dataset/2afc/", "jnd": "dataset/"}
BARE_PREFIX = {"train": "", "val": "", "jnd": ""}
PART_FOLDER = {"train": "train", "val": "val", "jnd": "jnd/val"}


def old_marker(root, part):
    """The completion marker earlier versions wrote after extracting a part (no longer written or read)."""
    return Path(root) / f".complete-{part}"


# ---------------------------------------------------------------- helpers


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves files with Range support; ``server.state`` counts, cuts, ignores Range, omits lengths."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        state = self.server.state
        state.requests.append((self.path, self.headers.get("Range")))
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        start = int(match.group(1)) if match and not state.ignore_range else 0
        if start:
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        if not state.no_length:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if state.cuts_left > 0:
            state.cuts_left -= 1
            body = body[:len(body) // 2]
        self.wfile.write(body)


@pytest.fixture
def server(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_Handler, directory=str(served)))
    httpd.state = SimpleNamespace(requests=[], cuts_left=0, ignore_range=False, no_length=False)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield SimpleNamespace(url=f"http://127.0.0.1:{httpd.server_address[1]}/", dir=served,
                          state=httpd.state)
    httpd.shutdown()
    httpd.server_close()
    thread.join()


@pytest.fixture(autouse=True)
def _fast_retries(monkeypatch):
    monkeypatch.setenv("BAPPS_RETRY_DELAY", "0")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.delenv("BAPPS_URL", raising=False)


def _build_archive(src, part, dest, prefix=OFFICIAL_PREFIX, extra=()):
    """Tar ``src/<part folder>`` under ``prefix`` into ``dest``, then add ``extra`` members."""
    with tarfile.open(dest, "w:gz") as tar:
        tar.add(src / PART_FOLDER[part], arcname=prefix[part] + PART_FOLDER[part])
        for info, data in extra:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return dest


def _member(name, kind=tarfile.REGTYPE, linkname="", data=b"evil"):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    return info, (data if kind == tarfile.REGTYPE else None)


def _files(root, part):
    folder = Path(root) / PART_FOLDER[part]
    return {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return write_synthetic(tmp_path_factory.mktemp("src"), n_2afc=2, n_jnd=2, size=8)


# ---------------------------------------------------------------- download and extraction


@pytest.mark.parametrize("prefix", [OFFICIAL_PREFIX, BARE_PREFIX], ids=["dataset-prefix", "bare"])
def test_downloads_extracts_exact_layout_then_makes_no_request(source, server, tmp_path, prefix):
    for part in ARCHIVES:
        _build_archive(source, part, server.dir / ARCHIVES[part], prefix)
    root = tmp_path / "root"
    assert main(["--root", str(root), "--parts", "val", "jnd", "train", "--url", server.url]) == 0
    for part in ARCHIVES:
        assert _files(root, part) == _files(source, part)
    assert sorted(p.name for p in root.iterdir()) == ["jnd", "train", "val"]  # the parts, and nothing else
    assert len(server.state.requests) == 3

    assert main(["--root", str(root), "--url", server.url]) == 0
    dataset_collector("BAPPS", "jnd/val", root=root, download=True)
    assert len(server.state.requests) == 3


def test_keep_archives_keeps_the_verified_archive(source, server, tmp_path):
    archive = _build_archive(source, "jnd", server.dir / ARCHIVES["jnd"])
    root = tmp_path / "root"
    args = ["--root", str(root), "--parts", "jnd", "--url", server.url, "--keep-archives"]
    assert main(args) == 0
    assert (root / ARCHIVES["jnd"]).read_bytes() == archive.read_bytes()


def _snapshot(root):
    return {p.relative_to(root): p.read_bytes() if p.is_file() else None for p in Path(root).rglob("*")}


@pytest.mark.parametrize("layout", ["lpips", "project"])
def test_tree_on_disk_is_used_as_it_is_and_never_touched(source, server, tmp_path, capsys, layout):
    """LPIPS's layout (2afc/val, no markers) or ours extracted by hand: no download, no change, user files kept."""
    for part in ARCHIVES:
        _build_archive(source, part, server.dir / ARCHIVES[part])
    root = write_synthetic(tmp_path / "root", n_2afc=2, n_jnd=3, size=8, parts=("val", "jnd"), layout=layout, seed=5)
    val = root / ("2afc/val" if layout == "lpips" else "val")
    (val / "cnn" / "ref" / "my_notes.txt").write_text("the user's own file")
    (root / "jnd/val/cnn/p0/000000.png").write_bytes(b"a user's edit")
    before = _snapshot(root)
    assert main(["--root", str(root), "--parts", "val", "jnd", "--url", server.url]) == 0
    assert f"val: already present in {val}" in capsys.readouterr().out
    for download in (True, False):
        data = dataset_collector("BAPPS", "val", subsplit="cnn", root=root, download=download, load_size=8)
        assert len(data) == 2 and torch.equal(data[1]["p1"], _pixels(val / "cnn/p1/000001.png"))
        assert len(dataset_collector("BAPPS", "jnd/val", root=root, download=download)) == 6
    sets = bapps_sets(root, ["val"], ["color"], download=True)
    assert [(d, s, len(x), i.split(":")[0]) for d, s, x, i in sets] == [("2afc", "color", 2, "synthetic")]
    assert server.state.requests == [] and _snapshot(root) == before


def test_missing_subsplit_is_one_error_listing_those_present(server, tmp_path):
    root = write_synthetic(tmp_path / "root", n_2afc=1, size=8, parts=("val",), layout="lpips",
                           subsplits=("traditional", "cnn"))
    for download in (False, True):
        with pytest.raises(DatasetError) as error:
            dataset_collector("BAPPS", "val", root=root, download=download)
        text = str(error.value)
        assert str(root / "2afc/val/superres") in text and "--subsplits traditional cnn" in text
    assert server.state.requests == []


def test_a_stale_marker_alone_is_not_a_part_and_a_tree_with_markers_reads_as_any(source, server, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    old_marker(root, "jnd").write_text("left without its folder")
    _build_archive(source, "jnd", server.dir / ARCHIVES["jnd"])
    assert fetch_part(root, "jnd", url=server.url)
    assert _files(root, "jnd") == _files(source, "jnd")
    assert old_marker(root, "jnd").read_text() == "left without its folder"
    assert not fetch_part(root, "jnd", url=server.url) and len(server.state.requests) == 1
    assert sorted(p.name for p in root.iterdir()) == [".complete-jnd", "jnd"]  # no marker of its own


def test_an_extraction_cut_short_leaves_no_part_and_a_rerun_completes_it(source, server, tmp_path, monkeypatch):
    _build_archive(source, "val", server.dir / ARCHIVES["val"])
    root, extract, calls = tmp_path / "root", tarfile.TarFile.extract, []

    def cut_after_three_files(self, member, *args, **kwargs):
        calls.append(member.name)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return extract(self, member, *args, **kwargs)

    monkeypatch.setattr(tarfile.TarFile, "extract", cut_after_three_files)
    with pytest.raises(KeyboardInterrupt):
        fetch_part(root, "val", url=server.url, keep_archive=True)
    # no part folder, no staging folder; the archive, and the file saying this program downloaded it
    assert sorted(p.name for p in root.iterdir()) == [ARCHIVES["val"], ARCHIVES["val"] + ".downloaded"]
    with pytest.raises(DatasetError, match="BAPPS val is not under"):
        dataset_collector("BAPPS", "val", root=root, download=False)
    monkeypatch.setattr(tarfile.TarFile, "extract", extract)
    assert fetch_part(root, "val", url=server.url)
    assert _files(root, "val") == _files(source, "val") and len(server.state.requests) == 1


def test_download_that_is_not_gzip_is_deleted_and_a_rerun_fetches_again(source, server, tmp_path, capsys):
    (server.dir / ARCHIVES["jnd"]).write_bytes(b"<!DOCTYPE html><html>Access denied</html>")
    root = tmp_path / "root"
    assert main(["--root", str(root), "--parts", "jnd", "--url", server.url]) == 1
    err = capsys.readouterr().err
    assert "not a gzip archive" in err and "<!DOCTYPE html>" in err and server.url + ARCHIVES["jnd"] in err
    assert os.listdir(root) == []
    _build_archive(source, "jnd", server.dir / ARCHIVES["jnd"])
    assert main(["--root", str(root), "--parts", "jnd", "--url", server.url]) == 0
    assert _files(root, "jnd") == _files(source, "jnd")


def test_transfer_cut_without_length_is_deleted_and_a_rerun_completes(source, server, tmp_path, capsys):
    _build_archive(source, "val", server.dir / ARCHIVES["val"])
    server.state.no_length, server.state.cuts_left = True, 1
    root = tmp_path / "root"
    assert main(["--root", str(root), "--parts", "val", "--url", server.url]) == 1
    err = capsys.readouterr().err
    assert str(root / ARCHIVES["val"]) in err and "deleted" in err
    assert os.listdir(root) == []
    assert main(["--root", str(root), "--parts", "val", "--url", server.url]) == 0
    assert _files(root, "val") == _files(source, "val")


@pytest.mark.parametrize("name, value", [
    ("BAPPS_RETRIES", "three"), ("BAPPS_RETRIES", "-1"), ("BAPPS_RETRIES", "1.5"),
    ("BAPPS_RETRY_DELAY", "soon"), ("BAPPS_RETRY_DELAY", "-2"), ("BAPPS_RETRY_DELAY", "nan"),
    ("BAPPS_RETRY_DELAY", "inf"),
])
def test_bad_retry_settings_are_usage_errors(tmp_path, monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    for cli in (main, experiment.main):
        flag = "--data-root" if cli is experiment.main else "--root"
        assert f"${name}={value!r}" in usage_error(cli, [flag, tmp_path / "root"])
    assert not (tmp_path / "root").exists()


@pytest.mark.parametrize("ignore_range", [False, True], ids=["resume", "server-ignores-range"])
def test_cut_transfer_fails_cleanly_then_completes(source, server, tmp_path, ignore_range):
    archive = _build_archive(source, "val", server.dir / ARCHIVES["val"])
    server.state.cuts_left, server.state.ignore_range = 1, ignore_range
    root = tmp_path / "root"
    env = dict(os.environ, BAPPS_RETRIES="0", BAPPS_RETRY_DELAY="0", NO_PROXY="127.0.0.1")
    first = subprocess.run(
        [sys.executable, str(REPO / "dataset_collector.py"), "--root", str(root),
         "--parts", "val", "--url", server.url],
        env=env, capture_output=True, text=True, timeout=120)
    assert first.returncode != 0
    assert server.url + ARCHIVES["val"] in first.stderr
    assert str(root / ARCHIVES["val"]) in first.stderr
    assert not (root / "val").exists()
    partial = root / (ARCHIVES["val"] + ".part")
    half = archive.stat().st_size // 2
    assert partial.stat().st_size == half

    assert main(["--root", str(root), "--parts", "val", "--url", server.url]) == 0
    assert [r for _, r in server.state.requests] == [None, f"bytes={half}-"]
    assert _files(root, "val") == _files(source, "val")
    assert not partial.exists()


def test_cut_transfer_is_retried_within_one_run(source, server, tmp_path):
    archive = _build_archive(source, "jnd", server.dir / ARCHIVES["jnd"])
    server.state.cuts_left = 1
    assert fetch_part(tmp_path / "root", "jnd", url=server.url, retries=2, retry_delay=0)
    half = archive.stat().st_size // 2
    assert [r for _, r in server.state.requests] == [None, f"bytes={half}-"]
    assert _files(tmp_path / "root", "jnd") == _files(source, "jnd")


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full, a device that is always full")
def test_a_full_disk_names_the_file_and_a_kept_download_is_deleted_once_extracted(source, server, tmp_path,
                                                                                  monkeypatch):
    _build_archive(source, "jnd", server.dir / ARCHIVES["jnd"])
    root = tmp_path / "root"
    root.mkdir()
    archive, part = root / ARCHIVES["jnd"], root / (ARCHIVES["jnd"] + ".part")
    command = ["--root", root, "--parts", "jnd", "--url", server.url]
    part.symlink_to("/dev/full")  # the download writes to a full disk
    code, _, err = run_cli(main, command)
    assert code == 1 and f"error: cannot write {part} while downloading {server.url}" in err
    assert "(No space left on device): free space there" in err and "the download resumes" in err
    part.unlink()

    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(tarfile.TarFile, "extract", full)
        code, _, err = run_cli(main, command)
    assert code == 1 and "while extracting" in err and "(BAPPS jnd) (No space left on device)" in err
    assert archive.is_file() and not (root / "jnd").exists()  # complete: kept for the next run
    assert run_cli(main, command)[0] == 0
    assert _files(root, "jnd") == _files(source, "jnd")
    assert sorted(os.listdir(root)) == ["jnd"]  # the download is deleted once extracted, by the later run too


def test_a_second_run_on_one_root_waits_for_the_first(source, server, tmp_path, capsys):
    _build_archive(source, "jnd", server.dir / ARCHIVES["jnd"])
    root, codes = tmp_path / "root", []
    second = threading.Thread(target=lambda: codes.append(main(["--root", str(root), "--parts", "jnd",
                                                                "--url", server.url])))
    with locked(root):  # the first run, fetching
        second.start()
        second.join(1.5)
        assert second.is_alive() and not server.state.requests
        shutil.copytree(source / "jnd", root / "jnd")  # what the first run leaves
    second.join(30)
    assert codes == [0] and not server.state.requests
    out, err = capsys.readouterr()
    assert f"another run is fetching BAPPS into {root}: waiting" in err and "jnd: already present" in out


def test_a_failed_attempt_is_one_short_line(tmp_path, capsys):
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{closed.getsockname()[1]}/"
    with pytest.raises(DownloadError, match=r"could not download .*jnd.tar.gz \(Connection refused\)\. Check"):
        fetch_part(tmp_path, "jnd", url=url, retries=1)
    assert capsys.readouterr().err.splitlines() == [f"download of {url}jnd.tar.gz failed (Connection refused); "
                                                    f"retry 1/1 in 0 s"]


def test_missing_file_on_server_says_where_to_place_it(server, tmp_path, capsys):
    root = tmp_path / "root"
    assert main(["--root", str(root), "--parts", "jnd", "--url", server.url]) == 1
    err = capsys.readouterr().err
    assert "404" in err and server.url + ARCHIVES["jnd"] in err
    assert str(root / ARCHIVES["jnd"]) in err
    assert len(server.state.requests) == 1
    assert not (root / "jnd").exists()


def _hostile(kind, tmp_path):
    inside = "dataset/2afc/val/traditional/ref/"
    if kind == "dotdot":
        return [_member(inside + "../../../../../x")], tmp_path / "x"
    if kind == "absolute":
        return [_member(str(tmp_path / "abs_x"))], tmp_path / "abs_x"
    if kind == "symlink":
        link = _member(inside + "evil", tarfile.SYMTYPE, linkname=str(tmp_path))
        return [link, _member(inside + "evil/payload")], tmp_path / "payload"
    if kind == "relative-symlink":
        link = _member(inside + "evil", tarfile.SYMTYPE, linkname="../../../../../..")
        return [link, _member(inside + "evil/payload")], tmp_path / "payload"
    link = _member(inside + "evil", tarfile.LNKTYPE, linkname=str(tmp_path / "victim"))
    return [link], tmp_path / "victim"


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink", "relative-symlink", "hardlink"])
def test_hostile_archive_writes_nothing_outside_root(source, tmp_path, capsys, kind):
    extra, target = _hostile(kind, tmp_path)
    root = tmp_path / "root"
    root.mkdir()
    _build_archive(source, "val", root / ARCHIVES["val"], extra=extra)
    before = sorted(p for p in tmp_path.rglob("*") if root not in p.parents)
    assert main(["--root", str(root), "--parts", "val"]) == 1
    assert "error:" in capsys.readouterr().err
    assert sorted(p for p in tmp_path.rglob("*") if root not in p.parents) == before
    assert not target.exists() and not target.is_symlink()
    assert sorted(p.name for p in root.iterdir()) == [ARCHIVES["val"]]


@pytest.mark.parametrize("kind, linkname", [
    (tarfile.SYMTYPE, "../p0/000000.png"),
    (tarfile.LNKTYPE, "dataset/2afc/val/traditional/p0/000000.png"),
], ids=["symlink", "hardlink"])
def test_link_inside_the_part_is_extracted(source, tmp_path, kind, linkname):
    root = tmp_path / "root"
    root.mkdir()
    extra = [_member("dataset/2afc/val/traditional/ref/alias.png", kind, linkname=linkname)]
    _build_archive(source, "val", root / ARCHIVES["val"], extra=extra)
    assert fetch_part(root, "val")
    alias = root / "val/traditional/ref/alias.png"
    assert alias.is_symlink() == (kind == tarfile.SYMTYPE)
    assert alias.read_bytes() == (source / "val/traditional/p0/000000.png").read_bytes()


def test_an_archive_placed_by_hand_is_extracted_and_kept(source, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    archive = _build_archive(source, "jnd", root / ARCHIVES["jnd"])
    placed = archive.read_bytes()
    assert fetch_part(root, "jnd")
    assert archive.read_bytes() == placed
    assert sorted((root / "jnd/val").iterdir()) == [root / "jnd/val/cnn", root / "jnd/val/traditional"]


@pytest.mark.parametrize("damage", ["truncated", "bad-checksum", "wrong-archive"])
def test_damaged_or_wrong_archive_is_an_error(source, tmp_path, capsys, damage):
    root = tmp_path / "root"
    root.mkdir()
    archive = root / ARCHIVES["val"]
    if damage == "truncated":
        data = _build_archive(source, "val", tmp_path / "full.tar.gz").read_bytes()
        archive.write_bytes(data[:len(data) * 3 // 4])
    elif damage == "bad-checksum":
        data = bytearray(_build_archive(source, "val", tmp_path / "full.tar.gz").read_bytes())
        data[-8] ^= 0xFF  # the gzip trailer's CRC-32: every tar member still reads fine
        archive.write_bytes(bytes(data))
    else:
        _build_archive(source, "jnd", tmp_path / "jnd.tar.gz").rename(archive)
    assert main(["--root", str(root), "--parts", "val"]) == 1
    assert str(archive) in capsys.readouterr().err
    assert sorted(p.name for p in root.iterdir()) == [ARCHIVES["val"]]


def test_help_lists_the_options(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for option in ("--root", "--parts", "--url", "--keep-archives"):
        assert option in out


# ---------------------------------------------------------------- datasets


@pytest.fixture(scope="module")
def bapps(tmp_path_factory):
    return write_synthetic(tmp_path_factory.mktemp("bapps"), n_2afc=5, n_jnd=4, size=64)


def _pixels(path):
    rgb = np.asarray(Image.open(path).convert("RGB"))
    return torch.from_numpy(rgb.copy()).permute(2, 0, 1).float() / 255


def test_2afc_item_is_exactly_what_is_on_disk(bapps):
    item = dataset_collector("BAPPS", "val", subsplit="cnn", root=bapps, download=False)[3]
    folder = bapps / "val" / "cnn"
    assert set(item) == {"ref", "p0", "p1", "judge"}
    for key in ("ref", "p0", "p1"):
        assert item[key].shape == (3, 64, 64) and item[key].dtype == torch.float32
        assert torch.equal(item[key], _pixels(folder / key / "000003.png"))
    assert item["judge"].shape == (1,) and item["judge"].dtype == torch.float32
    assert item["judge"].item() == np.load(folder / "judge" / "000003.npy")[0]
    assert 0 <= item["judge"].item() <= 1


def test_jnd_item_is_exactly_what_is_on_disk(bapps):
    dataset = dataset_collector("BAPPS", "jnd/val", subsplit="traditional", root=bapps,
                                download=False)
    folder = bapps / "jnd" / "val" / "traditional"
    assert len(dataset) == 4
    item = dataset[2]
    assert set(item) == {"p0", "p1", "same"}
    assert torch.equal(item["p1"], _pixels(folder / "p1" / "000002.png"))
    assert item["same"].shape == (1,) and item["same"].item() in (0.0, 1.0)
    assert item["same"].item() == np.load(folder / "same" / "000002.npy")[0]


def test_all_concatenates_subsplits_in_design_order(bapps):
    dataset = dataset_collector("BAPPS", "train", root=bapps, download=False)
    assert len(dataset) == 5 * len(SUBSPLITS["train"])
    for k, subsplit in enumerate(SUBSPLITS["train"]):
        expected = _pixels(bapps / "train" / subsplit / "ref" / "000001.png")
        assert torch.equal(dataset[5 * k + 1]["ref"], expected)


def test_load_size_and_image_transform(bapps):
    dataset = dataset_collector("BAPPS", "val", subsplit=["color"], root=bapps, download=False,
                                load_size=32, image_transform=lambda x: 1 - x)
    reference = F.interpolate(_pixels(bapps / "val/color/p0/000000.png")[None], size=(32, 32),
                              mode="bicubic", antialias=True).clamp(0, 1)[0]
    torch.testing.assert_close(dataset[0]["p0"], 1 - reference)


def test_dataloader_batches_in_worker_processes(bapps):
    dataset = dataset_collector("BAPPS", "val", root=bapps, download=False)
    batch = next(iter(torch.utils.data.DataLoader(dataset, batch_size=7, num_workers=2)))
    assert batch["ref"].shape == (7, 3, 64, 64) and batch["judge"].shape == (7, 1)


def test_an_error_in_a_worker_is_the_one_line_naming_the_file(tmp_path):
    root = write_synthetic(tmp_path, n_2afc=2, size=8, parts=("val",))
    (root / "val/cnn/p0/000000.png").write_bytes(b"not a png")
    (root / "val/cnn/judge/000001.npy").write_bytes(b"not numpy")
    dataset = dataset_collector("BAPPS", "val", subsplit="cnn", root=root, download=False)
    for index, kind in ((0, ImageLoadError), (1, DatasetError)):
        with pytest.raises(kind) as here:
            dataset[index]
        loader = torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, [index]), num_workers=1)
        with pytest.raises(kind) as in_worker:
            next(iter(loader))
        assert str(in_worker.value) == str(here.value) and "\n" not in str(here.value)


def test_missing_stem_is_named(tmp_path):
    root = write_synthetic(tmp_path, n_2afc=3, size=8, parts=("val",))
    (root / "val/deblur/p1/000002.png").unlink()
    with pytest.raises(DatasetError, match=r"000002.*p1"):
        dataset_collector("BAPPS", "val", subsplit="deblur", root=root, download=False)


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_png_names_its_path(tmp_path, damage):
    root = write_synthetic(tmp_path, n_2afc=2, size=16, parts=("val",))
    path = root / "val/superres/p0/000001.png"
    data = path.read_bytes()
    path.write_bytes(b"not a png" if damage == "garbage" else data[:len(data) // 2])
    dataset = dataset_collector("BAPPS", "val", subsplit="superres", root=root, download=False)
    dataset[0]
    with pytest.raises(ImageLoadError, match=re.escape(str(path))):
        dataset[1]


@pytest.mark.parametrize("args, valid", [
    (("BAPPS", "test"), "train, val, jnd/val"),
    (("BAPPS", "val", "mix"), "traditional, cnn, superres, deblur, color, frameinterp"),
    (("BAPPS", "jnd/val", "superres"), "traditional, cnn"),
    (("KADID", "val"), "BAPPS"),
])
def test_unknown_names_list_the_valid_ones(tmp_path, args, valid):
    with pytest.raises(ValueError, match=re.escape(valid)):
        dataset_collector(*args, root=tmp_path, download=False)


def test_missing_dataset_without_download_names_the_command(tmp_path):
    write_synthetic(tmp_path, n_2afc=1, size=8, parts=("val",))
    expected = f"python dataset_collector.py --root {tmp_path} --parts jnd"
    with pytest.raises(DatasetError, match=re.escape(expected)):
        dataset_collector("BAPPS", "jnd/val", root=tmp_path, download=False)


# ---------------------------------------------------------------- load_image


def _save(tmp_path, image, name="image.png", **params):
    path = tmp_path / name
    image.save(path, **params)
    return path


def test_rgba_is_composited_over_white(tmp_path):
    pixels = np.zeros((2, 2, 4), dtype=np.uint8)
    pixels[0, 0] = (255, 0, 0, 0)  # hidden red under full transparency
    pixels[0, 1] = (200, 100, 0, 128)
    pixels[1, :] = (10, 20, 30, 255)
    image = load_image(_save(tmp_path, Image.fromarray(pixels, "RGBA")))
    assert image.shape == (3, 2, 2) and image.dtype == torch.float32
    torch.testing.assert_close(image[:, 0, 0], torch.ones(3))
    # 200/255 * 128/255 + (1 - 128/255) = (200*128 + 127*255) / 255**2, likewise for G, B
    half = torch.tensor([57985, 45185, 32385]) / 65025
    torch.testing.assert_close(image[:, 0, 1], half)
    torch.testing.assert_close(image[:, 1, 1], torch.tensor([10, 20, 30]) / 255)


def test_la_gray_is_composited_and_replicated(tmp_path):
    pixels = np.array([[[77, 0], [100, 255]]], dtype=np.uint8)
    image = load_image(_save(tmp_path, Image.fromarray(pixels, "LA")))
    torch.testing.assert_close(image[:, 0, 0], torch.ones(3))
    torch.testing.assert_close(image[:, 0, 1], torch.full((3,), 100 / 255))


def test_gray_gives_three_equal_channels(tmp_path):
    pixels = np.array([[0, 51], [204, 255]], dtype=np.uint8)
    image = load_image(_save(tmp_path, Image.fromarray(pixels, "L")))
    for channel in image:
        torch.testing.assert_close(channel, torch.from_numpy(pixels).float() / 255)


def test_16_bit_gray_keeps_its_precision(tmp_path):
    pixels = np.array([[0, 1], [40000, 65535]], dtype=np.uint16)
    image = load_image(_save(tmp_path, Image.fromarray(pixels)))
    torch.testing.assert_close(image[1], torch.from_numpy(pixels.astype(np.float32)) / 65535)


def test_float_images_in_0_1_are_used_as_they_are_and_others_are_an_error_naming_the_file(tmp_path):
    values = np.array([[0, 0.25], [0.7, 1]], dtype=np.float32)
    image = load_image(_save(tmp_path, Image.fromarray(values), "float.tif"))
    assert image.shape == (3, 2, 2) and all(torch.equal(channel, torch.from_numpy(values)) for channel in image)
    for bad, seen in ((2 * values - 0.5, "values from -0.5 to 1.5"), (np.where(values > 0.5, np.nan, values), "NaN")):
        path = _save(tmp_path, Image.fromarray(bad), "bad.tif")
        with pytest.raises(ImageLoadError, match=rf"^cannot read image {re.escape(str(path))}: .*{seen}.*\[0, 1\]"):
            load_image(path)


@pytest.mark.parametrize("dtype", [np.uint16, np.uint32, np.int32])
def test_16_and_32_bit_integer_tiffs_are_scaled_by_their_bit_depth(tmp_path, dtype):
    import tifffile  # scikit-image's TIFF library; PIL writes no unsigned 32-bit TIFF
    top = np.iinfo(dtype).max
    values = np.array([[0, 1], [top // 3, top]], dtype=dtype)
    tifffile.imwrite(tmp_path / "gray.tif", values)
    expected = torch.tensor([[0, 1 / top], [(top // 3) / top, 1]], dtype=torch.float64).float()
    assert all(torch.equal(channel, expected) for channel in load_image(tmp_path / "gray.tif"))
    if dtype == np.int32:
        tifffile.imwrite(tmp_path / "negative.tif", -values)
        with pytest.raises(ImageLoadError, match=r"negative.tif: signed 32-bit samples down to -2147483647"):
            load_image(tmp_path / "negative.tif")


def test_image_files_follow_linked_folders_but_not_loops(tmp_path):
    folder, elsewhere = tmp_path / "images", tmp_path / "elsewhere"
    (folder / "sub").mkdir(parents=True)
    elsewhere.mkdir()
    for path in (folder / "a.png", folder / "sub" / "b.png", elsewhere / "c.png"):
        Image.new("RGB", (2, 2)).save(path)
    (folder / "linked").symlink_to(elsewhere, target_is_directory=True)
    (folder / "sub" / "loop").symlink_to(folder, target_is_directory=True)
    assert image_files(str(folder)) == ["a.png", "linked/c.png", "sub/b.png"]


def test_palette_with_transparency_entry(tmp_path):
    palette = Image.new("P", (2, 1), 0)
    palette.putpalette([0, 255, 0, 10, 20, 30])
    palette.putpixel((1, 0), 1)
    image = load_image(_save(tmp_path, palette, transparency=0))
    torch.testing.assert_close(image[:, 0, 0], torch.ones(3))
    torch.testing.assert_close(image[:, 0, 1], torch.tensor([10, 20, 30]) / 255)


def test_rgb_with_transparent_colour_key(tmp_path):
    pixels = np.array([[[1, 2, 3], [4, 5, 6]]], dtype=np.uint8)
    image = load_image(_save(tmp_path, Image.fromarray(pixels, "RGB"), transparency=(1, 2, 3)))
    torch.testing.assert_close(image[:, 0, 0], torch.ones(3))
    torch.testing.assert_close(image[:, 0, 1], torch.tensor([4, 5, 6]) / 255)


def test_size_resizes_only_when_needed(tmp_path):
    rng = np.random.default_rng(1)
    path = _save(tmp_path, Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)))
    original = load_image(path)
    assert original.shape == (3, 20, 30)
    assert torch.equal(load_image(path, size=None), original)
    reference = F.interpolate(original[None], size=(16, 16), mode="bicubic",
                              antialias=True).clamp(0, 1)[0]
    torch.testing.assert_close(load_image(path, size=16), reference)
    square = _save(tmp_path, Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)),
                   name="square.png")
    assert torch.equal(load_image(square, size=16), load_image(square))


@pytest.mark.parametrize("content", [None, b"", b"\x89PNG\r\n\x1a\n garbage"])
def test_unreadable_image_names_its_path(tmp_path, content):
    path = tmp_path / "broken.png"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ImageLoadError, match=re.escape(str(path))):
        load_image(path)
