"""Montgomery County TB chest X-rays (SPEC.md, "Real data"): ``CXR_png/MCUCXR_0001_0.png`` (last
digit: 0 normal, 1 TB) with ``ManualMask/leftMask/`` and ``ManualMask/rightMask/`` holding masks
under the image's own file name; the lung mask is their union (``data_prep.io.read_mask``). The
combined lung-segmentation archive's ``masks/`` folder (no ``_mask`` suffix) is accepted too.
"""
from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from data_prep._layout import DatasetLayoutError, require_dir, require_files
from data_prep.shenzhen import find_masks

CLASSES = ("normal", "tb")
LABEL_COLUMN = "label"
NAME = re.compile(r"^(MCUCXR_\d+)_([01])$")


def load(root) -> pd.DataFrame:
    """Manifest: path, patient_id, label (normal/tb), abnormal (0/1), mask_paths (left, right)."""
    root = Path(root)
    files = require_files(require_dir(root / "CXR_png", "Montgomery CXR_png"), "*.png", "Montgomery images")
    rows = []
    for p in files:
        m = NAME.match(p.stem)
        if not m:
            raise DatasetLayoutError(f"{p}: file name does not follow MCUCXR_<id>_<0|1>.png")
        sides = tuple(str(root / "ManualMask" / side / p.name) for side in ("leftMask", "rightMask")
                      if (root / "ManualMask" / side / p.name).is_file())
        label = int(m.group(2))
        rows.append({"path": str(p), "patient_id": p.stem, "label": CLASSES[label], "abnormal": label,
                     "mask_paths": sides or find_masks(root, p.stem, suffix="")})
    return pd.DataFrame(rows)
