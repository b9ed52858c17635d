"""``tf.data`` pipelines from a prepared folder (``data_prep.prepare``), used by every training
command: decode → (resize) → normalise → cache → shuffle → batch → prefetch.

The in-memory cache holds every decoded image (float32) of the selection; where that would take
more than :data:`MEMORY_CACHE_FRACTION` of the memory now available, the pipeline streams from
the prepared PNGs instead (shuffling file names before decoding, so the shuffle buffer holds
names, not images), and says so once.

Elements are ``(image, targets)`` with ``image`` of shape (H, W, 1) float32 normalised by the
training split's statistics and ``targets`` a dict holding what was asked for: ``label``
(one-hot), ``mask`` (H, W, 1 in {0, 1}), ``saliency`` (H, W, 1, summing to 1), ``index`` (the
manifest row, to match predictions back to images).
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import tensorflow as tf

from data_prep.splits import check_no_leakage
from data_prep.transforms import MeanNormalizer

log = logging.getLogger("data_prep.pipeline")
MEMORY_CACHE_FRACTION = 0.25  # of the memory available when the pipeline is built


@dataclass
class Prepared:
    root: Path
    manifest: pd.DataFrame
    normalizer: MeanNormalizer
    info: dict

    def rows(self, split: str | None = None, **equals) -> pd.DataFrame:
        df = self.manifest
        if split is not None:
            df = df[df.split == split]
        for k, v in equals.items():
            df = df[df[k] == v]
        return df


def load_prepared(folder) -> Prepared:
    """Read ``manifest.csv``, ``stats.json`` and ``prepare.json``; refuse a manifest whose splits
    share a patient (the leakage guard)."""
    folder = Path(folder)
    path = folder / "manifest.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no manifest — run `python -m data_prep.prepare` first "
                                "(an interrupted run is finished by running it again)")
    manifest = pd.read_csv(path, dtype={"patient_id": str, "mask": str, "saliency": str},
                           keep_default_na=False, na_values=[""])
    check_no_leakage(manifest, "split", str(path))
    norm = MeanNormalizer.from_json((folder / "stats.json").read_text())
    info = json.loads((folder / "prepare.json").read_text()) if (folder / "prepare.json").is_file() else {}
    return Prepared(folder, manifest, norm, info)


def _decode_gray(path, dtype=tf.uint8):
    img = tf.io.decode_png(tf.io.read_file(path), channels=1, dtype=dtype)
    return tf.cast(img, tf.float32) / (255.0 if dtype == tf.uint8 else 65535.0)


def available_memory() -> int:
    """Bytes of memory available now (Linux ``MemAvailable``; else free physical pages)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def cache_bytes(n_images: int, image_hw, planes: int = 1) -> int:
    """What an in-memory cache of ``n_images`` decoded float32 (H, W) images takes, with
    ``planes`` - 1 more maps (mask, saliency) per image."""
    h, w = (int(v) for v in image_hw)
    return n_images * h * w * 4 * planes


def memory_cache_fits(nbytes: int, available: int | None = None) -> bool:
    """Whether a cache of ``nbytes`` stays within :data:`MEMORY_CACHE_FRACTION` of the memory
    available (``available``, default :func:`available_memory`)."""
    return nbytes <= MEMORY_CACHE_FRACTION * (available_memory() if available is None else available)


def _image_hw(prepared: Prepared, rows: pd.DataFrame, image_size) -> tuple:
    """(H, W) of the pipeline's images: ``image_size``, else the prepared size, else the first file's."""
    if image_size is not None:
        return tuple(image_size)
    for key in ("shape", "size"):
        if prepared.info.get(key):
            return tuple(prepared.info[key])
    import cv2
    first = cv2.imread(str(Path(prepared.root) / rows.image.iloc[0]), cv2.IMREAD_UNCHANGED)
    return first.shape[:2]


