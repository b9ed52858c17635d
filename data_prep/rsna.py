"""RSNA Pneumonia Detection Challenge (stage 2): the CDAE's unlabelled source (UMS-Rep Section 4.1.1).

Layout: ``stage_2_train_labels.csv`` (patientId, x, y, width, height, Target; one row per box,
empty box fields when Target = 0), ``stage_2_detailed_class_info.csv`` (patientId, class),
``stage_2_train_images/<patientId>.dcm``. Rows are de-duplicated per patient before merging, so
the manifest has one row per image with its boxes as a list.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from data_prep._layout import DatasetLayoutError, read_csv, require_dir

CLASSES = ("Normal", "No Lung Opacity / Not Normal", "Lung Opacity")
LABEL_COLUMN = "label"


def load(root) -> pd.DataFrame:
    """Manifest: path, patient_id, label (detailed class), target (0/1), boxes [(x, y, w, h)],
    mask_paths (empty: RSNA has boxes, not masks)."""
    root = Path(root)
    images = require_dir(root / "stage_2_train_images", "RSNA stage_2_train_images")
    labels = read_csv(root / "stage_2_train_labels.csv",
                      ["patientId", "x", "y", "width", "height", "Target"], "RSNA labels")
    info = read_csv(root / "stage_2_detailed_class_info.csv", ["patientId", "class"], "RSNA class info")
    bad = sorted(set(labels.Target.dropna().unique()) - {0, 1})
    if bad or labels.Target.isna().any():
        raise DatasetLayoutError(f"{root / 'stage_2_train_labels.csv'}: Target must be 0 or 1, found {bad or 'empty'}")
    unknown = sorted(set(info["class"]) - set(CLASSES))
    if unknown:
        raise DatasetLayoutError(f"{root / 'stage_2_detailed_class_info.csv'}: unknown class(es) {unknown}")
    classes = info.drop_duplicates("patientId").set_index("patientId")["class"]
    boxes: dict = {}  # one pass over the rows with a box (a per-patient groupby is ~1 ms a patient)
    for pid, *box in labels.dropna(subset=["x", "y", "width", "height"])[
            ["patientId", "x", "y", "width", "height"]].itertuples(index=False):
        boxes.setdefault(pid, []).append(tuple(float(v) for v in box))
    target = labels.groupby("patientId", sort=True).Target.max()
    pids = list(target.index)
    df = pd.DataFrame({"path": [str(images / f"{pid}.dcm") for pid in pids], "patient_id": [str(p) for p in pids],
                       "label": classes.reindex(pids).to_numpy(), "target": target.astype(int).to_numpy(),
                       "boxes": [boxes.get(pid, []) for pid in pids], "mask_paths": [()] * len(pids)})
    missing = df.label.isna()
    if missing.any():
        raise DatasetLayoutError(f"{root / 'stage_2_detailed_class_info.csv'}: no class for "
                                 f"{missing.sum()} patient(s), e.g. {df.patient_id[missing].iloc[0]}")
    return df
