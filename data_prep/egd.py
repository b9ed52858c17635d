"""Chest X-ray eye-gaze dataset (EGD, PhysioNet; MT-UNet's data, MT-UNet Section 4).

Layout: ``master_sheet.csv`` (dicom_id, path, patient_id, one-hot ``Normal``/``CHF``/
``pneumonia``, ``image_*_pad``), ``fixations.csv`` and ``eye_gaze.csv`` (``DICOM_ID``, time —
headed ``Time (in secs)`` or ``TIME(in secs)``, both accepted — ``FPOGX``/``FPOGY`` screen
fractions, ``FPOGD`` duration, ``X_ORIGINAL``/``Y_ORIGINAL`` image pixels, -1 off the image).
Images come from MIMIC-CXR by ``path``, relative to ``images_root`` (default: the EGD folder).

Gaze → saliency (:func:`saliency_map`): every gaze point inside the image adds its weight —
the fixation's duration for ``fixations.csv`` (the default), one per 60 Hz sample for
``eye_gaze.csv``, as the authors' code does — at its position mapped through the same
letterbox as the image, then a Gaussian of ``sigma_deg`` degrees of visual angle (the tracker's
≈1° accuracy) or ``sigma_px`` original pixels (the code's ≈75, the dataset authors' 150), then
normalisation to sum 1. Samples off the image (-1 or outside its size) are dropped.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from data_prep._layout import DatasetLayoutError, read_csv, safe_join
from data_prep.transforms import Letterbox

CLASSES = ("Normal", "CHF", "pneumonia")
LABEL_COLUMN = "label"
TIME_HEADERS = ("Time (in secs)", "TIME(in secs)")
GAZE_SOURCES = {"fixations": "fixations.csv", "eye_gaze": "eye_gaze.csv"}

SCREEN = (1920, 1080)  # reading-room display, width × height pixels
SCREEN_PX_PER_DEGREE = 45.0  # 0.27 mm pixel pitch at 70 cm: 2·700·tan(0.5°) / 0.27


@dataclass(frozen=True)
class Display:
    """How an image of ``shape`` (H, W) was letter-boxed on the screen; padding in image pixels."""

    shape: tuple

    @property
    def scale(self) -> float:  # screen pixels per image pixel
        h, w = self.shape
        return min(SCREEN[0] / w, SCREEN[1] / h)

    @property
    def padding(self) -> dict:
        h, w = self.shape
        extra_w, extra_h = SCREEN[0] / self.scale - w, SCREEN[1] / self.scale - h
        return {"image_top_pad": extra_h / 2, "image_bottom_pad": extra_h / 2,
                "image_left_pad": extra_w / 2, "image_right_pad": extra_w / 2}

    @property
    def px_per_degree(self) -> float:  # image pixels per degree of visual angle
        return SCREEN_PX_PER_DEGREE / self.scale

    def to_screen_fraction(self, x, y):
        pad = self.padding
        h, w = self.shape
        fx = (np.asarray(x) + pad["image_left_pad"]) / (w + pad["image_left_pad"] + pad["image_right_pad"])
        fy = (np.asarray(y) + pad["image_top_pad"]) / (h + pad["image_top_pad"] + pad["image_bottom_pad"])
        return fx, fy


def _image_shape(path: Path) -> tuple:
    """(H, W) from the DICOM header or the raster file, without decoding DICOM pixels."""
    if path.suffix.lower() == ".dcm":
        import pydicom
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            return int(ds.Rows), int(ds.Columns)
        except Exception as e:
            raise DatasetLayoutError(f"{path}: cannot read DICOM header ({e})") from e
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise DatasetLayoutError(f"{path}: cannot read image")
    return img.shape[:2]


def load(root, images_root=None) -> pd.DataFrame:
    """Manifest: path, dicom_id, patient_id, label (Normal/CHF/pneumonia), height, width,
    mask_paths (empty)."""
    root = Path(root)
    images_root = Path(images_root) if images_root else root
    csv = root / "master_sheet.csv"
    m = read_csv(csv, ["dicom_id", "path", "patient_id", *CLASSES], "EGD master sheet", dtype={"patient_id": str})
    onehot = m[list(CLASSES)].fillna(0).astype(int)
    bad = onehot.sum(axis=1) != 1
    if bad.any():
        raise DatasetLayoutError(f"{csv}: {bad.sum()} row(s) without exactly one of {CLASSES}, "
                                 f"e.g. dicom_id {m.dicom_id[bad].iloc[0]}")
    rows = []
    for r, label in zip(m.itertuples(), onehot.idxmax(axis=1)):
        path = safe_join(images_root, r.path)
        if not path.is_file():
            raise DatasetLayoutError(f"{path}: image for dicom_id {r.dicom_id} not found")
        h, w = _image_shape(path)
        rows.append({"path": str(path), "dicom_id": r.dicom_id, "patient_id": str(r.patient_id),
                     "label": label, "height": h, "width": w, "mask_paths": ()})
    return pd.DataFrame(rows)


def load_gaze(root, source: str = "fixations") -> pd.DataFrame:
    """Gaze table with columns dicom_id, time, x, y, weight; off-image samples dropped here only
    where marked -1 (points outside an image's size are dropped by :func:`saliency_map`)."""
    if source not in GAZE_SOURCES:
        raise ValueError(f"unknown gaze source {source!r}; expected one of {tuple(GAZE_SOURCES)}")
    csv = Path(root) / GAZE_SOURCES[source]
    g = read_csv(csv, ["DICOM_ID", "X_ORIGINAL", "Y_ORIGINAL", "FPOGD"], f"EGD {source}")
    time_col = next((c for c in TIME_HEADERS if c in g.columns), None)
    if time_col is None:
        raise DatasetLayoutError(f"{csv}: no time column (expected one of {TIME_HEADERS})")
    out = pd.DataFrame({"dicom_id": g.DICOM_ID, "time": g[time_col], "x": g.X_ORIGINAL, "y": g.Y_ORIGINAL,
                        "weight": g.FPOGD.clip(lower=0) if source == "fixations" else 1.0})
    return out[(out.x >= 0) & (out.y >= 0)].reset_index(drop=True)


def saliency_map(gaze: pd.DataFrame, in_shape, out_shape=None, sigma_deg: float = 1.0,
                 sigma_px: float | None = None) -> np.ndarray:
    """A float32 map of ``out_shape`` (default ``in_shape``) that sums to 1 (see module doc).

    ``in_shape`` is the original image's (H, W); the map is letter-boxed like the image."""
    h, w = in_shape
    out_shape = tuple(out_shape or in_shape)
    lb = Letterbox.fit((h, w), out_shape)
    inside = (gaze.x >= 0) & (gaze.x < w) & (gaze.y >= 0) & (gaze.y < h) & (gaze.weight > 0)
    g = gaze[inside]
    if g.empty:
        raise ValueError(f"no gaze point inside the {h}×{w} image")
    x, y = lb.points(g.x.to_numpy(float), g.y.to_numpy(float))
    acc = np.zeros(out_shape, np.float64)
    np.add.at(acc, (np.clip(np.round(y).astype(int), 0, out_shape[0] - 1),
                    np.clip(np.round(x).astype(int), 0, out_shape[1] - 1)), g.weight.to_numpy(float))
    sigma = (sigma_px if sigma_px is not None else sigma_deg * Display((h, w)).px_per_degree) * lb.scale
    k = int(2 * np.ceil(3 * sigma) + 1)
    acc = cv2.GaussianBlur(acc, (k, k), sigma, borderType=cv2.BORDER_CONSTANT)
    total = acc.sum()
    if not np.isfinite(total) or total <= 0:
        raise ValueError("saliency map has no mass after blurring")
    return (acc / total).astype(np.float32)
