"""Write phantom datasets in the published file layouts of the real datasets (UMS-Rep Section
3.1, Table 1; MT-UNet Section 4).

``generate(layout, out, n, seed, size)`` writes a complete dataset folder atomically (built in a
temporary sibling, renamed into place), in parallel over the machine's cores, deterministically
for a seed: the same arguments give identical bytes. Besides the real layout each folder holds
``_phantom/truth.csv`` — the generator's ground truth (finding, severity, cardiothoracic ratio,
Doppler peak velocity, quality defects) — which the real loaders ignore and the tests use.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from data_prep.cli import worker_pool
from data_prep.io import atomic_directory
from data_prep.phantoms.cxr import render_cxr
from data_prep.phantoms.doppler import FLOW_TYPES, render_doppler
from data_prep.egd import Display
from data_prep.phantoms.gaze import raw_samples, regions_of, simulate_fixations

log = logging.getLogger(__name__)

# Bumped whenever the generators draw different images for the same arguments: it is part of the
# cache key (data_prep.datasets.phantom), so an upgraded package never reuses stale phantoms.
GENERATOR_VERSION = 2
LAYOUTS = ("rsna", "shenzhen", "montgomery", "kermany", "egd", "doppler")
TRUTH = Path("_phantom") / "truth.csv"
RSNA_CLASSES = ("Lung Opacity", "No Lung Opacity / Not Normal", "Normal")
EGD_LABELS = ("Normal", "CHF", "pneumonia")


# --------------------------------------------------------------------------- helpers

def _item_seed(seed: int, layout: str, index: int) -> np.random.SeedSequence:
    return np.random.SeedSequence(seed, spawn_key=(LAYOUTS.index(layout), index))


def _plan_rng(seed: int, layout: str) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(LAYOUTS.index(layout), 10**9)))


def _write_png(path: Path, image: np.ndarray) -> None:
    """8-bit PNG from a float image in [0, 1] or a 0/1 mask (written 0/255)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = image if image.dtype == np.uint8 and image.max() > 1 else np.round(np.clip(image, 0, 1) * 255)
    if not cv2.imwrite(str(path), arr.astype(np.uint8)):
        raise OSError(f"{path}: could not write PNG")


def _write_jpeg(path: Path, image: np.ndarray, rgb: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)
    if rgb:  # some Kermany JPEGs are stored as 3-channel files
        arr = cv2.cvtColor(arr, cv2.COLOR_GRAY2BGR)
    if not cv2.imwrite(str(path), arr, [cv2.IMWRITE_JPEG_QUALITY, 92]):
        raise OSError(f"{path}: could not write JPEG")


def _uid(entropy: str) -> str:
    from pydicom.uid import generate_uid
    return generate_uid(prefix="1.2.826.0.1.3680043.10.1184.", entropy_srcs=[entropy])


