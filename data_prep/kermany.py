"""Kermany pediatric pneumonia chest X-rays (UMS-Rep Section 3.1.1, Table 1).

Layout ``chest_xray/{train,val,test}/{NORMAL,PNEUMONIA}/`` with ``personN_bacteria_K.jpeg``,
``personN_virus_K.jpeg`` and normals ``IM-XXXX-YYYY.jpeg`` / ``NORMAL2-IM-XXXX-YYYY.jpeg``
(XXXX the patient). Person numbers restart in each split, so patients are keyed by split + id.
The common archive nests a duplicate ``chest_xray/chest_xray/`` (and ``__MACOSX``): only the
outer copy is read. The published 16-image val split is kept as ``source_split`` but the
package carves validation from train by patient (``data_prep.splits``).
"""
from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from data_prep._layout import DatasetLayoutError

CLASSES = ("normal", "bacterial", "viral")
LABEL_COLUMN = "label"
SPLITS = ("train", "val", "test")
PNEUMONIA = re.compile(r"^person(\d+)_(bacteria|virus)_\d+$", re.IGNORECASE)
NORMAL = re.compile(r"^(NORMAL2-)?IM-(\d+)-\d+", re.IGNORECASE)


def _base(root: Path) -> Path:
    """The folder holding train/val/test: ``root/chest_xray`` or ``root`` itself."""
    for cand in (root / "chest_xray", root):
        if any((cand / s).is_dir() for s in SPLITS):
            return cand
    raise DatasetLayoutError(f"{root}: no chest_xray/{{train,val,test}} folders found")


def load(root) -> pd.DataFrame:
    """Manifest: path, patient_id (``split/personN`` or ``split/IM-XXXX``), label
    (normal/bacterial/viral), source_split, mask_paths (empty)."""
    base = _base(Path(root))
    rows = []
    for split in SPLITS:
        for folder in ("NORMAL", "PNEUMONIA"):
            d = base / split / folder
            if not d.is_dir():
                continue
            for p in sorted(d.iterdir()):
                if p.suffix.lower() not in (".jpeg", ".jpg", ".png") or p.name.startswith("."):
                    continue
                if folder == "PNEUMONIA":
                    m = PNEUMONIA.match(p.stem)
                    if not m:
                        raise DatasetLayoutError(f"{p}: PNEUMONIA file name is not personN_(bacteria|virus)_K")
                    label = "bacterial" if m.group(2).lower() == "bacteria" else "viral"
                    patient = f"person{int(m.group(1))}"
                else:
                    m = NORMAL.match(p.stem)
                    if not m:
                        raise DatasetLayoutError(f"{p}: NORMAL file name is not IM-XXXX-YYYY or NORMAL2-IM-XXXX-YYYY")
                    label = "normal"
                    patient = f"{'NORMAL2-' if m.group(1) else ''}IM-{int(m.group(2)):04d}"
                rows.append({"path": str(p), "patient_id": f"{split}/{patient}", "label": label,
                             "source_split": split, "mask_paths": ()})
    if not rows:
        raise DatasetLayoutError(f"{base}: no Kermany images found under {{train,val,test}}/{{NORMAL,PNEUMONIA}}")
    return pd.DataFrame(rows)
