"""Shenzhen TB chest X-rays (UMS-Rep Section 3.1.1): ``CXR_png/CHNCXR_0001_0.png`` — the last digit
is the label (0 normal, 1 TB) — with lung masks from the separate release in ``mask/`` named
``CHNCXR_0001_0_mask.png`` (566 of 662 images). The combined lung-segmentation archive names the
folder ``masks/``; both are accepted. Each image is its own patient.
"""
from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from data_prep._layout import DatasetLayoutError, require_dir, require_files

CLASSES = ("normal", "tb")
LABEL_COLUMN = "label"
NAME = re.compile(r"^(CHNCXR_\d+)_([01])$")


def find_masks(root: Path, stem: str, suffix: str = "_mask") -> tuple:
    """Mask path(s) for an image stem in ``mask/`` or ``masks/``, with or without ``suffix``."""
    for folder in ("mask", "masks"):
        for name in (f"{stem}{suffix}.png", f"{stem}.png"):
            p = root / folder / name
            if p.is_file():
                return (str(p),)
    return ()


def tb_manifest(root: Path, dataset: str, name: re.Pattern, pattern: str, masks_for) -> pd.DataFrame:
    """Rows for a ``CXR_png/<ID>_<0|1>.png`` TB collection (Shenzhen and Montgomery share this
    naming); ``masks_for(root, path)`` gives each image's mask path(s)."""
    files = require_files(require_dir(root / "CXR_png", f"{dataset} CXR_png"), "*.png", f"{dataset} images")
    rows = []
    for p in files:
        m = name.match(p.stem)
        if not m:
            raise DatasetLayoutError(f"{p}: file name does not follow {pattern}")
        label = int(m.group(2))
        rows.append({"path": str(p), "patient_id": p.stem, "label": CLASSES[label], "abnormal": label,
                     "mask_paths": masks_for(root, p)})
    return pd.DataFrame(rows)


def load(root) -> pd.DataFrame:
    """Manifest: path, patient_id, label (normal/tb), abnormal (0/1), mask_paths (possibly empty)."""
    return tb_manifest(Path(root), "Shenzhen", NAME, "CHNCXR_<id>_<0|1>.png", lambda r, p: find_masks(r, p.stem))
