"""Synthetic posteroanterior chest radiographs with ground-truth anatomy masks and findings.

The phantom is built in a *canonical thorax frame* ``(u, v)``: ``u`` runs to the image's right
(the patient's left in a PA view), ``v`` runs down, the lateral lung borders sit near
``u = ±0.97`` and the apices near ``v = -1``. Each structure adds X-ray attenuation; the
projected attenuation becomes brightness through ``1 - exp(-k·att)``, then the acquisition
(pose, scale, exposure, gamma, blur, quantum noise) is applied.

Randomness is split into three independent streams drawn from one seed — anatomy, finding and
acquisition — so the same seed rendered with and without a finding gives the same patient and
the same noise (used by the realism tests to measure what a finding changes).

Findings (each with a severity in [0, 1], so classes overlap at low severity):

* ``tb``: upper-zone nodules, cavities (bright rim, dark centre) and pleural effusion;
* ``bacterial``: dense lobar consolidation with air bronchograms, bounded by a fissure;
* ``viral``: bilateral, perihilar reticular pattern (zero-crossings of band-passed noise) with
  ground-glass haze;
* ``enlarged_heart``: cardiothoracic ratio 0.50–0.65 (normal 0.36–0.50).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np
from scipy.interpolate import CubicSpline

FINDINGS = ("normal", "tb", "bacterial", "viral", "enlarged_heart")

# Right lung (image left) outline in the canonical frame, clockwise from the apex.
_RIGHT_LUNG = np.array([
    (-0.42, -1.00), (-0.62, -0.93), (-0.80, -0.72), (-0.90, -0.38), (-0.95, 0.02),
    (-0.97, 0.38), (-0.95, 0.60), (-0.80, 0.44), (-0.55, 0.34), (-0.30, 0.37),
    (-0.10, 0.48), (-0.08, 0.10), (-0.10, -0.30), (-0.16, -0.70), (-0.28, -0.94),
], dtype=np.float64)
_BASE_POINTS = slice(5, 11)  # points whose height follows the diaphragm


@dataclass
class CXRPhantom:
    """One rendered radiograph and its ground truth (all masks uint8 0/1, image float32 0..1)."""

    image: np.ndarray
    lung_right: np.ndarray  # patient's right lung (image left)
    lung_left: np.ndarray  # patient's left lung (image right)
    heart: np.ndarray
    finding_mask: np.ndarray
    finding: str
    severity: float
    ctr: float  # cardiothoracic ratio the heart was drawn with
    boxes: list = field(default_factory=list)  # (x, y, width, height) of finding regions

    @property
    def lungs(self) -> np.ndarray:
        return np.maximum(self.lung_right, self.lung_left)


def _smooth_closed(points: np.ndarray, n: int = 120) -> np.ndarray:
    """A closed periodic cubic spline through ``points`` sampled at ``n`` points."""
    pts = np.vstack([points, points[:1]])
    t = np.linspace(0.0, 1.0, len(pts))
    spline = CubicSpline(t, pts, bc_type="periodic")
    return spline(np.linspace(0.0, 1.0, n, endpoint=False))


class _Frame:
    """Maps the canonical thorax frame to pixels (rotation, scale, translation)."""

    def __init__(self, shape, scale_px, centre, angle):
        self.h, self.w = shape
        self.t = scale_px
        self.cx, self.cy = centre
        self.c, self.s = np.cos(angle), np.sin(angle)
        yy, xx = np.mgrid[0:self.h, 0:self.w].astype(np.float32)
        dx, dy = (xx - self.cx) / self.t, (yy - self.cy) / self.t
        self.u = (self.c * dx + self.s * dy).astype(np.float32)
        self.v = (-self.s * dx + self.c * dy).astype(np.float32)

    def to_px(self, uv: np.ndarray) -> np.ndarray:
        uv = np.asarray(uv, dtype=np.float64)
        x = self.cx + self.t * (self.c * uv[..., 0] - self.s * uv[..., 1])
        y = self.cy + self.t * (self.s * uv[..., 0] + self.c * uv[..., 1])
        return np.stack([x, y], axis=-1)

    def fill(self, uv_polygon: np.ndarray) -> np.ndarray:
        mask = np.zeros((self.h, self.w), np.uint8)
        pts = np.round(self.to_px(uv_polygon) * 16).astype(np.int32)
        cv2.fillPoly(mask, [pts], 1, lineType=cv2.LINE_8, shift=4)
        return mask

    def stroke(self, layer: np.ndarray, uv_line: np.ndarray, width: float, value: float) -> None:
        pts = np.round(self.to_px(uv_line) * 16).astype(np.int32)
        cv2.polylines(layer, [pts], False, float(value), max(1, int(round(width * self.t))),
                      lineType=cv2.LINE_AA, shift=4)

    def blur(self, layer: np.ndarray, sigma_uv: float) -> np.ndarray:
        sigma = max(0.3, sigma_uv * self.t)
        return cv2.GaussianBlur(layer.astype(np.float32), (0, 0), sigma)

    def ellipse(self, centre, axes, angle=0.0) -> np.ndarray:
        """Soft-free boolean ellipse in canonical coordinates."""
        ca, sa = np.cos(angle), np.sin(angle)
        du, dv = self.u - centre[0], self.v - centre[1]
        a = (ca * du + sa * dv) / axes[0]
        b = (-sa * du + ca * dv) / axes[1]
        return (a * a + b * b) <= 1.0

    @property
    def xx(self) -> np.ndarray:
        return np.arange(self.w, dtype=np.float32)[None, :]

    @property
    def yy(self) -> np.ndarray:
        return np.arange(self.h, dtype=np.float32)[:, None]

    def noise(self, rng: np.random.Generator, cells: int) -> np.ndarray:
        """Smooth noise with about ``cells`` blobs across the thorax width, unit std."""
        n = max(4, int(cells * self.w / (2.2 * self.t)))
        small = rng.standard_normal((max(4, n * self.h // self.w), n)).astype(np.float32)
        big = cv2.resize(small, (self.w, self.h), interpolation=cv2.INTER_CUBIC)
        return (big - big.mean()) / (big.std() + 1e-6)


def _heart_ellipse(ctr: float, thorax_width: float, rng: np.random.Generator):
    """Centre, semi-axes and tilt of a heart whose horizontal extent is ``ctr·thorax_width``."""
    extent = ctr * thorax_width / 2.0  # horizontal half-extent
    b = rng.uniform(0.27, 0.33) * (0.85 + 0.5 * ctr)
    phi = np.deg2rad(rng.uniform(15.0, 30.0))
    a2 = max(extent**2 - (b * np.sin(phi)) ** 2, 0.01) / np.cos(phi) ** 2
    a = float(np.sqrt(a2))
    vext = np.sqrt((a * np.sin(phi)) ** 2 + (b * np.cos(phi)) ** 2)
    centre = (0.30 * extent, 0.50 - 0.85 * vext)
    return centre, (a, b), -phi


def render_cxr(seed, shape=(256, 256), finding: str = "normal", severity: float | None = None,
               pediatric: bool = False) -> CXRPhantom:
    """Render one radiograph of ``shape`` (H, W) with ``finding`` (one of :data:`FINDINGS`)."""
    if finding not in FINDINGS:
        raise ValueError(f"unknown finding {finding!r}; expected one of {FINDINGS}")
    seq = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
    rng_anat, rng_find, rng_acq = (np.random.default_rng(s) for s in seq.spawn(3))
    h, w = shape

    # ---- pose and scale
    scale = rng_anat.uniform(0.86, 1.04)
    t = scale * min(0.40 * w, 0.36 * h) * (1.05 if pediatric else 1.0)
    centre = (w / 2 + rng_anat.normal(0, 0.02) * w, 0.11 * h + 1.0 * t + rng_anat.normal(0, 0.015) * h)
    frame = _Frame(shape, t, centre, np.deg2rad(rng_anat.normal(0, 2.5)))
    u, v = frame.u, frame.v

    # ---- lungs: shape varies in width, height, dome and point jitter
    width_f = rng_anat.uniform(0.92, 1.05)
    height_f = rng_anat.uniform(0.86, 1.08) * (0.9 if pediatric else 1.0)
    lungs_uv = []
    for side in (-1, 1):
        pts = _RIGHT_LUNG.copy()
        pts[:, 0] *= width_f
        pts[_BASE_POINTS, 1] = -1.0 + (pts[_BASE_POINTS, 1] + 1.0) * height_f
        if side == 1:
            pts[:, 0] *= -1
            pts[_BASE_POINTS, 1] += 0.05  # left hemidiaphragm sits lower
        pts += rng_anat.normal(0, 0.02, pts.shape)
        lungs_uv.append(_smooth_closed(pts[::-1] if side == 1 else pts))
    lung_poly = [frame.fill(p) for p in lungs_uv]
    thorax_width = 2 * 0.97 * width_f

    # ---- heart and mediastinum
    if finding == "enlarged_heart":
        sev = float(severity) if severity is not None else float(0.05 + 0.95 * rng_find.beta(2, 2))
        ctr = 0.50 + 0.15 * sev
    else:
        ctr = rng_anat.uniform(0.40, 0.52) if pediatric else rng_anat.uniform(0.36, 0.49)
    h_centre, h_axes, h_tilt = _heart_ellipse(ctr, thorax_width, rng_anat)
    diaphragm_v = -1.0 + 1.46 * height_f  # cardiophrenic level: the heart sits on the diaphragm
    heart = frame.ellipse(h_centre, h_axes, h_tilt) & (v < diaphragm_v)
    medi_w = 0.12 + 0.02 * rng_anat.standard_normal()
    mediastinum = (np.abs(u - 0.02) < medi_w) & (v < h_centre[1]) & (v > -1.6)
    knob = frame.ellipse((0.15, -0.45), (0.09, 0.08))
    medi_all = mediastinum | knob
    lung_right = (lung_poly[0].astype(bool) & ~heart & ~medi_all).astype(np.uint8)
    lung_left = (lung_poly[1].astype(bool) & ~heart & ~medi_all).astype(np.uint8)

    # ---- attenuation layers
    neck = 0.36 + rng_anat.uniform(-0.03, 0.03)
    shoulder = rng_anat.uniform(1.22, 1.35)
    body_w = np.where(v < -1.25, neck, np.where(v < -0.95, neck + (shoulder - neck) * (v + 1.25) / 0.3,
                                                shoulder + 0.04 * v))
    body = _sigmoid((body_w - np.abs(u)) / 0.025)
    att = 0.58 * body * (1 + 0.05 * frame.noise(rng_anat, 3))
    lung_soft = frame.blur(np.maximum(lung_poly[0], lung_poly[1]), 0.015)
    att -= 0.40 * lung_soft * (1 + 0.04 * frame.noise(rng_anat, 12))
    att += 0.30 * frame.blur(heart, 0.012) + 0.26 * frame.blur(medi_all, 0.015)
    trachea = (np.abs(u - 0.01) < 0.045) & (v < -0.55) & (v > -1.6)
    att -= 0.14 * frame.blur(trachea, 0.01)
    bubble = frame.ellipse((0.45 * width_f, 0.62 + 0.1 * height_f), (0.11, 0.06))
    att -= 0.18 * frame.blur(bubble & ~lung_poly[1].astype(bool), 0.02)

    bones = np.zeros(shape, np.float32)
    # vertebrae from neck to abdomen: bodies and pedicles, laid out by a periodic coordinate
    local_v = np.mod(v + 1.55 + 0.07, 0.14) - 0.07
    bones += 0.55 * ((np.abs(u) < 0.085) & (np.abs(local_v) < 0.055))
    bones += 0.3 * ((((np.abs(u) - 0.06) / 0.022) ** 2 + (local_v / 0.03) ** 2) <= 1.0)
    for side in (-1, 1):
        for k in range(10):  # posterior ribs: rise slightly then sweep down laterally
            v0 = -1.03 + 0.148 * k * height_f
            tt = np.linspace(0, 1, 40)
            ru = side * (0.08 + (0.98 * width_f + 0.04) * np.sin(tt * np.pi / 2))
            rv = v0 - 0.07 * np.sin(tt * np.pi) + 0.42 * tt**2
            line = np.stack([ru, rv], -1)
            frame.stroke(bones, line, 0.052, 0.75)
            frame.stroke(bones, line, 0.02, -0.2)  # slightly hollow centre: brighter cortical edges
        for k in range(6):  # anterior ribs: fainter, running down-medially
            v0 = -0.95 + 0.2 * k * height_f
            tt = np.linspace(0, 1, 30)
            ru = side * (0.95 * width_f - 0.6 * tt)
            rv = v0 + 0.05 + 0.3 * tt - 0.12 * np.sin(tt * np.pi)
            frame.stroke(bones, np.stack([ru, rv], -1), 0.035, 0.3)
        clav = np.array([(side * 0.10, -1.02), (side * 0.45, -1.04), (side * 0.88, -1.16)])
        frame.stroke(bones, _smooth_open(clav), 0.07, 0.9)
    att += 0.20 * frame.blur(bones, 0.006) * body

    # ---- pulmonary vessels branching from the hila
    vessels = np.zeros(shape, np.float32)
    for side in (-1, 1):
        for _ in range(9):
            _vessel_tree(frame, vessels, (side * 0.25, -0.18), side, rng_anat, 0.05, depth=3)
    att += 0.07 * frame.blur(vessels, 0.006) * lung_soft

    # ---- finding
    sev, fmap = 0.0, np.zeros(shape, np.float32)
    if finding == "enlarged_heart":
        sev = (ctr - 0.50) / 0.15
    elif finding != "normal":
        sev = float(severity) if severity is not None else float(0.05 + 0.95 * rng_find.beta(2, 2))
        fmap = _FINDING_RENDERERS[finding](frame, rng_find, sev, lung_poly, lung_soft)
        att += fmap
    finding_mask = np.zeros(shape, np.uint8)
    if finding == "enlarged_heart":
        finding_mask = heart.astype(np.uint8)
    elif fmap.max() > 0:
        extent = frame.blur(np.abs(fmap), 0.02)  # the region a reader would outline
        finding_mask = ((extent > 0.3 * extent.max()) & (lung_soft > 0.5)).astype(np.uint8)
    boxes = _boxes(finding_mask) if finding in ("bacterial", "viral", "tb") else []

    # ---- acquisition
    k = 2.0 * rng_acq.uniform(0.85, 1.2)
    img = 1.0 - np.exp(-k * np.clip(att, 0, None))
    img /= max(float(np.percentile(img, 99.7)), 1e-3)
    img = np.clip(img, 0, 1) ** rng_acq.uniform(0.8, 1.25)
    img *= 1.0 + 0.04 * rng_acq.uniform(-1, 1) * (frame.v / 1.5)  # heel effect
    img = cv2.GaussianBlur(img.astype(np.float32), (0, 0), rng_acq.uniform(0.4, 1.1) * min(h, w) / 256)
    img = img + rng_acq.standard_normal(shape).astype(np.float32) * rng_acq.uniform(0.006, 0.025) \
        * np.sqrt(np.clip(img, 0, 1) + 0.02)
    if rng_acq.random() < 0.6:  # side marker, as on most radiographs
        size = 0.9 * min(h, w) / 256
        org = (int(0.06 * w), int(0.10 * h))
        marker = np.zeros(shape, np.uint8)  # putText draws on 8-bit images only
        cv2.putText(marker, "R", org, cv2.FONT_HERSHEY_SIMPLEX, size, 255, max(1, int(2 * size)), cv2.LINE_AA)
        img = np.maximum(img, 0.95 * marker.astype(np.float32) / 255)
    img = np.clip(img, 0.0, 1.0).astype(np.float32)
    return CXRPhantom(img, lung_right, lung_left, heart.astype(np.uint8), finding_mask, finding,
                      float(sev), float(ctr), boxes)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _smooth_open(points: np.ndarray, n: int = 40) -> np.ndarray:
    t = np.linspace(0.0, 1.0, len(points))
    return CubicSpline(t, points)(np.linspace(0.0, 1.0, n))


def _vessel_tree(frame, layer, start, side, rng, width, depth):
    """Draw a tree from ``start`` outward that splits in two ``depth`` times, thinning at each
    split. Each generation is computed as arrays and drawn with one ``polylines`` call."""
    origins = np.asarray(start, float)[None, :]
    angles = rng.uniform(0, 2 * np.pi, 1)
    for level in range(depth + 1):
        d = np.stack([np.cos(angles), np.sin(angles)], -1)
        d[:, 0] = side * np.abs(d[:, 0]) + 0.3 * side  # outward from the hilum
        d /= np.linalg.norm(d, axis=1, keepdims=True)
        ends = origins + d * rng.uniform(0.12, 0.25, (len(d), 1))
        segments = np.round(frame.to_px(np.stack([origins, ends], 1)) * 16).astype(np.int32)
        cv2.polylines(layer, list(segments), False, 1.0, max(1, int(round(width * 0.65**level * frame.t))),
                      lineType=cv2.LINE_AA, shift=4)
        base = np.arctan2(d[:, 1], d[:, 0])
        angles = np.concatenate([base - 0.45, base + 0.45]) + rng.normal(0, 0.2, 2 * len(base))
        origins = np.concatenate([ends, ends])


def _sample_in(mask: np.ndarray, rng: np.random.Generator, n: int) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return np.zeros((0, 2))
    idx = rng.integers(0, len(xs), n)
    return np.stack([xs[idx], ys[idx]], -1).astype(np.float64)


def _tb(frame, rng, sev, lung_poly, lung_soft):
    out = np.zeros((frame.h, frame.w), np.float32)
    upper = [(p.astype(bool) & (frame.v < -0.3)) for p in lung_poly]
    sides = [rng.integers(0, 2)] if rng.random() < 0.6 else [0, 1]
    for s in sides:
        for x, y in _sample_in(upper[s], rng, 1 + int(round(5 * sev)) + rng.poisson(1)):
            r = rng.uniform(0.02, 0.055) * frame.t
            out += (0.10 + 0.22 * sev) * np.exp(-(((frame.xx - x) ** 2 + (frame.yy - y) ** 2) / (2 * r * r)))
        if rng.random() < 0.15 + 0.5 * sev:  # cavity: bright rim around a dark centre
            for x, y in _sample_in(upper[s], rng, 1):
                d = np.sqrt((frame.xx - x) ** 2 + (frame.yy - y) ** 2) / frame.t
                rad = rng.uniform(0.05, 0.09)
                out += (0.12 + 0.2 * sev) * np.exp(-((d - rad) ** 2) / (2 * 0.015**2))
                out -= (0.05 + 0.08 * sev) * (d < rad * 0.8)
    if rng.random() < 0.1 + 0.45 * sev:  # effusion: fluid with a meniscus in a costophrenic angle
        s = rng.integers(0, 2)
        side = -1 if s == 0 else 1
        level = 0.55 - (0.08 + 0.3 * sev) + 0.18 * (np.abs(frame.u) - 0.5) * (side * frame.u > 0)
        fluid = lung_poly[s].astype(bool) & (frame.v > level - 0.15 * (side * frame.u))
        out += 0.32 * frame.blur(fluid, 0.02)
    return out * (lung_soft > 0.2)


def _bacterial(frame, rng, sev, lung_poly, lung_soft):
    s = rng.integers(0, 2)
    side = -1 if s == 0 else 1
    lobe = rng.choice(["lower", "upper", "middle"] if s == 0 else ["lower", "upper"])
    vc = {"lower": 0.2, "upper": -0.6, "middle": -0.05}[lobe] + rng.normal(0, 0.05)
    uc = side * rng.uniform(0.4, 0.65)
    ru, rv = rng.uniform(0.18, 0.32) * (0.7 + 0.6 * sev), rng.uniform(0.18, 0.32) * (0.7 + 0.6 * sev)
    blob = np.exp(-(((frame.u - uc) / ru) ** 2 + ((frame.v - vc) / rv) ** 2) ** 2)
    blob = np.clip(blob + 0.25 * frame.noise(rng, 14) * blob, 0, None)
    # lobar: one sharp edge along a fissure
    fissure = -0.25 + 0.1 * rng.standard_normal()
    edge = _sigmoid((frame.v - fissure) / 0.015) if lobe == "lower" else \
        _sigmoid(-(frame.v - fissure - 0.15) / 0.015)
    blob = blob * edge * lung_poly[s]
    dense = (0.12 + 0.30 * sev) * np.clip(blob * 1.6, 0, 1)
    # air bronchograms: dark branching tubes inside the consolidation
    airways = np.zeros((frame.h, frame.w), np.float32)
    _vessel_tree(frame, airways, (side * 0.25, -0.18 + 0.1 * (vc > -0.2)), side, rng, 0.02, depth=3)
    dense -= 0.5 * dense * frame.blur(airways, 0.004)
    return frame.blur(dense, 0.01).astype(np.float32)


def _viral(frame, rng, sev, lung_poly, lung_soft):
    n = frame.noise(rng, 40)
    dog = cv2.GaussianBlur(n, (0, 0), 0.6) - cv2.GaussianBlur(n, (0, 0), 2.5)
    lines = np.exp(-((dog / (0.25 * dog.std() + 1e-6)) ** 2))  # zero-crossings: a reticular net
    d_hilum = np.minimum(np.hypot(frame.u - 0.25, frame.v + 0.18), np.hypot(frame.u + 0.25, frame.v + 0.18))
    weight = 0.35 + np.exp(-(d_hilum / 0.55) ** 2)
    haze = (0.02 + 0.07 * sev) * frame.blur(lung_soft * weight, 0.05)
    return ((0.04 + 0.13 * sev) * lines * weight * lung_soft + haze).astype(np.float32)


_FINDING_RENDERERS = {"tb": _tb, "bacterial": _bacterial, "viral": _viral}


def _boxes(mask: np.ndarray, min_frac: float = 0.002) -> list:
    """Bounding boxes ``(x, y, w, h)`` of the connected regions of a (dilated) finding mask."""
    if not mask.any():
        return []
    k = max(3, int(0.03 * mask.shape[1]) | 1)
    grown = cv2.dilate(mask, np.ones((k, k), np.uint8))
    n, _, stats, _ = cv2.connectedComponentsWithStats(grown)
    min_area = min_frac * mask.size
    boxes = [tuple(int(x) for x in stats[i, :4]) for i in range(1, n) if stats[i, 4] >= min_area]
    return sorted(boxes, key=lambda b: -b[2] * b[3])[:3]
