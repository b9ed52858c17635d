"""A simulated radiologist reading a chest X-ray: fixations and raw 60 Hz gaze samples.

The display follows the eye-gaze CXR dataset (MT-UNet paper, Section 2): the image is shown
letter-boxed on a 1920×1080 screen viewed from about 70 cm, where 1° of visual angle is about
45 screen pixels; the tracker's accuracy is about 1°, so each fixation is jittered by
``N(0, 1°)`` and raw samples scatter round it.

A reading visits regions with class-dependent priorities: a normal study is surveyed across both
lungs, an enlarged heart (CHF) draws fixations to the heart, pneumonia to the consolidation.
Fixations on a finding last longer. A few fixations fall off the image (the report, the
screen's edge) and carry ``-1`` image coordinates, as in the real CSVs.
"""
from __future__ import annotations

import numpy as np

from data_prep.egd import Display

SAMPLE_HZ = 60.0

# Probability of each region being the target of a fixation, per label.
PRIORITIES = {
    "normal": {"lungs": 0.70, "heart": 0.12, "mediastinum": 0.10, "finding": 0.0, "off": 0.08},
    "CHF": {"lungs": 0.35, "heart": 0.12, "mediastinum": 0.06, "finding": 0.40, "off": 0.07},
    "pneumonia": {"lungs": 0.36, "heart": 0.08, "mediastinum": 0.06, "finding": 0.43, "off": 0.07},
}


def regions_of(ph) -> dict:
    """Gaze target regions of a :class:`~data_prep.phantoms.cxr.CXRPhantom`: lungs, heart,
    finding, and the mediastinum (the central fifth of the columns, above the lung bases,
    outside lungs and heart)."""
    h, w = ph.heart.shape
    medi = ((ph.heart == 0) & (ph.lungs == 0)).astype(np.uint8)
    medi[:, : w * 2 // 5] = 0
    medi[:, w * 3 // 5:] = 0
    medi[np.nonzero(ph.lungs.any(axis=1))[0].max() + 1:] = 0
    return {"lungs": ph.lungs, "heart": ph.heart, "mediastinum": medi, "finding": ph.finding_mask}


def simulate_fixations(seed, regions: dict, label: str, shape) -> dict:
    """Fixations for one reading.

    ``regions`` maps ``lungs``, ``heart``, ``mediastinum`` and ``finding`` to uint8 masks.
    Returns arrays ``x``, ``y`` (image pixels, -1 off the image), ``start`` and ``duration`` (s).
    """
    if label not in PRIORITIES:
        raise ValueError(f"unknown gaze label {label!r}; expected one of {tuple(PRIORITIES)}")
    rng = np.random.default_rng(seed)
    display = Display(tuple(shape))
    prio = dict(PRIORITIES[label])
    if not regions.get("finding", np.zeros(1)).any():
        prio["lungs"] += prio.pop("finding")
        prio["finding"] = 0.0
    names = list(prio)
    p = np.array([prio[k] for k in names])
    p /= p.sum()
    n = int(rng.integers(25, 60))
    targets = rng.choice(names, size=n, p=p)
    targets[0] = "mediastinum"  # readings start centrally
    xs, ys, durs = [], [], []
    h, w = shape
    points = {k: np.argwhere(m) for k, m in regions.items()}
    for name in targets:
        dur = float(rng.lognormal(np.log(0.25), 0.45))
        if name == "off":
            xs.append(-1.0), ys.append(-1.0), durs.append(dur)
            continue
        pts = points[name] if len(points[name]) else points["lungs"]
        y0, x0 = pts[rng.integers(len(pts))]
        if name == "finding":
            dur *= 1.5  # dwelling on the abnormality
        x = x0 + rng.normal(0, display.px_per_degree)
        y = y0 + rng.normal(0, display.px_per_degree)
        inside = 0 <= x < w and 0 <= y < h
        xs.append(x if inside else -1.0), ys.append(y if inside else -1.0), durs.append(dur)
    durs = np.array(durs)
    gaps = rng.uniform(0.02, 0.06, n)  # saccades
    start = np.concatenate([[0.0], np.cumsum(durs + gaps)[:-1]])
    return {"x": np.array(xs), "y": np.array(ys), "start": start, "duration": durs}


def raw_samples(seed, fixations: dict, shape) -> dict:
    """60 Hz samples: scattered round each fixation (0.3°), none during saccades."""
    rng = np.random.default_rng(seed)
    display = Display(tuple(shape))
    h, w = shape
    t_all, x_all, y_all, d_all = [], [], [], []
    for x, y, t0, dur in zip(fixations["x"], fixations["y"], fixations["start"], fixations["duration"]):
        k = max(1, int(dur * SAMPLE_HZ))
        t = t0 + np.arange(k) / SAMPLE_HZ
        if x < 0:
            xx = yy = np.full(k, -1.0)
        else:
            xx = x + rng.normal(0, 0.3 * display.px_per_degree, k)
            yy = y + rng.normal(0, 0.3 * display.px_per_degree, k)
            off = (xx < 0) | (xx >= w) | (yy < 0) | (yy >= h)
            xx[off], yy[off] = -1.0, -1.0
        t_all.append(t), x_all.append(xx), y_all.append(yy), d_all.append(t - t0)
    return {"time": np.concatenate(t_all), "x": np.concatenate(x_all), "y": np.concatenate(y_all),
            "elapsed": np.concatenate(d_all)}
