"""A tiny BAPPS tree on disk, in the layout of DESIGN.md, for tests.

``make_bapps(root)`` writes random PNG patches and ``.npy`` judgements under
``root/train``, ``root/val`` and ``root/jnd/val`` (every subsplit of
``dataset_collector.SUBSPLITS``) and the part markers, so that
``dataset_collector("BAPPS", split, root=root, download=False)`` loads it.
"""
from pathlib import Path

import numpy as np
from PIL import Image

from dataset_collector import SPLIT_OF_PART, SUBSPLITS, marker_path


def make_bapps(root, n_2afc=6, n_jnd=6, size=64, seed=0, splits=("train", "val", "jnd"), layout="project",
               subsplits=None):
    """Write ``n_2afc`` (``n_jnd``) examples per subsplit of each part in ``splits``.

    Stems are ``000000``, ``000001``, ...; images are RGB ``size`` x ``size``; a 2AFC
    ``judge`` is a float in [0, 1], a JND ``same`` is 0.0 or 1.0, both stored as
    float32 arrays of shape (1,). ``layout="project"`` writes this project's layout and
    the part markers; ``"lpips"`` what LPIPS's download script leaves (``2afc/val``, no
    markers); ``"hand"`` this project's layout without markers. ``subsplits`` (default
    all) limits the subsplits written. Returns ``Path(root)``.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    for part in splits:
        split = SPLIT_OF_PART[part]
        jnd = part == "jnd"
        images, judgement = (("p0", "p1"), "same") if jnd else (("ref", "p0", "p1"), "judge")
        for subsplit in (s for s in SUBSPLITS[split] if subsplits is None or s in subsplits):
            folder = root / ("2afc/" + split if layout == "lpips" and not jnd else split) / subsplit
            for name in (*images, judgement):
                (folder / name).mkdir(parents=True, exist_ok=True)
            for i in range(n_jnd if jnd else n_2afc):
                stem = f"{i:06d}"
                for name in images:
                    pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                    Image.fromarray(pixels).save(folder / name / f"{stem}.png")
                value = float(rng.integers(0, 2)) if jnd else rng.random()
                np.save(folder / judgement / f"{stem}.npy", np.array([value], dtype=np.float32))
        if layout == "project":
            marker_path(root, part).write_text("written by tests/bapps_fake.py\n")
    return root
