"""Synthetic spectral Doppler strips (velocity vs time) with envelope masks and quality defects.

Three flows, as in the UMS-Rep echo dataset (paper Section 3.1.2, Figure 3):

* ``MV`` — mitral inflow, pulsed wave: positive E (early) and A (atrial) waves, 0.3–1.1 m/s,
  a hollow spectral window;
* ``MA`` — mitral annulus tissue Doppler: low velocities (< 0.2 m/s), positive s', negative
  e' and a', high-gain thick bands;
* ``TR`` — tricuspid regurgitation, continuous wave: a dense negative systolic jet of 2.2–4.2 m/s.

Each strip carries a velocity scale (``px_per_mps``) and a baseline, heart-rate and gain
variation, speckle, an ECG trace and scale ticks. Low-quality strips get one or two defects:
noise (low SNR), envelope dropout, saturation (gain too high) or aliasing (a Nyquist limit below
the peak, so the envelope wraps round to the other side).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from data_prep.doppler import CLASSES  # the flow types, as the loader names them

FLOW_TYPES = CLASSES
QUALITIES = ("good", "low")
DEFECTS = ("noise", "dropout", "saturation", "aliasing")


@dataclass
class DopplerPhantom:
    image: np.ndarray  # float32 0..1, (H, W)
    envelope_mask: np.ndarray  # uint8 0/1: between baseline and the true velocity envelope
    flow_type: str
    quality: str
    defects: list = field(default_factory=list)
    baseline_row: int = 0
    px_per_mps: float = 1.0
    peak_velocity: float = 0.0  # signed true peak, m/s


def _bump(t, t0, dur, rise=0.35):
    """A wave of unit height starting at ``t0``: fast rise over ``rise·dur``, slower decay."""
    x = (t - t0) / dur
    up = np.sin(np.clip(x / rise, 0, 1) * np.pi / 2)
    down = np.cos(np.clip((x - rise) / (1 - rise), 0, 1) * np.pi / 2)
    return np.where(x < rise, up, down) * ((x >= 0) & (x <= 1))


def _envelope(flow, t, rr, rng):
    """Signed velocity (m/s) at times ``t`` for beats of length ``rr`` (with beat jitter)."""
    v = np.zeros_like(t)
    n_beats = int(np.ceil(t[-1] / rr)) + 2
    start = -rng.uniform(0, rr)
    if flow == "MV":
        e, a = rng.uniform(0.55, 1.1), 0.0
        a = e * rng.uniform(0.45, 1.1)
    elif flow == "MA":
        s, e, a = rng.uniform(0.05, 0.12), rng.uniform(0.07, 0.16), rng.uniform(0.05, 0.12)
    else:
        peak = rng.uniform(2.2, 4.2)
    for k in range(n_beats):
        b0 = start + k * rr * rng.uniform(0.96, 1.04)
        j = rng.uniform(0.93, 1.07)
        if flow == "MV":
            v += j * e * _bump(t, b0 + 0.42 * rr, 0.22) + j * a * _bump(t, b0 + 0.84 * rr, 0.13, 0.5)
        elif flow == "MA":
            v += j * s * _bump(t, b0 + 0.07 * rr, 0.24 * rr + 0.05, 0.4)
            v -= j * e * _bump(t, b0 + 0.42 * rr, 0.14) + j * a * _bump(t, b0 + 0.84 * rr, 0.10, 0.5)
        else:
            x = np.clip((t - b0 - 0.04 * rr) / (0.36 * rr), 0, 1)
            v -= j * peak * np.sin(np.pi * x) ** 0.6 * np.where(x < 0.45, 1.0, 1.0 - 0.15 * (x - 0.45))
    return v


def render_doppler(seed, shape=(256, 256), flow_type: str = "MV", quality: str = "good") -> DopplerPhantom:
    """Render one strip of ``shape`` (H, W)."""
    if flow_type not in FLOW_TYPES:
        raise ValueError(f"unknown flow type {flow_type!r}; expected one of {FLOW_TYPES}")
    if quality not in QUALITIES:
        raise ValueError(f"unknown quality {quality!r}; expected one of {QUALITIES}")
    seq = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
    rng, rng_q = (np.random.default_rng(s) for s in seq.spawn(2))
    h, w = shape
    hs = int(round(0.86 * h))  # spectral area; the ECG trace goes below it

    rr = 60.0 / rng.uniform(55, 100)
    t = np.linspace(0, rng.uniform(2.4, 3.6), w)
    vel = _envelope(flow_type, t, rr, rng)
    peak = float(vel[np.argmax(np.abs(vel))])

    # display scale: baseline position and Nyquist limits chosen as a sonographer would
    if flow_type == "MV":
        frac, vtop = rng.uniform(0.62, 0.8), abs(peak) * rng.uniform(1.15, 1.5)
    elif flow_type == "MA":
        frac, vtop = rng.uniform(0.42, 0.58), max(abs(vel.max()), abs(vel.min())) * rng.uniform(1.2, 1.6)
    else:
        frac, vtop = rng.uniform(0.12, 0.28), None
    baseline = int(round(frac * hs))
    if flow_type == "TR":
        px_per_mps = (hs - baseline) / (abs(peak) * rng.uniform(1.12, 1.4))
    else:
        px_per_mps = baseline / vtop

    defects = []
    if quality == "low":
        options = list(DEFECTS)
        defects = list(rng_q.choice(options, size=1 + int(rng_q.random() < 0.35), replace=False))
    if "aliasing" in defects:  # Nyquist limit below the peak: the envelope wraps round
        px_per_mps *= rng_q.uniform(1.4, 1.9)

    rows = np.arange(hs, dtype=np.float32)[:, None]
    row_vel = (baseline - rows) / px_per_mps  # velocity represented by each row
    span = hs / px_per_mps  # whole displayed velocity range
    tv = vel[None, :].astype(np.float32)
    broadening = 1.8 / px_per_mps + 0.03 * np.abs(tv)

    def density(rv):
        same_side = np.where(np.abs(tv) > 1e-3, rv / np.where(np.abs(tv) > 1e-3, tv, 1.0), -1.0)
        inside = 0.5 * (1.0 + np.tanh(0.5 * (np.abs(tv) - np.abs(rv)) / broadening))
        if flow_type == "TR":  # CW: filled, brighter towards the envelope
            shape_ = 0.45 + 0.55 * np.clip(same_side, 0, 1)
        elif flow_type == "MV":  # PW: hollow window below the envelope
            shape_ = 0.2 + 0.8 * np.clip((same_side - 0.55) / 0.45, 0, 1) ** 0.8
        else:  # TDI: a thick bright band near the envelope
            shape_ = 0.3 + 0.7 * np.clip((same_side - 0.4) / 0.6, 0, 1)
        return inside * shape_ * (same_side >= 0)

    spec = density(row_vel)
    if "aliasing" in defects:
        spec = spec + density(row_vel + span) + density(row_vel - span)
    speckle = rng.gamma(2.0, 0.5, spec.shape).astype(np.float32)
    speckle = cv2.GaussianBlur(speckle, (0, 0), 0.7)
    gain = rng.uniform(0.75, 1.1) * (1.5 if flow_type == "MA" else 1.0)
    img = np.zeros(shape, np.float32)
    bg = rng.uniform(0.02, 0.07)
    spectral = gain * spec * speckle + bg * rng.gamma(1.5, 1 / 1.5, spec.shape)
    clutter = np.exp(-((rows - baseline) ** 2) / (2 * 2.0**2)) * rng.uniform(0.2, 0.5)
    spectral += clutter * rng.gamma(2.0, 0.5, spec.shape)

    if "noise" in defects:
        spectral += rng_q.uniform(0.25, 0.5) * rng_q.gamma(1.2, 1 / 1.2, spec.shape)
    if "dropout" in defects:
        keep = np.ones(w, np.float32)
        for _ in range(rng_q.integers(2, 5)):
            a = rng_q.integers(0, w)
            keep[a:a + rng_q.integers(w // 12, w // 5)] = rng_q.uniform(0.05, 0.25)
        spectral *= cv2.GaussianBlur(keep[None, :], (0, 0), 2.0)
    if "saturation" in defects:
        spectral *= rng_q.uniform(1.8, 2.6)
        spectral += rng_q.uniform(0.1, 0.25)
    img[:hs] = np.clip(spectral, 0, 1)

    # overlays: baseline, velocity ticks, ECG trace with QRS at each beat
    img[baseline, :] = np.maximum(img[baseline, :], 0.55)
    step = 0.05 if flow_type == "MA" else 0.5
    for k in range(-int(span / step) - 1, int(span / step) + 2):
        r = int(round(baseline - k * step * px_per_mps))
        if 0 <= r < hs:
            img[r, w - 6:w] = 0.8
    ecg_row = hs + (h - hs) // 2
    phase = np.mod(t + rng.uniform(0, rr), rr) / rr
    ecg = 0.6 * np.exp(-((phase - 0.02) / 0.012) ** 2) - 0.15 * np.exp(-((phase - 0.05) / 0.01) ** 2) \
        + 0.15 * np.exp(-((phase - 0.32) / 0.05) ** 2)
    ys = np.round(ecg_row - ecg * (h - hs) * 0.7).astype(np.int32)
    pts = np.stack([np.arange(w), ys], -1).astype(np.int32)
    cv2.polylines(img, [pts], False, 0.7, 1)

    mask = np.zeros(shape, np.uint8)
    top = np.clip(np.round(baseline - vel * px_per_mps), 0, hs - 1).astype(int)
    for x in range(w):
        a, b = sorted((baseline, int(top[x])))
        if b > a:
            mask[a:b + 1, x] = 1
    return DopplerPhantom(np.clip(img, 0, 1), mask, flow_type, quality, [str(d) for d in defects],
                          baseline, float(px_per_mps), peak)
