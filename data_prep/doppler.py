"""Doppler echo strips (UMS-Rep's private set has no public release): ``manifest.csv`` with
columns path, patient_id, flow_type (MV/MA/TR), optional quality (good/low, empty where not
assessed) and optional mask_path; paths relative to the manifest's folder and kept inside it.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from data_prep._layout import DatasetLayoutError, read_csv, safe_join

CLASSES = ("MV", "MA", "TR")
QUALITIES = ("low", "good")
LABEL_COLUMN = "flow_type"


def load(root) -> pd.DataFrame:
    """Manifest: path, patient_id, flow_type, label (= flow_type), quality (None if not assessed),
    mask_paths."""
    root = Path(root)
    csv = root / "manifest.csv"
    m = read_csv(csv, ["path", "patient_id", "flow_type"], "Doppler manifest", dtype={"patient_id": str})
    unknown = sorted(set(m.flow_type.dropna()) - set(CLASSES))
    if unknown or m.flow_type.isna().any():
        raise DatasetLayoutError(f"{csv}: unknown or empty flow_type {unknown}; expected {CLASSES}")
    quality = m["quality"] if "quality" in m else pd.Series([None] * len(m))
    bad_q = sorted(set(quality.dropna()) - set(QUALITIES))
    if bad_q:
        raise DatasetLayoutError(f"{csv}: unknown quality value(s) {bad_q}; expected {QUALITIES} or empty")
    masks = m["mask_path"] if "mask_path" in m else pd.Series([None] * len(m))
    rows = []
    for i, r in m.iterrows():
        rows.append({"path": str(safe_join(root, r.path)), "patient_id": str(r.patient_id),
                     "flow_type": r.flow_type, "label": r.flow_type,
                     "quality": None if pd.isna(quality[i]) else str(quality[i]),
                     "mask_paths": () if pd.isna(masks[i]) else (str(safe_join(root, masks[i])),)})
    return pd.DataFrame(rows)