def make_dataset(prepared: Prepared, rows: pd.DataFrame, *, label_column: str | None = None,
                 classes=None, mask: bool = False, saliency: bool = False, batch_size: int = 16,
                 shuffle: bool = False, seed: int = 0, cache: bool | str = True, normalize: bool = True,
                 image_size=None, drop_remainder: bool = False, repeat: bool = False,
                 map_fn=None) -> tf.data.Dataset:
    """A batched dataset over ``rows`` of ``prepared.manifest``.

    ``classes`` orders the one-hot labels (default: sorted values of ``label_column``);
    ``image_size`` (H, W) resizes (bicubic) after decoding; ``map_fn(image, targets, seed)`` runs
    on each element after the cache (on-the-fly augmentation or noise, fresh every epoch), with
    ``seed`` = (``seed``, element number) for stateless random ops: the pipeline stays
    checkpointable and a resumed run draws what an uninterrupted one would. ``cache=True`` caches
    in memory when that fits (:func:`memory_cache_fits`) and streams otherwise; a string caches
    in that file."""
    if rows.empty:
        raise ValueError("make_dataset: no rows selected")
    if cache is True:
        need = cache_bytes(len(rows), _image_hw(prepared, rows, image_size), 1 + int(mask) + int(saliency))
        if not memory_cache_fits(need):
            log.info("%s: %d images (%.1f GiB decoded) would take over %d%% of the available memory; "
                     "streaming them from disk every epoch instead of caching", prepared.root, len(rows),
                     need / 2 ** 30, round(100 * MEMORY_CACHE_FRACTION))
            cache = False
    root = str(prepared.root) + "/"
    tensors = {"image": (root + rows.image).to_numpy(), "index": rows.index.to_numpy(np.int64)}
    if label_column is not None:
        classes = list(classes) if classes is not None else sorted(rows[label_column].astype(str).unique())
        lookup = {c: i for i, c in enumerate(classes)}
        unknown = sorted(set(rows[label_column].astype(str)) - set(lookup))
        if unknown:
            raise ValueError(f"labels {unknown} in column {label_column!r} are not among classes {classes}")
        tensors["label"] = rows[label_column].astype(str).map(lookup).to_numpy(np.int64)
    for flag, col in ((mask, "mask"), (saliency, "saliency")):
        if flag:
            missing = rows[col].isna() | (rows[col].astype(str) == "")
            if missing.any():
                raise ValueError(f"{int(missing.sum())} selected row(s) have no {col}, e.g. {rows.image[missing].iloc[0]}")
            tensors[col] = (root + rows[col].astype(str)).to_numpy()
    n_classes = len(classes) if label_column is not None else 0
    norm = prepared.normalizer

    def load(t):
        image = _decode_gray(t["image"])
        targets = {"index": t["index"]}
        if image_size is not None:
            image = tf.clip_by_value(tf.image.resize(image, image_size, method="bicubic"), 0.0, 1.0)
        if normalize:
            image = (image - norm.mean) / norm.std
        if "label" in t:
            targets["label"] = tf.one_hot(t["label"], n_classes)
        if "mask" in t:
            m = _decode_gray(t["mask"])
            if image_size is not None:
                m = tf.image.resize(m, image_size, method="nearest")
            targets["mask"] = tf.cast(m > 0.5, tf.float32)
        if "saliency" in t:
            s = _decode_gray(t["saliency"], tf.uint16)
            if image_size is not None:
                s = tf.image.resize(s, image_size, method="area")
            targets["saliency"] = s / tf.reduce_sum(s)
        return image, targets

    ds = tf.data.Dataset.from_tensor_slices(tensors)
    if cache:
        ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE).cache(cache if isinstance(cache, str) else "")
        if shuffle:
            ds = ds.shuffle(len(rows), seed=seed, reshuffle_each_iteration=True)
    else:  # streaming: shuffle the file names, then decode (a buffer of names, not of images)
        if shuffle:
            ds = ds.shuffle(len(rows), seed=seed, reshuffle_each_iteration=True)
        ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE)
    if repeat:
        ds = ds.repeat()
    if map_fn is not None:
        base = tf.constant(seed, tf.int64)
        ds = ds.enumerate().map(lambda i, el: map_fn(el[0], el[1], tf.stack([base, i])),
                                num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(batch_size, drop_remainder=drop_remainder).prefetch(tf.data.AUTOTUNE)
