"""Preprocessing a dataset once (``python -m data_prep.prepare``, :mod:`data_prep.prepare`, is its
command): :func:`prepare`.

Reads the dataset through its loader, checks it up front (missing files, unknown labels, empty
classes, then every image decoded: unreadable files, constant images, masks of the wrong size
or not binary — all reported together), and writes

* ``images/<id>.png`` — 8-bit gray, bicubic-resized to ``--size`` (256×256 for UMS-Rep) or
  letter-boxed to ``--shape HxW`` (640×416 for MT-UNet's eye-gaze data);
* ``masks/<id>.png`` (0/255, the union of a row's masks) and, for ``egd``, ``saliency/<id>.png``
  (16-bit maps scaled to their maximum, letter-boxed like the image; the pipeline renormalises
  them to sum 1 — a PNG keeps decoding inside TensorFlow's graph);
* ``manifest.csv`` — one row per image with ``split`` (patient-level, class-stratified) and
  ``fold`` (k patient-level folds within each split part) columns, and ``stats.json`` — the training split's mean/std.

Work runs in parallel over the cores with a progress bar. Every file is written atomically and
existing outputs are skipped, so an interrupted run is completed by running it again.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import time
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from data_prep import datasets
from data_prep.cli import worker_pool
from data_prep.io import atomic_write_text
from data_prep.prepare_item import ItemJob, prepare_item, worker_ready
from data_prep.splits import assign_folds, check_no_leakage, split_patients
from data_prep.transforms import MTUNET_SHAPE, UMS_SIZE, MeanNormalizer
from data_prep.validate import DataValidationError, manifest_problems

# Split fractions per dataset: 70/20/10 for UMS-Rep's data (Section 4.1.1 for the CDAE's; the
# echo encoder's 70%, then 20% to cross-validate and 10% to test, Section 4.2.2), 70/10/20 for
# MT-UNet's (its Appendix B).
DEFAULT_SPLIT = {"rsna": "70/20/10", "shenzhen": "70/20/10", "montgomery": "70/20/10",
                 "kermany": "70/20/10", "doppler": "70/20/10", "egd": "70/10/20"}

log = logging.getLogger("data_prep.prepare")  # the command's name: its log lines read as before
MANIFEST_COLUMNS_DROPPED = ("path", "mask_paths", "boxes")


def item_id(path: str, root: Path) -> str:
    """A file-system-safe id from the image's path relative to the dataset root."""
    rel = os.path.relpath(path, root)
    return re.sub(r"[^A-Za-z0-9._-]+", "__", os.path.splitext(rel)[0])


POOL_FROM = 32  # images: below this a pool's start costs more than it saves


def assign_split_and_folds(df: pd.DataFrame, dataset: str, split: str, folds: int, seed: int, source: str) -> int:
    """Add ``split`` (patient-level, class-stratified; Kermany keeps its published test split)
    and ``fold`` (k patient-level folds within each split part) columns to ``df``; return k."""
    if dataset == "kermany":
        test = df.source_split == "test"
        df["split"] = "test"
        df.loc[~test, "split"] = split_patients(df[~test], (0.8, 0.2, 0.0), seed=seed)
    else:
        df["split"] = split_patients(df, split, seed=seed)
    # folds are assigned within each split part, so every part (e.g. UMS-Rep's 20% fine-tuning pool)
    # holds k distinct folds; drawn from the split's own partition, they would copy the split
    df["fold"] = 0
    for _, part in df.groupby("split"):
        k_part = min(folds, part.patient_id.nunique())
        if k_part >= 2:  # class-stratified where every class has a patient for every fold
            per_class = part.groupby(part.label.astype(str)).patient_id.nunique()
            stratify = "label" if per_class.min() >= k_part else None
            df.loc[part.index, "fold"] = assign_folds(part, k_part, stratify, seed=seed).to_numpy()
    check_no_leakage(df, "split", source)
    check_no_leakage(df, "fold", source)
    return int(df.fold.max()) + 1


def item_jobs(df: pd.DataFrame, src: Path, out: Path, size, shape, gaze) -> list[ItemJob]:
    """One :class:`~data_prep.prepare_item.ItemJob` per manifest row (with its gaze samples for
    the eye-gaze data); two rows that would write the same file are an error."""
    jobs = []
    for r in df.itertuples():
        g_rows = None
        if gaze is not None:
            g_rows = gaze.get(r.dicom_id, {"time": [], "x": [], "y": [], "weight": []})
        jobs.append(ItemJob(item_id(r.path, src), r.path, tuple(r.mask_paths), str(out), tuple(size), shape, g_rows))
    if len({j.uid for j in jobs}) != len(jobs):
        raise DataValidationError(str(src), ["two images map to the same prepared file name"])
    return jobs


