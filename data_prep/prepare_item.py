"""One image of :func:`data_prep.preparation.prepare`: read, check, resize or letter-box, write.

This is what every process of ``prepare``'s pool runs, so it imports only NumPy, OpenCV and the
light ``data_prep`` modules (no pandas, scikit-learn or TensorFlow): a spawned worker imports it
in about 0.3 s instead of the 1.5 s that ``data_prep.prepare`` itself takes, which on two cores
was most of the pool's cost for a few hundred images (issue 19).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import numpy as np

from data_prep.io import ImageReadError, gray8, read_image, read_mask, write_png
from data_prep.transforms import Letterbox, pixel_moments, resize, resize_mask
from data_prep.validate import image_problems


class ItemJob(NamedTuple):
    """One image to prepare: its id, source files, the output folder and geometry, and (for the
    eye-gaze data) its gaze samples as columns of lists."""

    uid: str
    path: str
    mask_paths: tuple
    out: str
    size: tuple
    shape: tuple | None
    gaze: dict | None


def prepare_item(job: ItemJob) -> dict:
    """Read, check, transform and write one item; return its outputs (relative paths, and the
    prepared image's :func:`~data_prep.transforms.pixel_moments` for the training statistics)
    or its problems. An item whose outputs exist is skipped (its image is read back for the
    moments), so an interrupted run completes where it stopped."""
    out = Path(job.out)
    img_out = out / "images" / f"{job.uid}.png"
    mask_out = out / "masks" / f"{job.uid}.png" if job.mask_paths else None
    sal_out = out / "saliency" / f"{job.uid}.png" if job.gaze is not None else None
    result = {"id": job.uid, "image": str(img_out.relative_to(out)),
              "mask": str(mask_out.relative_to(out)) if mask_out else "",
              "saliency": str(sal_out.relative_to(out)) if sal_out else "", "problems": [], "skipped": False,
              "moments": None}
    if img_out.exists() and (mask_out is None or mask_out.exists()) and (sal_out is None or sal_out.exists()):
        result["skipped"] = True
        result["moments"] = pixel_moments(read_image(img_out))
        return result
    try:
        image = read_image(job.path)
        masks = [read_mask(job.mask_paths)] if job.mask_paths else []
    except ImageReadError as e:
        result["problems"].append(str(e))
        return result
    result["problems"] = image_problems(image, job.path, masks, [job.mask_paths[0]] if job.mask_paths else [])
    if result["problems"]:
        return result
    if job.shape is not None:  # letterbox (MT-UNet)
        lb = Letterbox.fit(image.shape, job.shape)
        small, small_masks = lb.apply(image), [lb.apply(m, "nearest") for m in masks]
    else:
        small, small_masks = resize(image, job.size), [resize_mask(m, job.size) for m in masks]
    if sal_out is not None:
        import pandas as pd  # the eye-gaze data only

        from data_prep.egd import saliency_map
        try:
            sal = saliency_map(pd.DataFrame(job.gaze), image.shape, job.shape or job.size)
        except ValueError as e:
            result["problems"].append(f"{job.path}: {e}")
            return result
        write_png(sal_out, np.round(sal / sal.max() * 65535).astype(np.uint16))
    if mask_out is not None:
        write_png(mask_out, (small_masks[0] * 255).astype(np.uint8))
    small = gray8(small)
    write_png(img_out, small)  # the image last: it marks the item done
    # the moments of the image as read_image reads it back (8 bits / 255): a second pass's figures
    result["moments"] = pixel_moments(small.astype(np.float32) / 255.0)
    return result


def worker_ready() -> int:
    """A no-op a pool runs once per worker to start it (and import this module) early."""
    return os.getpid()
