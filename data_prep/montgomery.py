"""Montgomery County TB chest X-rays (UMS-Rep Section 3.1.1): ``CXR_png/MCUCXR_0001_0.png`` (last
digit: 0 normal, 1 TB) with ``ManualMask/leftMask/`` and ``ManualMask/rightMask/`` holding masks
under the image's own file name; the lung mask is their union (``data_prep.io.read_mask``). The
combined lung-segmentation archive's ``masks/`` folder (no ``_mask`` suffix) is accepted too.
"""
from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from data_prep.shenzhen import find_masks, tb_manifest

CLASSES = ("normal", "tb")
LABEL_COLUMN = "label"
NAME = re.compile(r"^(MCUCXR_\d+)_([01])$")


def _masks(root: Path, image: Path) -> tuple:
    sides = tuple(str(root / "ManualMask" / side / image.name) for side in ("leftMask", "rightMask")
                  if (root / "ManualMask" / side / image.name).is_file())
    return sides or find_masks(root, image.stem, suffix="")


def load(root) -> pd.DataFrame:
    """Manifest: path, patient_id, label (normal/tb), abnormal (0/1), mask_paths (left, right)."""
    return tb_manifest(Path(root), "Montgomery", NAME, "MCUCXR_<id>_<0|1>.png", _masks)