def prepare(dataset: str, src, out, *, size=UMS_SIZE, shape=None, split=None, folds: int = 10,
            seed: int = 0, workers: int | None = None, gaze_source: str = "fixations",
            progress: bool = True) -> pd.DataFrame:
    """Prepare ``dataset`` from ``src`` into ``out``; return the manifest (also written).

    Example:
        ```python
        from data_prep.preparation import prepare

        manifest = prepare("shenzhen", "data/shenzhen", "runs/prepared/shenzhen", size=(256, 256))
        ```

    Args:
        dataset: ``"rsna"``, ``"shenzhen"``, ``"montgomery"``, ``"kermany"``, ``"doppler"`` or
            ``"egd"`` (a key of :data:`DEFAULT_SPLIT`).
        src: The dataset's own folder, in its real layout.
        out: The prepared folder (``images/``, ``masks/``, ``manifest.csv``, ``stats.json``).
        size: ``(H, W)`` every image is bicubic-resized to (UMS-Rep).
        shape: ``(H, W)`` every image is letter-boxed to instead (default for ``egd``: 640×416).
        split: ``"70/20/10"`` or ``"70/10/20"`` (train/validation/test); None: the dataset's
            default.
        folds: Patient-level folds within each split part.
        seed: Seeds the split and the folds.
        workers: Processes (default: the cores, at most 8); a small dataset uses one.
        gaze_source: ``egd``: the saliency maps from ``"fixations"`` or the raw ``"eye_gaze"``
            samples (a key of ``data_prep.egd.GAZE_SOURCES``).
        progress: Show a progress bar.

    Returns:
        The manifest: one row per image, with its ``split`` and ``fold``.

    Raises:
        DataValidationError: Every problem of the dataset found up front (missing files,
            unknown labels, empty classes, unreadable or constant images, bad masks), together.
    """
    module = datasets.get(dataset)
    src, out = Path(src), Path(out)
    df = datasets.load(dataset, src)
    problems = manifest_problems(df, getattr(module, "CLASSES", None), "label")
    if problems:
        raise DataValidationError(str(src), problems)
    if dataset == "egd" and shape is None:
        shape = MTUNET_SHAPE
    split = split or DEFAULT_SPLIT[dataset]
    workers = workers or min(os.cpu_count() or 1, 8)
    pooled = workers > 1 and len(df) >= POOL_FROM
    with worker_pool(workers) if pooled else contextlib.nullcontext() as pool:
        if pool is not None:  # the workers start, and import prepare_item, while this process splits
            for _ in range(workers):
                pool.submit(worker_ready)
        k = assign_split_and_folds(df, dataset, split, folds, seed, str(src))
        gaze = None
        if dataset == "egd":
            g = module.load_gaze(src, gaze_source)
            gaze = {k_: v.drop(columns="dicom_id").to_dict("list") for k_, v in g.groupby("dicom_id")}
        jobs = item_jobs(df, src, out, size, shape, gaze)
        out.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        outcomes = pool.map(prepare_item, jobs, chunksize=4) if pool is not None else map(prepare_item, jobs)
        results = list(tqdm(outcomes, total=len(jobs), desc=f"prepare {dataset}", unit="img", disable=not progress))
    seconds = time.perf_counter() - start
    problems = [p for r in results for p in r["problems"]]
    if problems:
        raise DataValidationError(str(src), problems)
    done = sum(not r["skipped"] for r in results)
    log.info("%s: %d image(s) written, %d already done, %.1f s (%.1f images/s)", dataset, done,
             len(results) - done, seconds, done / seconds if done else 0.0)

    res = pd.DataFrame(results).drop(columns=["problems", "skipped", "moments"])
    manifest = pd.concat([res, df.drop(columns=[c for c in MANIFEST_COLUMNS_DROPPED if c in df]).reset_index(drop=True)],
                         axis=1)
    manifest["source_path"] = [os.path.relpath(p, src) for p in df.path]
    if "boxes" in df:
        manifest["boxes"] = [json.dumps(b) for b in df.boxes]
    # the training split's statistics from the moments the workers returned (no second pass)
    norm = MeanNormalizer.from_moments(r["moments"] for r, part in zip(results, manifest.split) if part == "train")
    atomic_write_text(out / "stats.json", norm.to_json())
    buf = manifest.to_csv(index=False)
    atomic_write_text(out / "manifest.csv", buf)  # written last: its presence marks a finished run
    atomic_write_text(out / "prepare.json", json.dumps(
        {"dataset": dataset, "src": str(src), "size": list(size), "shape": list(shape) if shape else None,
         "split": split, "folds": k, "seed": seed, "n": len(manifest), "seconds": round(seconds, 2)}, indent=1))
    return manifest
