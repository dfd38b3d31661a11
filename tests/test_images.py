"""Tests for images/: the generator reproduces the committed files, the manifest is
sound, and each category's variants really are what their names say."""
import csv
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, features

IMAGES = Path(__file__).resolve().parents[1] / "images"
REQUIRED = {"rotate", "translate", "invert", "color_stain"}
REFS = {
    "black": (0, 0, 0), "white": (255, 255, 255), "gray": (128, 128, 128),
    "red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255),
}


@pytest.fixture(scope="module")
def manifest():
    with open(IMAGES / "manifest.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory):
    out = tmp_path_factory.mktemp("images")
    subprocess.run([sys.executable, str(IMAGES / "make_images.py"), "--out", str(out)],
                   check=True, capture_output=True)
    return out


def generated_files(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*.png")) + ["manifest.csv"]


def decoded(path):
    with Image.open(path) as im:
        return im.mode, im.size, im.getpalette(), im.info.get("transparency"), np.array(im)


def over_white(rel):
    """The image as a viewer shows it: transparency composited over white."""
    with Image.open(IMAGES / rel) as im:
        rgba = im.convert("RGBA")
    return np.array(Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba).convert("RGB"))


def raw(rel):
    with Image.open(IMAGES / rel) as im:
        return np.array(im)


def rows_of(manifest, category):
    return [row for row in manifest if row["category"] == category]


def test_generator_reproduces_committed_files(regenerated):
    assert generated_files(regenerated) == generated_files(IMAGES)
    assert (regenerated / "manifest.csv").read_bytes() == (IMAGES / "manifest.csv").read_bytes()
    encoder_only = []
    for rel in generated_files(IMAGES)[:-1]:
        new, old = regenerated / rel, IMAGES / rel
        if new.read_bytes() == old.read_bytes():
            continue
        a, b = decoded(new), decoded(old)
        assert a[:4] == b[:4] and np.array_equal(a[4], b[4]), (
            f"{rel}: regenerated image differs from the committed one; "
            "run `python images/make_images.py` and commit the result")
        encoder_only.append(rel)
    if encoder_only:
        pytest.skip(f"{len(encoder_only)} PNGs (e.g. {encoder_only[0]}) decode identically but "
                    f"this Pillow (zlib {features.version('zlib')}) compresses them differently")


def test_manifest_header_categories_and_unique_cases(manifest):
    with open(IMAGES / "manifest.csv", encoding="utf-8") as f:
        assert f.readline().strip() == "category,image,variant,rule"
    assert REQUIRED <= {row["category"] for row in manifest}
    cases = [(row["image"], row["variant"]) for row in manifest]
    assert len(cases) == len(set(cases))


def test_rules_parse_and_refer_to_other_variants(manifest):
    for row in manifest:
        rule = row["rule"]
        for rel in (row["image"], row["variant"]):
            assert rel.split("/")[0] == row["category"], row
        if rule == "closer_than_refs":
            continue
        assert rule.startswith("closer_than:"), f"unknown rule {rule!r}"
        other = rule.split(":", 1)[1]
        assert other not in (row["image"], row["variant"]), row
        assert other.split("/")[0] == row["category"], row
        assert (IMAGES / other).is_file(), f"rule refers to missing {other}"


def test_every_image_is_96_by_96(manifest):
    paths = {p.relative_to(IMAGES).as_posix() for p in (IMAGES / "ref").glob("*.png")}
    for row in manifest:
        paths |= {row["image"], row["variant"], row["rule"].partition(":")[2] or row["image"]}
    for rel in sorted(paths):
        with Image.open(IMAGES / rel) as im:
            im.load()
            assert im.size == (96, 96), f"{rel} is {im.size}"


def test_references_are_flat_colours_and_noise():
    names = {p.stem for p in (IMAGES / "ref").glob("*.png")}
    assert names == set(REFS) | {"noise"}
    for name, rgb in REFS.items():
        assert (over_white(f"ref/{name}.png") == np.array(rgb, np.uint8)).all(), name
    noise = over_white("ref/noise.png").astype(float)
    assert noise.std() > 60 and len(np.unique(noise.reshape(-1, 3), axis=0)) > 9000


def test_transparent_images_hide_a_different_colour_than_their_variant(manifest):
    """Dropping alpha instead of compositing must change the picture."""
    modes = {}
    for row in manifest:
        with Image.open(IMAGES / row["image"]) as im:
            modes[row["image"]] = im.mode
            if im.mode not in ("RGBA", "LA", "P"):
                continue
            alpha = np.array(im.convert("RGBA"))[..., 3]
            dropped = np.array(im.convert("RGB"))
        with Image.open(IMAGES / row["variant"]) as var:
            dropped_var = np.array(var.convert("RGB"))
            hidden = (alpha == 0) & (np.array(var.convert("RGBA"))[..., 3] == 0)
        assert hidden.any() and (dropped[hidden] != dropped_var[hidden]).any(), row
    assert {"RGBA", "LA", "P"} <= set(modes.values())
    leaf = raw("rotate/leaf.png")
    assert {0, 255} <= set(np.unique(leaf[..., 3])) and len(np.unique(leaf[..., 3])) > 2
    assert (leaf[leaf[..., 3] == 0, :3] != 255).any()


def test_rotations_match_numpy_and_pil(manifest):
    yy, xx = np.mgrid[:96, :96]
    disc = np.hypot(xx - 47.5, yy - 47.5) < 40  # PIL's rotation has empty corners
    for row in rows_of(manifest, "rotate"):
        angle = float(re.search(r"_rot([\d.]+)\.png$", row["variant"]).group(1))
        image, variant = over_white(row["image"]), over_white(row["variant"])
        if angle % 90 == 0:
            assert np.array_equal(variant, np.rot90(image, int(angle // 90))), row
            continue
        pil = Image.fromarray(image)
        ccw = np.abs(variant - np.array(pil.rotate(angle, Image.BICUBIC)).astype(float))[disc]
        cw = np.abs(variant - np.array(pil.rotate(-angle, Image.BICUBIC)).astype(float))[disc]
        assert ccw.mean() < 4 and ccw.mean() < 0.25 * cw.mean(), row


def shift_of(rel):
    """(dx, dy) from a translated file name such as `clouds_dx6_dy6.png`."""
    dx, dy = re.search(r"_dx(\d+)", rel), re.search(r"_dy(\d+)", rel)
    return int(dx[1]) if dx else 0, int(dy[1]) if dy else 0


def test_translations_are_pure_shifts_of_one_canvas(manifest):
    for row in rows_of(manifest, "translate"):
        dx, dy = shift_of(row["variant"])
        assert dx or dy, row
        image, variant = over_white(row["image"]), over_white(row["variant"])
        assert np.array_equal(variant[:96 - dy, :96 - dx], image[dy:, dx:]), row
        if raw(row["image"]).ndim == 3 and raw(row["image"]).shape[2] == 3:
            # New content came in at the right/bottom edge: no empty border.
            edge = np.concatenate([variant[:, 96 - dx:].reshape(-1, 3), variant[96 - dy:].reshape(-1, 3)])
            assert len(np.unique(edge, axis=0)) > 1, row


def test_inversions_invert_colour_and_keep_alpha(manifest):
    for row in rows_of(manifest, "invert"):
        with Image.open(IMAGES / row["image"]) as im:
            has_alpha = im.mode in ("LA", "RGBA")
        image = raw(row["image"]).astype(int).reshape(96, 96, -1)
        variant = raw(row["variant"]).astype(int).reshape(96, 96, -1)
        colours = image.shape[2] - 1 if has_alpha else image.shape[2]
        assert (image[..., :colours] + variant[..., :colours] == 255).all(), row
        if has_alpha:
            assert np.array_equal(image[..., -1], variant[..., -1]), row


def test_color_stain_is_local_and_global_change_slight_but_not_smaller(manifest):
    for row in rows_of(manifest, "color_stain"):
        stain_rel = row["rule"].split(":", 1)[1]
        image = over_white(row["image"]).astype(float) / 255
        stain = over_white(stain_rel).astype(float) / 255
        changed = over_white(row["variant"]).astype(float) / 255
        stained_pixels = (stain != image).any(axis=-1).mean()
        assert 0.002 < stained_pixels < 0.03, row
        assert (changed != image).any(axis=-1).mean() > 0.9, row
        assert np.abs(changed - image).max() <= 20 / 255, row
        # A plain pixel distance cannot prefer the global change.
        assert ((changed - image) ** 2).mean() >= ((stain - image) ** 2).mean(), row


def test_images_folder_is_small():
    total = sum(p.stat().st_size for p in IMAGES.rglob("*") if p.is_file())
    assert total < 5 * 2**20