def _write_dicom(path: Path, image: np.ndarray, key: str, patient_id: str, rng: np.random.Generator,
                 *, allow_monochrome1: bool = True) -> dict:
    """A 16-bit CR DICOM (12 bits stored). Some files are MONOCHROME1 (inverted values) and some
    carry a rescale slope/intercept, so a reader must apply both to recover the image."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    value = np.round(np.clip(image, 0, 1) * 4095.0)
    mono1 = allow_monochrome1 and rng.random() < 0.25
    slope, intercept = (2.0, -100.0) if rng.random() < 0.15 else (1.0, 0.0)
    stored = (4095.0 - value) if mono1 else value
    stored = np.round((stored - intercept) / slope).astype(np.uint16)

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"  # Computed Radiography
    meta.MediaStorageSOPInstanceUID = _uid(key + "/sop")
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = "1.2.826.0.1.3680043.10.1184.1"
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = _uid(key + "/study")
    ds.SeriesInstanceUID = _uid(key + "/series")
    ds.PatientID = patient_id
    ds.PatientName = "PHANTOM^" + patient_id[:8]
    ds.PatientSex = "M" if rng.random() < 0.55 else "F"
    ds.PatientAge = f"{int(rng.integers(18, 90)):03d}Y"
    ds.Modality = "CR"
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = "PA" if rng.random() < 0.7 else "AP"
    ds.Rows, ds.Columns = image.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME1" if mono1 else "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12 if slope == 1 else 13, 11 if slope == 1 else 12
    ds.PixelRepresentation = 0
    ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = slope, intercept, "US"
    ds.WindowCenter, ds.WindowWidth = 2048, 4096
    ds.PixelData = stored.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return {"photometric": ds.PhotometricInterpretation, "rescale_slope": slope}


def _portrait(size: int) -> tuple:
    return (int(round(size * 1.2)), size)


def _cxr_truth(ph) -> dict:
    return {"finding": ph.finding, "severity": round(ph.severity, 4), "ctr": round(ph.ctr, 4),
            "lung_fraction": round(float(ph.lungs.mean()), 4)}


# --------------------------------------------------------------------------- per-item writers
# Each returns (layout rows, truth row); they run in worker processes.

def _rsna_item(spec, root: Path, size: int):
    seq = _item_seed(spec["seed"], "rsna", spec["i"])
    ph = render_cxr(seq, (size, size), spec["finding"])
    rng = np.random.default_rng(seq.spawn(1)[0])
    pid = spec["patient_id"]
    rel = f"stage_2_train_images/{pid}.dcm"
    extra = _write_dicom(root / rel, ph.image, f"rsna/{pid}", pid, rng)
    rows = []
    if spec["class"] == "Lung Opacity":
        boxes = ph.boxes or [_lung_box(ph)]
        rows = [{"patientId": pid, "x": float(x), "y": float(y), "width": float(bw), "height": float(bh),
                 "Target": 1} for x, y, bw, bh in boxes]
    else:
        rows = [{"patientId": pid, "x": None, "y": None, "width": None, "height": None, "Target": 0}]
    for r in rows:
        r["class"] = spec["class"]
    return rows, {"file": rel, "patient_id": pid, **_cxr_truth(ph), **extra}


def _lung_box(ph):
    ys, xs = np.nonzero(ph.lungs)
    return (int(xs.min()), int(ys.min()), int(xs.max() - xs.min()), int(ys.max() - ys.min()))


def _shenzhen_item(spec, root: Path, size: int):
    seq = _item_seed(spec["seed"], "shenzhen", spec["i"])
    rng = np.random.default_rng(seq.spawn(1)[0])
    shape = (size, int(round(size * rng.uniform(0.94, 1.06))))
    ph = render_cxr(seq, shape, "tb" if spec["label"] else "normal")
    name = f"CHNCXR_{spec['i'] + 1:04d}_{spec['label']}"
    _write_png(root / "CXR_png" / f"{name}.png", ph.image)
    if spec["has_mask"]:
        _write_png(root / "mask" / f"{name}_mask.png", ph.lungs)
    sex, age = ("male" if rng.random() < 0.6 else "female"), int(rng.integers(10, 85))
    reading = "normal" if not spec["label"] else \
        f"PTB in the {rng.choice(['left', 'right', 'bilateral'])} upper field"
    (root / "ClinicalReadings").mkdir(parents=True, exist_ok=True)
    (root / "ClinicalReadings" / f"{name}.txt").write_text(f"{sex} {age}yrs\n{reading}\n")
    return [], {"file": f"CXR_png/{name}.png", "patient_id": name, **_cxr_truth(ph)}


def _montgomery_item(spec, root: Path, size: int):
    seq = _item_seed(spec["seed"], "montgomery", spec["i"])
    rng = np.random.default_rng(seq.spawn(1)[0])
    ph = render_cxr(seq, _portrait(size), "tb" if spec["label"] else "normal")
    name = f"MCUCXR_{spec['i'] + 1:04d}_{spec['label']}.png"
    _write_png(root / "CXR_png" / name, ph.image)
    _write_png(root / "ManualMask" / "leftMask" / name, ph.lung_left)
    _write_png(root / "ManualMask" / "rightMask" / name, ph.lung_right)
    (root / "ClinicalReadings").mkdir(parents=True, exist_ok=True)
    (root / "ClinicalReadings" / name.replace(".png", ".txt")).write_text(
        f"Patient's Sex: {'M' if rng.random() < 0.5 else 'F'}\n"
        f"Patient's Age: {int(rng.integers(18, 85)):03d}Y\n{'TB' if spec['label'] else 'normal'}\n")
    return [], {"file": f"CXR_png/{name}", "patient_id": name[:-4], **_cxr_truth(ph)}


def _kermany_item(spec, root: Path, size: int):
    seq = _item_seed(spec["seed"], "kermany", spec["i"])
    rng = np.random.default_rng(seq.spawn(1)[0])
    shape = (size, int(round(size * rng.uniform(1.0, 1.45))))
    ph = render_cxr(seq, shape, spec["finding"], pediatric=True)
    rel = f"chest_xray/{spec['split']}/{spec['folder']}/{spec['file']}"
    _write_jpeg(root / rel, ph.image, rgb=spec["rgb"])
    return [], {"file": rel, "patient_id": f"{spec['split']}/{spec['person']}", **_cxr_truth(ph)}


def _egd_item(spec, root: Path, size: int):
    seq = _item_seed(spec["seed"], "egd", spec["i"])
    s_img, s_fix, s_raw, s_dcm = seq.spawn(4)
    finding = {"Normal": "normal", "CHF": "enlarged_heart", "pneumonia": spec["pneumonia_kind"]}[spec["label"]]
    shape = _portrait(size)
    ph = render_cxr(s_img, shape, finding)
    rel = spec["path"]
    _write_dicom(root / rel, ph.image, f"egd/{spec['dicom_id']}", spec["patient_id"],
                 np.random.default_rng(s_dcm), allow_monochrome1=False)
    regions = regions_of(ph)
    gaze_label = "normal" if spec["label"] == "Normal" else spec["label"]
    fix = simulate_fixations(s_fix, regions, gaze_label, shape)
    raw = raw_samples(s_raw, fix, shape)
    display = Display(shape)
    fx, fy = display.to_screen_fraction(fix["x"], fix["y"])
    rx, ry = display.to_screen_fraction(raw["x"], raw["y"])
    base = {"DICOM_ID": spec["dicom_id"], "SESSION_ID": spec["session"]}
    fix_rows = pd.DataFrame({**base, "Time (in secs)": np.round(fix["start"], 4),
                             "FPOGX": np.round(fx, 5), "FPOGY": np.round(fy, 5),
                             "FPOGD": np.round(fix["duration"], 4),
                             "X_ORIGINAL": np.round(fix["x"]).astype(int), "Y_ORIGINAL": np.round(fix["y"]).astype(int)})
    raw_rows = pd.DataFrame({**base, "TIME(in secs)": np.round(raw["time"], 4),
                             "FPOGX": np.round(rx, 5), "FPOGY": np.round(ry, 5),
                             "FPOGD": np.round(raw["elapsed"], 4),
                             "X_ORIGINAL": np.round(raw["x"]).astype(int), "Y_ORIGINAL": np.round(raw["y"]).astype(int)})
    boxes = [{"dicom_id": spec["dicom_id"], "bbox_name": "finding", "x1": x, "y1": y, "x2": x + bw, "y2": y + bh}
             for x, y, bw, bh in ph.boxes]
    master = {"dicom_id": spec["dicom_id"], "path": rel, "patient_id": spec["patient_id"],
              "study_id": spec["study_id"], **{k: int(k == spec["label"]) for k in EGD_LABELS},
              **{k: round(v, 2) for k, v in display.padding.items()}}
    return [{"master": master, "fixations": fix_rows, "eye_gaze": raw_rows, "boxes": boxes}], \
        {"file": rel, "patient_id": spec["patient_id"], **_cxr_truth(ph)}


def _doppler_item(spec, root: Path, size: int):
    seq = _item_seed(spec["seed"], "doppler", spec["i"])
    ph = render_doppler(seq, (size, size), spec["flow_type"], spec["true_quality"])
    name = f"ECHO_{spec['i'] + 1:05d}"
    _write_png(root / "images" / f"{name}.png", ph.image)
    _write_png(root / "masks" / f"{name}_mask.png", ph.envelope_mask)
    row = {"path": f"images/{name}.png", "patient_id": spec["patient_id"], "flow_type": spec["flow_type"],
           "quality": spec["true_quality"] if spec["quality_assessed"] else None,
           "mask_path": f"masks/{name}_mask.png"}
    truth = {"file": row["path"], "patient_id": spec["patient_id"], "flow_type": ph.flow_type,
             "quality": ph.quality, "defects": ";".join(ph.defects), "peak_velocity": round(ph.peak_velocity, 4),
             "px_per_mps": round(ph.px_per_mps, 4), "baseline_row": ph.baseline_row}
    return [row], truth


_ITEM_WRITERS = {"rsna": _rsna_item, "shenzhen": _shenzhen_item, "montgomery": _montgomery_item,
                 "kermany": _kermany_item, "egd": _egd_item, "doppler": _doppler_item}


def _run_item(args):
    layout, spec, root, size = args
    return _ITEM_WRITERS[layout](spec, Path(root), size)


# --------------------------------------------------------------------------- plans (class mix, patients)

def _hex_id(rng, groups=(8, 4, 4, 4, 12)) -> str:
    h = rng.bytes(sum(groups) // 2 + 1).hex()
    out, pos = [], 0
    for g in groups:
        out.append(h[pos:pos + g])
        pos += g
    return "-".join(out)


def _plan(layout: str, n: int, seed: int) -> list:
    rng = _plan_rng(seed, layout)
    specs = []
    if layout == "rsna":  # one image per patient; class mix close to the challenge's
        classes = rng.choice(RSNA_CLASSES, size=n, p=[0.31, 0.40, 0.29])
        for i, c in enumerate(classes):
            finding = {"Lung Opacity": rng.choice(["bacterial", "viral"], p=[0.7, 0.3]),
                       "No Lung Opacity / Not Normal": rng.choice(["tb", "enlarged_heart"]),
                       "Normal": "normal"}[c]
            specs.append({"i": i, "class": c, "finding": finding, "patient_id": _hex_id(rng)})
    elif layout in ("shenzhen", "montgomery"):  # one image per patient; TB share as published
        p_tb = 336 / 662 if layout == "shenzhen" else 58 / 138
        labels = (rng.random(n) < p_tb).astype(int)
        has_mask = rng.random(n) < 566 / 662
        specs = [{"i": i, "label": int(labels[i]), "has_mask": bool(has_mask[i])} for i in range(n)]
    elif layout == "kermany":
        specs = _plan_kermany(n, rng)
    elif layout == "egd":
        i, person = 0, 0
        while i < n:
            person += 1
            pid = f"1{rng.integers(0, 10**7):07d}"
            for _ in range(min(n - i, 1 + int(rng.random() < 0.15))):
                study = f"5{rng.integers(0, 10**7):07d}"
                dicom_id = _hex_id(rng, (8, 8, 8, 8, 8))
                label = EGD_LABELS[i % 3] if rng.random() < 0.85 else rng.choice(EGD_LABELS)
                specs.append({"i": i, "patient_id": pid, "study_id": study, "dicom_id": dicom_id,
                              "path": f"files/p{pid[:2]}/p{pid}/s{study}/{dicom_id}.dcm", "label": str(label),
                              "pneumonia_kind": str(rng.choice(["bacterial", "viral"], p=[0.7, 0.3])),
                              "session": int(rng.integers(1, 4))})
                i += 1
    elif layout == "doppler":  # ~4 strips per exam, flow mix and quality subset as the paper's
        # (enough patients that the 20% fine-tuning pool holds a patient-level 10-fold CV)
        n_patients = min(max(10, round(n / 4)), n)
        patients = [f"P{k + 1:04d}" for k in range(n_patients)]
        owner = rng.permutation(np.concatenate([np.arange(n_patients), rng.integers(0, n_patients, n - n_patients)]))
        for i in range(n):  # every patient has at least one strip
            specs.append({"i": i, "patient_id": patients[int(owner[i])],
                          "flow_type": str(rng.choice(list(FLOW_TYPES), p=[855 / 2444, 490 / 2444, 1099 / 2444])),
                          "true_quality": "good" if rng.random() < 0.6 else "low",
                          "quality_assessed": bool(rng.random() < 814 / 2444)})
    else:
        raise ValueError(f"unknown layout {layout!r}; expected one of {LAYOUTS}")
    for s in specs:
        s["seed"] = seed
    return specs


def _plan_kermany(n: int, rng) -> list:
    """Patients with 1–4 images; classes normal/bacteria/virus; test ≈12%, a tiny val; person
    numbers restart in each split (so patients must be keyed by split + id)."""
    specs, i = [], 0
    n_val = max(2, min(16, round(0.015 * n)))
    n_test = max(2, round(0.12 * n))
    splits = [("val", n_val), ("test", n_test), ("train", n - n_val - n_test)]
    counter = 0
    for split, quota in splits:
        person, made = 0, 0
        while made < quota:
            person += 1
            kind = rng.choice(["normal", "bacterial", "viral"], p=[0.27, 0.48, 0.25])
            k_images = min(quota - made, int(rng.integers(1, 5 if kind != "normal" else 3)))
            prefix = "NORMAL2-IM" if rng.random() < 0.4 else "IM"
            for k in range(k_images):
                counter += 1
                if kind == "normal":
                    name, folder = f"{prefix}-{person:04d}-{k + 1:04d}.jpeg", "NORMAL"
                else:
                    word = "bacteria" if kind == "bacterial" else "virus"
                    name, folder = f"person{person}_{word}_{counter}.jpeg", "PNEUMONIA"
                specs.append({"i": i, "split": split, "folder": folder, "file": name, "person": person,
                              "finding": str(kind), "rgb": bool(rng.random() < 0.1)})
                i += 1
                made += 1
    return specs


# --------------------------------------------------------------------------- assembly

def _write_tables(layout: str, root: Path, rows: list) -> None:
    if layout == "rsna":
        df = pd.DataFrame(rows)
        df[["patientId", "x", "y", "width", "height", "Target"]].to_csv(root / "stage_2_train_labels.csv", index=False)
        df[["patientId", "class"]].to_csv(root / "stage_2_detailed_class_info.csv", index=False)
    elif layout == "egd":
        pd.DataFrame([r["master"] for r in rows]).to_csv(root / "master_sheet.csv", index=False)
        pd.concat([r["fixations"] for r in rows]).to_csv(root / "fixations.csv", index=False)
        pd.concat([r["eye_gaze"] for r in rows]).to_csv(root / "eye_gaze.csv", index=False)
        boxes = [b for r in rows for b in r["boxes"]]
        pd.DataFrame(boxes, columns=["dicom_id", "bbox_name", "x1", "y1", "x2", "y2"]).to_csv(
            root / "bounding_boxes.csv", index=False)
    elif layout == "doppler":
        pd.DataFrame(rows).to_csv(root / "manifest.csv", index=False)


def generate(layout: str, out, n: int = 100, seed: int = 0, size: int = 256, workers: int | None = None,
             progress: bool = True) -> Path:
    """Write ``n`` phantom images of ``layout`` into the new folder ``out`` and return it."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; expected one of {LAYOUTS}")
    if n < 3:
        raise ValueError(f"n={n}: a phantom dataset needs at least 3 images")
    if size < 32:
        raise ValueError(f"size={size}: phantoms need at least 32 pixels a side")
    out = Path(out)
    specs = _plan(layout, n, seed)
    workers = workers or min(os.cpu_count() or 1, 8)
    if n < 48:
        workers = 1  # starting processes costs more than it saves
    with atomic_directory(out) as tmp:
        jobs = [(layout, s, str(tmp), size) for s in specs]
        bar = dict(total=len(jobs), desc=f"phantoms {layout}", unit="img", disable=not progress)
        if workers == 1:
            results = [_run_item(j) for j in tqdm(jobs, **bar)]
        else:
            with worker_pool(workers) as pool:
                results = list(tqdm(pool.map(_run_item, jobs, chunksize=8), **bar))
        rows = [r for layout_rows, _ in results for r in layout_rows]
        _write_tables(layout, tmp, rows)
        (tmp / TRUTH.parent).mkdir()
        pd.DataFrame([t for _, t in results]).to_csv(tmp / TRUTH, index=False)
    log.info("wrote %d %s phantom images to %s", n, layout, out)
    return out
