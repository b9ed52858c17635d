"""Synthetic posteroanterior chest radiographs with ground-truth anatomy masks and findings.

The phantom is built in a *canonical thorax frame* ``(u, v)``: ``u`` runs to the image's right
(the patient's left in a PA view), ``v`` runs down, the lateral lung borders sit near
``u = ±0.98``, the apices near ``v = -1`` and the costophrenic angles near ``v = +0.62``. The
frame is placed on the image as a radiographer collimates a PA film: the lungs span about 80%
of the width and 70% of the height, apices a few percent below the top edge, shoulders and
humeral heads in the upper corners, a modest strip of upper abdomen below the diaphragm. The
lung masks then cover about a third of the image, as published lung masks do (Montgomery,
Shenzhen, JSRT: median area fraction 0.36 at 256²).

Anatomy (each part varies between patients): chest-wall and shoulder soft tissue of an elliptic
cross-section, neck, two lungs with rounded apices, sharp costophrenic angles and diaphragm
domes (the right one higher), a heart whose width follows a cardiothoracic ratio (CTR), the
mediastinum with the aortic knob and pulmonary trunk, trachea and main bronchi, curved posterior
ribs that turn at the chest wall into fainter anterior ribs running down and medially,
clavicles, scapulae, humeral heads, the thoracic spine, pulmonary vessels that branch and taper
from the hila, breast shadows in some patients, liver and gastric bubble below the domes.

Each structure adds X-ray attenuation (air subtracts). The acquisition turns the projected
attenuation into a film: transmitted primary ``exp(-k·att)`` plus a smooth scatter veil, quantum
(Poisson) noise on the photons that arrive, a logarithmic detector, a film curve with a toe and
a shoulder, the processing of digital radiographs (large-scale contrast compressed, detail
enhanced by unsharp masking), detector blur, the heel effect and a side marker.

Randomness is split into three independent streams drawn from one seed — anatomy, finding and
acquisition — so the same seed rendered with and without a finding gives the same patient and
the same noise (used by the realism tests to measure what a finding changes).

Findings (each with a severity in [0, 1], so classes overlap at low severity; severity changes
how a finding looks, not only its contrast):

* ``tb``: upper-zone nodules clustered round a focus, cavities (thick bright wall, dark centre)
  in consolidation, fibrotic streaks from the hilum to the apex, pleural effusion blunting a
  costophrenic angle with a meniscus;
* ``bacterial``: lobar air-space consolidation with ill-defined margins, bounded where a fissure
  is (the minor fissure on the right), with air bronchograms; patchy and segmental when mild,
  confluent and filling the lobe when severe;
* ``viral``: bilateral perihilar reticular (interstitial) pattern — zero-crossings of band-passed
  noise — with ground-glass haze, spreading outwards and gaining patchy ground glass with severity;
* ``enlarged_heart``: cardiothoracic ratio 0.51–0.65; normal hearts follow the adult PA
  distribution, CTR ≈ N(0.44, 0.035) kept below 0.49 (children 0.40–0.53).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

FINDINGS = ("normal", "tb", "bacterial", "viral", "enlarged_heart")

# Placement of the thorax frame on the image: the canonical unit in pixels is this fraction of
# the image width (u) and height (v); the apex sits this fraction of the height below the top.
_UNIT_W, _UNIT_H, _APEX_TOP = 0.425, 0.47, 0.065


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


@dataclass
class _Anatomy:
    """What the finding renderers need to know about the patient."""

    lung_poly: list  # right, left lung outlines filled (uint8), heart and mediastinum not removed
    lung_soft: np.ndarray  # both lungs, slightly blurred (0..1)
    dome: tuple  # v of the right and left diaphragm domes
    cp: float  # v of the costophrenic angles
    hila: tuple  # (u, v) of the right and left hilum


def _smooth_open(points: np.ndarray, n: int = 40) -> np.ndarray:
    """Catmull-Rom spline through ``points`` (..., P, 2), sampled at ``n`` points per curve;
    a batch of curves is computed at once (far cheaper than one ``CubicSpline`` each)."""
    points = np.asarray(points, np.float64)
    ends = (2 * points[..., :1, :] - points[..., 1:2, :], 2 * points[..., -1:, :] - points[..., -2:-1, :])
    return _catmull_rom(np.concatenate([ends[0], points, ends[1]], axis=-2), n, points.shape[-2] - 1)


def _smooth_closed(points: np.ndarray, n: int = 120) -> np.ndarray:
    """A closed Catmull-Rom spline through ``points`` (P, 2) sampled at ``n`` points."""
    points = np.asarray(points, np.float64)
    padded = np.concatenate([points[-1:], points, points[:2]])
    return _catmull_rom(padded, n + 1, len(points))[:-1]


def _catmull_rom(padded: np.ndarray, n: int, spans: int) -> np.ndarray:
    t = np.linspace(0.0, spans, n)
    i = np.minimum(t.astype(int), spans - 1)
    f = (t - i)[:, None]
    p0, p1, p2, p3 = (padded[..., i + k, :] for k in range(4))
    return 0.5 * (2 * p1 + (p2 - p0) * f + (2 * p0 - 5 * p1 + 4 * p2 - p3) * f * f
                  + (3 * (p1 - p2) + p3 - p0) * f * f * f)


class _Frame:
    """Maps the canonical thorax frame to pixels: rotation, a scale per axis, translation."""

    def __init__(self, shape, scale_px, centre, angle):
        self.h, self.w = shape
        self.tu, self.tv = scale_px
        self.t = float(np.sqrt(self.tu * self.tv))  # pixels per canonical unit for widths
        self.cx, self.cy = centre
        self.c, self.s = np.cos(angle), np.sin(angle)
        yy, xx = np.mgrid[0:self.h, 0:self.w].astype(np.float32)
        dx, dy = xx - self.cx, yy - self.cy
        self.u = ((self.c * dx + self.s * dy) / self.tu).astype(np.float32)
        self.v = ((-self.s * dx + self.c * dy) / self.tv).astype(np.float32)

    def to_px(self, uv: np.ndarray) -> np.ndarray:
        uv = np.asarray(uv, dtype=np.float64)
        a, b = uv[..., 0] * self.tu, uv[..., 1] * self.tv
        return np.stack([self.cx + self.c * a - self.s * b, self.cy + self.s * a + self.c * b], axis=-1)

    def fill(self, uv_polygon: np.ndarray) -> np.ndarray:
        mask = np.zeros((self.h, self.w), np.uint8)
        pts = np.ascontiguousarray(np.round(self.to_px(uv_polygon) * 16), dtype=np.int32)
        cv2.fillPoly(mask, [pts], 1, lineType=cv2.LINE_8, shift=4)
        return mask

    def stroke(self, layer: np.ndarray, uv_line: np.ndarray, width: float, value: float) -> None:
        """Draw the polyline ``uv_line`` (n, 2), or a batch of them (k, n, 2), into ``layer``."""
        pts = np.ascontiguousarray(np.round(self.to_px(uv_line) * 16), dtype=np.int32)
        cv2.polylines(layer, list(pts.reshape(-1, *pts.shape[-2:])), False, float(value),
                      max(1, int(round(width * self.t))), lineType=cv2.LINE_AA, shift=4)

    def blur(self, layer: np.ndarray, sigma_uv: float) -> np.ndarray:
        """Gaussian blur of ``sigma_uv`` canonical units; wide ones on a reduced copy (cheaper)."""
        sigma = max(0.3, sigma_uv * self.t)
        layer = layer.astype(np.float32)
        f = int(sigma // 4)
        if f < 2:
            return cv2.GaussianBlur(layer, (0, 0), sigma)
        small = cv2.resize(layer, (max(1, self.w // f), max(1, self.h // f)), interpolation=cv2.INTER_AREA)
        small = cv2.GaussianBlur(small, (0, 0), sigma / f)
        return cv2.resize(small, (self.w, self.h), interpolation=cv2.INTER_LINEAR)

    def ellipse(self, centre, axes, angle=0.0) -> np.ndarray:
        """Boolean ellipse in canonical coordinates (filled as a 48-gon: cheap at any size)."""
        th = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        ca, sa = np.cos(angle), np.sin(angle)
        a, b = axes[0] * np.cos(th), axes[1] * np.sin(th)
        return self.fill(np.stack([centre[0] + ca * a - sa * b, centre[1] + sa * a + ca * b], -1)).astype(bool)

    def depth(self, mask: np.ndarray, scale_uv: float) -> np.ndarray:
        """0 outside ``mask``, rising to 1 at ``scale_uv`` inside its border (a rounded body)."""
        d = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 3)
        return np.sqrt(np.clip(d / max(1.0, scale_uv * self.t), 0.0, 1.0))

    @property
    def xx(self) -> np.ndarray:
        return np.arange(self.w, dtype=np.float32)[None, :]

    @property
    def yy(self) -> np.ndarray:
        return np.arange(self.h, dtype=np.float32)[:, None]

    def noise(self, rng: np.random.Generator, cells: int) -> np.ndarray:
        """Smooth noise with about ``cells`` blobs across the thorax width, unit std."""
        n = max(4, int(cells * self.w / (2.2 * self.tu)))
        small = rng.standard_normal((max(4, n * self.h // self.w), n)).astype(np.float32)
        big = cv2.resize(small, (self.w, self.h), interpolation=cv2.INTER_CUBIC)
        return (big - big.mean()) / (big.std() + 1e-6)


# --------------------------------------------------------------------------- outlines

def _lung_outline(side: int, wf: float, hf: float, dome: float, cp: float, rng) -> np.ndarray:
    """Outline of one lung: rounded apex, lateral border down to a sharp costophrenic angle,
    the diaphragm dome, and a medial border that the mediastinum and heart later cut back."""
    def scale_v(v):
        return -1.0 + (np.asarray(v) + 1.0) * hf

    lateral = np.array([(-0.40, -1.0), (-0.53, -0.985), (-0.66, -0.94), (-0.80, -0.80), (-0.90, -0.56),
                        (-0.955, -0.24), (-0.98, 0.08), (-0.985, 0.36)])
    lateral[1:, :] += rng.normal(0, 0.012, (len(lateral) - 1, 2))
    lateral[:, 1] = scale_v(lateral[:, 1])
    lateral[:, 0] *= wf
    cp_pt = np.array([[-0.968 * wf, cp]])
    drop = cp - dome
    dia = np.array([(-0.905 * wf, cp - 0.5 * drop), (-0.76 * wf, dome + 0.26 * drop), (-0.58 * wf, dome + 0.05 * drop),
                    (-0.39 * wf, dome), (-0.2 * wf, dome + 0.03), (-0.04, dome + 0.1)])
    dia[1:, 1] += rng.normal(0, 0.01, len(dia) - 1)
    medial = np.array([(-0.04, dome + 0.12), (-0.04, 0.0), (-0.04, -0.5), (-0.09, -0.82), (-0.19, -0.95),
                       (-0.30, -0.99), (-0.40, -1.0)])
    medial[1:4, 1] = scale_v(medial[1:4, 1])
    outline = np.vstack([_smooth_open(lateral, 40), cp_pt, _smooth_open(dia, 24)[1:],
                         _smooth_open(medial, 24)[1:-1]])
    if side == 1:
        outline = outline * np.array([-1.0, 1.0])
    return outline


def _mediastinum_outline(knob: float, rng) -> np.ndarray:
    """Superior mediastinum: right border (SVC), left border with aortic knob, aortopulmonary
    window and pulmonary trunk; it runs on down into the heart."""
    j = rng.normal(0, 0.008, 6)
    right = [(-0.15 + j[0], -1.6), (-0.145, -1.0), (-0.14 + j[1], -0.72), (-0.15, -0.45), (-0.16 + j[2], -0.2),
             (-0.13, 0.3)]
    left = [(0.12, 0.3), (0.16, -0.20), (0.175 + j[3], -0.32), (0.145, -0.41), (knob, -0.54 + j[4]),
            (0.16, -0.66), (0.13 + j[5], -0.80), (0.13, -1.0), (0.14, -1.6)]
    return np.vstack([_smooth_open(np.array(right), 30), _smooth_open(np.array(left), 40)])


def _heart_outline(extent: float, right_share: float, top: float, dome_r: float, dome_l: float,
                   rng) -> np.ndarray:
    """Cardiac silhouette whose horizontal extent is exactly ``extent``: right atrial border
    bulging right of the spine, left ventricular border down to the apex on the left dome."""
    r, lft = right_share, 1.0 - right_share
    pts = np.array([
        (-0.08, top - 0.02), (-0.62 * r, top + 0.07), (-0.93 * r, top + 0.28), (-1.0 * r, top + 0.48),
        (-0.88 * r, dome_r + 0.03), (-0.45 * r, dome_r + 0.13), (0.25 * lft, dome_l + 0.15),
        (0.75 * lft, dome_l + 0.09), (0.98 * lft, dome_l - 0.06), (0.93 * lft, dome_l - 0.30),
        (0.70 * lft, top + 0.22), (0.40 * lft, top + 0.05), (0.14, top - 0.04)])
    pts[:, 0] *= np.where(np.abs(pts[:, 0]) > 0.2, extent, 1.0)
    pts += rng.normal(0, 0.008, pts.shape)
    out = _smooth_closed(pts, 100)
    lo, hi = out[:, 0].min(), out[:, 0].max()
    out[:, 0] = (out[:, 0] - lo) / (hi - lo) * extent - r * extent  # exact width: the CTR
    return out


def _keep_largest(mask: np.ndarray) -> np.ndarray:
    """The largest 4-connected component of a 0/1 mask (an empty mask stays empty): one region
    whichever connectivity a reader counts with, like a hand-drawn lung outline."""
    mask = mask.astype(np.uint8)
    x, y, bw, bh = cv2.boundingRect(mask)  # label the occupied box only
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask[y:y + bh, x:x + bw], connectivity=4)
    if n <= 2:
        return mask
    out = np.zeros_like(mask)
    out[y:y + bh, x:x + bw] = labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return out


# --------------------------------------------------------------------------- rendering

def render_cxr(seed, shape=(256, 256), finding: str = "normal", severity: float | None = None,
               pediatric: bool = False) -> CXRPhantom:
    """Render one radiograph of ``shape`` (H, W) with ``finding`` (one of :data:`FINDINGS`)."""
    if finding not in FINDINGS:
        raise ValueError(f"unknown finding {finding!r}; expected one of {FINDINGS}")
    seq = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
    rng_anat, rng_find, rng_acq = (np.random.default_rng(s) for s in seq.spawn(3))
    h, w = shape
    ra = rng_anat

    # ---- placement: the canonical unit in pixels per axis, kept within a plausible aspect
    scale = ra.uniform(0.90, 1.06)
    tu, tv = scale * _UNIT_W * w * ra.uniform(0.96, 1.04), scale * _UNIT_H * h * ra.uniform(0.94, 1.08)
    if pediatric:
        tv *= 0.94
    tu, tv = min(tu, tv / 0.85), min(tv, 1.3 * tu)
    centre = (w / 2 + ra.normal(0, 0.015) * w, (_APEX_TOP + ra.normal(0, 0.012)) * h + tv)
    frame = _Frame(shape, (tu, tv), centre, np.deg2rad(ra.normal(0, 2.0)))
    u, v = frame.u, frame.v
    au = np.abs(u)

    # ---- lungs, diaphragm, heart, mediastinum
    wf = ra.uniform(0.95, 1.04)
    hf = ra.uniform(0.92, 1.06) * (0.93 if pediatric else 1.0)
    dome_r = -1.0 + (1.3 + ra.normal(0, 0.035)) * hf
    dome_l = dome_r + ra.uniform(0.04, 0.10)  # the right hemidiaphragm sits higher
    cp = -1.0 + 1.62 * hf
    lungs_uv = [_lung_outline(-1, wf, hf, dome_r, cp, ra), _lung_outline(1, wf, hf, dome_l, cp + 0.02, ra)]
    lung_poly = [frame.fill(p) for p in lungs_uv]
    thorax_width = float(lungs_uv[1][:, 0].max() - lungs_uv[0][:, 0].min())

    ctr = float(np.clip(ra.normal(0.46, 0.035), 0.40, 0.53)) if pediatric else \
        float(np.clip(ra.normal(0.44, 0.035), 0.34, 0.485))
    sev = 0.0
    if finding == "enlarged_heart":
        sev = float(severity) if severity is not None else float(0.05 + 0.95 * rng_find.beta(2, 2))
        ctr = 0.51 + 0.14 * sev
    enlarged = max(0.0, ctr - 0.5) / 0.15
    right_share = ra.uniform(0.28, 0.37)
    heart_top = -0.26 + ra.normal(0, 0.03) - 0.1 * enlarged
    heart_uv = _heart_outline(ctr * thorax_width, right_share, heart_top, dome_r, dome_l, ra)
    heart_uv[:, 0] += 0.5 * (lungs_uv[1][:, 0].max() + lungs_uv[0][:, 0].min())
    heart = frame.fill(heart_uv).astype(bool)
    knob = ra.uniform(0.18, 0.25)
    medi = frame.fill(_mediastinum_outline(knob, ra)).astype(bool)
    # a lung mask stops at the heart and at the mediastinum, and nothing of it shows below the
    # heart (the cardiophrenic angle); slivers left along those borders are opened away
    covered = heart | medi | np.maximum.accumulate(heart, axis=0)
    k = max(3, int(round(0.018 * min(h, w))) | 1)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
    lung_right, lung_left = (_keep_largest(cv2.morphologyEx((p.astype(bool) & ~covered).astype(np.uint8),
                                                            cv2.MORPH_OPEN, kernel)) for p in lung_poly)
    hila = ((-0.27 * wf, -0.22 + 0.3 * (hf - 1)), (0.27 * wf, -0.26 + 0.3 * (hf - 1)))
    # the heart's lower border merges with the diaphragm: the mask stops a little below the domes
    heart_mask = (heart & (v < np.where(u < 0, dome_r, dome_l) + 0.08)).astype(np.uint8)

    # ---- soft tissue: chest wall of elliptic cross-section, shoulders and arms, neck
    wall = wf * (ra.uniform(1.16, 1.28) - 0.07 * ((v - 0.1) / 1.1) ** 2)  # widest at the lower ribs
    neck = ra.uniform(0.30, 0.38)
    shoulder_top = -1.40 + 0.24 * np.clip((au - neck) / 0.95, 0, 1) ** 0.8 + ra.normal(0, 0.03)
    axilla = ra.uniform(-0.75, -0.45)
    below_shoulder = _sigmoid((v - shoulder_top) / 0.02)
    torso = _sigmoid((wall - au) / 0.012) * below_shoulder
    arms = (1 - _sigmoid((wall - au) / 0.012)) * below_shoulder * _sigmoid((axilla - v) / 0.06)
    neck_tissue = _sigmoid((neck - au) / 0.015) * (1 - below_shoulder)
    thick = torso * np.sqrt(np.clip(1.0 - (u / (wall + 0.12)) ** 2, 0.02, 1.0)) \
        + 0.75 * arms + 0.55 * neck_tissue
    att = 0.66 * thick * (1 + 0.04 * frame.noise(ra, 3))
    if ra.random() < 0.45:  # breast shadows: soft tissue with a curved lower edge over the bases
        by = dome_r - ra.uniform(0.05, 0.2)
        for side in (-1, 1):
            bu = side * ra.uniform(0.50, 0.66) * wf
            breast = frame.ellipse((bu, by - 0.25), (ra.uniform(0.42, 0.55), 0.45))
            att += ra.uniform(0.05, 0.10) * frame.blur(breast, 0.04)

    # ---- air: lungs (deeper in the middle and the bases), the posterior recesses below the
    # domes, trachea and main bronchi, gastric bubble
    lung_soft = frame.blur(np.maximum(lung_poly[0], lung_poly[1]), 0.012)
    lung_any = np.maximum(lung_poly[0], lung_poly[1])
    air = frame.depth(lung_any, 0.15) * (0.78 + 0.14 * np.clip(v + 1, 0, 1.6))
    recess = np.zeros(shape, np.uint8)
    for p in lungs_uv:
        recess |= frame.fill(p + np.array([0.0, 0.10]))
    recess_air = frame.blur((recess & ~lung_any.astype(bool)).astype(np.float32), 0.03)
    heart_soft, medi_soft = frame.blur(heart, 0.012), frame.blur(medi, 0.012)
    air = air * (1 - 0.65 * heart_soft) * (1 - 0.8 * medi_soft) + 0.12 * recess_air * (1 - heart_soft)
    att -= 0.42 * air * (1 + 0.04 * frame.noise(ra, 12))
    att += 0.05 * frame.depth(heart, 0.15)  # the heart is rounder (deeper) than the mediastinum
    trachea_w = ra.uniform(0.04, 0.055)
    carina = (0.01, -0.40 + ra.normal(0, 0.03))
    airway = np.zeros(shape, np.float32)
    frame.stroke(airway, np.array([(0.0, -1.7), (0.0, -0.9), carina]), 2 * trachea_w, 1.0)
    for side in (-1, 1):
        frame.stroke(airway, _smooth_open(np.array([carina, (side * 0.12, carina[1] + 0.10),
                                                    (side * 0.2, carina[1] + 0.16)]), 12), 1.1 * trachea_w, 0.5)
    att -= 0.07 * frame.blur(airway, 0.01)
    bubble = frame.ellipse((0.45 * wf, dome_l + 0.13), (ra.uniform(0.08, 0.14), ra.uniform(0.04, 0.07)))
    att -= ra.uniform(0.1, 0.22) * frame.blur(bubble & (v > dome_l + 0.07), 0.015)

    # ---- bones
    # below the domes scatter from the liver and spleen washes the ribs out
    washed = 0.45 + 0.55 * _sigmoid((np.where(u < 0, dome_r, dome_l) + 0.12 - v) / 0.05)
    att += 0.11 * frame.blur(_bones(frame, ra, wf, hf), 0.006) * np.maximum(torso + arms, neck_tissue) * washed

    # ---- pulmonary vessels branching and tapering from the hila; hilar arteries
    vessels, hilar = np.zeros(shape, np.float32), np.zeros(shape, np.float32)
    for s, (hu, hv) in zip((-1, 1), hila):
        fan = np.deg2rad(-75 + 155 * (np.arange(7) + ra.uniform(0, 1, 7)) / 7)  # upper lobe up, lower down
        _vessel_tree(frame, vessels, (hu, hv), s, fan, ra, 0.04, depth=4, length=(0.12, 0.2))
        hilar += frame.ellipse((hu, hv), (0.07, 0.14), s * 0.3)  # hilar arteries
    d_hilum = np.minimum(*(np.hypot(u - hu, v - hv) for hu, hv in hila))
    fade = np.exp(-(d_hilum / 0.7) ** 2)  # markings fade towards the periphery
    vessels = frame.blur(vessels, 0.009) + 0.8 * frame.blur(hilar, 0.03)
    att += 0.08 * vessels * np.clip(air * 1.6, 0, 1) * fade
    att += (0.012 * frame.noise(ra, 40) + 0.006 * frame.noise(ra, 90)) * lung_soft  # parenchymal mottle

    # ---- finding
    anat = _Anatomy(lung_poly, lung_soft, (dome_r, dome_l), cp, hila)
    fmap, att_anatomy = np.zeros(shape, np.float32), att
    if finding not in ("normal", "enlarged_heart"):
        sev = float(severity) if severity is not None else float(0.05 + 0.95 * rng_find.beta(2, 2))
        fmap = _FINDING_RENDERERS[finding](frame, rng_find, sev, anat)
        att = att + fmap
    finding_mask = np.zeros(shape, np.uint8)
    if finding == "enlarged_heart":
        finding_mask = heart_mask
    elif fmap.max() > 0:
        extent = frame.blur(np.abs(fmap), 0.02)  # the region a reader would outline
        finding_mask = ((extent > 0.3 * extent.max()) & (lung_soft > 0.5)).astype(np.uint8)
    boxes = _boxes(finding_mask) if finding in ("bacterial", "viral", "tb") else []

    img = _acquire(frame, att, rng_acq, shape, att_anatomy)
    return CXRPhantom(img, lung_right, lung_left, heart_mask, finding_mask, finding,
                      float(sev), float(ctr), boxes)


def _bones(frame, rng, wf, hf) -> np.ndarray:
    """Ribs, clavicles, scapulae, humeral heads and the thoracic spine, as a density layer.

    ``polylines`` paints over what is there, so structures that overlap (posterior and anterior
    ribs, clavicles, scapulae) are drawn on separate layers and added."""
    shape = (frame.h, frame.w)
    bones = np.zeros(shape, np.float32)
    # thoracic spine: vertebral bodies with end plates, pedicles, spinous processes (computed in
    # the central columns only)
    reach = 0.2 * frame.tu + 0.1 * frame.h * abs(frame.s)
    cols = slice(max(0, int(frame.cx - reach)), min(frame.w, int(frame.cx + reach) + 1))
    u, v = frame.u[:, cols], frame.v[:, cols]
    period = 0.165 * hf
    local_v = np.mod(v - rng.uniform(0, period), period) - period / 2
    spine = 0.45 * ((np.abs(u) < 0.085) & (np.abs(local_v) < 0.42 * period))
    spine += 0.25 * ((((np.abs(u) - 0.062) / 0.02) ** 2 + ((local_v + 0.12 * period) / 0.032) ** 2) <= 1.0)
    spine += 0.25 * ((u / 0.018) ** 2 + ((local_v - 0.1 * period) / 0.045) ** 2 <= 1.0)
    bones[:, cols] = spine
    post, core, ant, clav, clav_core, limb = (np.zeros(shape, np.float32) for _ in range(6))

    def chest_half_width(vv):  # inner chest width at a level: narrow at the apex
        return wf * (1.03 - 0.58 * np.clip((-0.32 - vv) / 0.85, 0, 1) ** 1.5)

    # 12 ribs a side: a posterior arc from the spine up and out, turning at the chest wall into
    # the anterior rib that runs down and medially to the costochondral junction
    k = np.arange(12)
    v0 = -1.18 + rng.normal(0, 0.02) + (0.148 + 0.0015 * k) * k * hf + rng.normal(0, 0.008, 12)
    xl = chest_half_width(v0 + 0.18)[:, None] + 0.04
    vv = v0[:, None]
    drop = 1.0 + 0.25 * np.clip(k - 7, 0, None)[:, None]  # the lower ribs slope more steeply
    p = np.stack([np.c_[np.full(12, 0.07), np.array([0.28, 0.55, 0.82, 0.97, 1.0]) * xl],
                  vv + np.array([0.0, -0.03, 0.03, 0.12, 0.24, 0.34]) * drop], -1)
    a = np.stack([np.maximum(np.array([1.0, 0.94, 0.76, 0.42]) * xl, 0.2),
                  vv + np.array([0.34, 0.45, 0.58, 0.70]) + np.c_[0 * k, 0 * k, 0 * k, 0.012 * k]], -1)
    post_lines, ant_lines = _smooth_open(p, 36), _smooth_open(a[:9], 24)  # lower anterior ribs: below the domes
    for side in (-1, 1):
        mirror = np.array([side, 1.0])
        frame.stroke(post, post_lines * mirror, 0.055, 1.0)
        frame.stroke(core, post_lines * mirror, 0.025, 1.0)
        frame.stroke(ant, ant_lines * mirror, 0.065, 1.0)
        # clavicle: a gentle S from the sternal end up to the acromion, over the apex
        c = np.array([(0.085, -0.82), (0.3, -0.88), (0.6, -0.93), (0.88, -1.02), (1.10, -1.06)])
        c[:, 1] += rng.normal(0, 0.02) + rng.normal(0, 0.008, len(c))
        c[:, 0] *= side
        cl = _smooth_open(c, 30)
        frame.stroke(clav, cl, 0.085, 1.0)
        frame.stroke(clav_core, cl, 0.04, 1.0)
        # scapula: a thin triangle over the upper chest wall
        sx = rng.uniform(0.0, 0.06)
        scap = np.array([(1.12, -1.0), (0.80 + sx, -1.06), (0.74 + sx, -0.72), (0.90 + sx, -0.34), (1.08, -0.70)])
        scap[:, 0] *= side * wf
        bones += 0.2 * frame.fill(scap)
        # humeral head, neck and shaft; the acromion over the head
        hu, hv = side * (rng.uniform(1.13, 1.23) * wf), rng.uniform(-1.02, -0.92)
        shaft = np.array([(hu, hv), (hu + side * 0.04, hv + 0.25), (hu + side * 0.07, hv + 0.45)])
        frame.stroke(limb, shaft, 0.19, 1.0)
        bones += 0.7 * frame.ellipse((hu, hv), (0.17, 0.18)) - 0.1 * frame.ellipse((hu, hv), (0.14, 0.15))
        frame.stroke(limb, np.array([(side * 1.05, -1.10), (hu, hv - 0.17), (hu + side * 0.12, hv - 0.15)]),
                     0.06, 1.0)
    bones += 0.6 * post - 0.18 * core + 0.22 * ant + 0.6 * clav - 0.12 * clav_core + 0.55 * limb
    return np.clip(bones, 0.0, None)


def _acquire(frame, att, rng, shape, att_anatomy) -> np.ndarray:
    """Exposure, scatter, log detector response, film curve, unsharp-mask processing, detector
    blur and quantum noise; bone and dense tissue come out bright, air dark.

    The display window and the processing's low-pass image come from ``att_anatomy`` (the
    patient without the finding; the same array for a normal film), so that a finding changes
    the film only where it is, as the realism tests measure, rather than re-windowing it all."""
    h, w = shape
    k, spr = rng.uniform(2.4, 3.2), rng.uniform(0.4, 0.9)
    counts = rng.uniform(2000, 8000)
    quanta = rng.standard_normal(shape).astype(np.float32)

    def density(a):
        primary = np.exp(-k * np.clip(a, 0, None))
        # scattered radiation: a smooth veil that lowers contrast most where little primary gets through
        exposure = primary + spr * frame.blur(primary, 0.3)
        # quantum noise: Poisson counts, relatively larger where fewer photons arrive
        exposure = exposure + quanta * np.sqrt(exposure / counts)
        return -np.log(np.clip(exposure, 1e-3, None))

    dens = density(att)
    dens0 = dens if att_anatomy is att else density(att_anatomy)
    lo, hi = np.percentile(dens0[::2, ::2], [0.5, 99.8])  # every 4th pixel is plenty for a window
    # film/detector curve: a toe and a shoulder (a logistic through the normalised density)
    mid, slope = rng.uniform(0.4, 0.55), rng.uniform(4.0, 6.0)
    ends = 1.0 / (1.0 + np.exp(-slope * (np.array([0.0, 1.0]) - mid)))

    def film(d):
        x = np.clip((d - lo) / max(hi - lo, 1e-3), 0, 1)
        return (1.0 / (1.0 + np.exp(-slope * (x - mid))) - ends[0]) / (ends[1] - ends[0])

    img = film(dens)
    img0 = img if dens0 is dens else film(dens0)
    # digital radiographs are processed: large-scale contrast compressed (a fraction of a very
    # smooth copy taken off), detail enhanced (unsharp masking)
    amount, low = rng.uniform(0.5, 1.0), frame.blur(img0, rng.uniform(0.06, 0.12))
    squeeze, broad = rng.uniform(0.2, 0.5), frame.blur(img0, 0.4)
    img, img0 = (x + amount * (x - low) - squeeze * broad for x in (img, img0))
    lo, hi = np.percentile(img0[::2, ::2], [0.5, 99.8])
    img = np.clip((img - lo) / max(hi - lo, 1e-3), 0, 1)
    # display: sites differ in black level and mid-tone brightness (some films show grey lungs)
    black = rng.uniform(0.0, 0.3)
    img = black + (0.97 - black) * img ** rng.uniform(0.7, 1.15)
    img *= 1.0 + 0.04 * rng.uniform(-1, 1) * (frame.v / 1.5)  # heel effect
    img = cv2.GaussianBlur(img.astype(np.float32), (0, 0), rng.uniform(0.25, 0.6) * min(h, w) / 256)
    img = img + rng.standard_normal(shape).astype(np.float32) * rng.uniform(0.002, 0.008)  # electronic noise
    if rng.random() < 0.6:  # side marker, as on most radiographs
        size = 0.9 * min(h, w) / 256
        org = (int(0.05 * w), int(0.14 * h))
        box = (slice(0, min(h, org[1] + int(8 * size) + 2)), slice(0, min(w, org[0] + int(30 * size) + 2)))
        marker = np.zeros((box[0].stop, box[1].stop), np.uint8)  # putText draws on 8-bit images only
        cv2.putText(marker, "R", org, cv2.FONT_HERSHEY_SIMPLEX, size, 255, max(1, int(2 * size)), cv2.LINE_AA)
        img[box] = np.maximum(img[box], 0.95 * marker.astype(np.float32) / 255)
    return np.clip(img, 0.0, 1.0).astype(np.float32)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _vessel_tree(frame, layer, start, side, angles, rng, width, depth, spread=0.45, length=(0.10, 0.2)):
    """Draw trees from ``start`` that leave at ``angles`` (radians from the outward horizontal,
    positive down) and split in two ``depth`` times, thinning and shortening at each split.
    Each generation of all the trees is computed as arrays and drawn with one ``polylines`` call."""
    angles = np.atleast_1d(np.asarray(angles, float))
    origins = np.repeat(np.asarray(start, float)[None, :], len(angles), 0)
    for level in range(depth + 1):
        d = np.stack([side * np.cos(angles), np.sin(angles)], -1)
        ends = origins + d * rng.uniform(*length, (len(d), 1)) * 0.85 ** level
        segments = np.ascontiguousarray(np.round(frame.to_px(np.stack([origins, ends], 1)) * 16), dtype=np.int32)
        cv2.polylines(layer, list(segments), False, 1.0, max(1, int(round(width * 0.7**level * frame.t))),
                      lineType=cv2.LINE_AA, shift=4)
        angles = np.concatenate([angles - spread, angles + spread]) + rng.normal(0, 0.2, 2 * len(angles))
        origins = np.concatenate([ends, ends])


def _sample_in(mask: np.ndarray, rng: np.random.Generator, n: int) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return np.zeros((0, 2))
    idx = rng.integers(0, len(xs), n)
    return np.stack([xs[idx], ys[idx]], -1).astype(np.float64)


def _add_blob(out: np.ndarray, x: float, y: float, r: float, amp: float) -> None:
    """Add a Gaussian of radius ``r`` pixels at ``(x, y)``, computed in a window around it only."""
    h, w = out.shape
    m = int(np.ceil(3.5 * r)) + 1
    x0, x1, y0, y1 = max(0, int(x) - m), min(w, int(x) + m + 1), max(0, int(y) - m), min(h, int(y) + m + 1)
    if x0 >= x1 or y0 >= y1:
        return
    xx = np.arange(x0, x1, dtype=np.float32)[None, :] - x
    yy = np.arange(y0, y1, dtype=np.float32)[:, None] - y
    out[y0:y1, x0:x1] += amp * np.exp(-(xx * xx + yy * yy) / (2 * r * r))


def _add_ring(out: np.ndarray, x: float, y: float, rad: float, wall: float, amp: float, hole: float) -> None:
    """A cavity: a bright wall of thickness ``wall`` at radius ``rad`` (pixels) round a darker centre."""
    h, w = out.shape
    m = int(np.ceil(rad + 4 * wall)) + 1
    x0, x1, y0, y1 = max(0, int(x) - m), min(w, int(x) + m + 1), max(0, int(y) - m), min(h, int(y) + m + 1)
    if x0 >= x1 or y0 >= y1:
        return
    d = np.hypot(np.arange(x0, x1, dtype=np.float32)[None, :] - x, np.arange(y0, y1, dtype=np.float32)[:, None] - y)
    out[y0:y1, x0:x1] += amp * np.exp(-((d - rad) ** 2) / (2 * wall * wall)) - hole * (d < rad * 0.8)


def _tb(frame, rng, sev, anat):
    """Post-primary TB: clustered nodules in the upper zones, cavities, fibrotic streaks drawn
    up from the hilum towards the apex, and a pleural effusion. Mild disease is a few small
    nodules; severe disease adds confluent clusters, thick-walled cavities and fibrosis."""
    lung_poly, lung_soft = anat.lung_poly, anat.lung_soft
    out = np.zeros((frame.h, frame.w), np.float32)
    upper = [(p.astype(bool) & (frame.v < -0.35)) for p in lung_poly]
    sides = [rng.integers(0, 2)] if rng.random() < 0.6 else [0, 1]
    for s in sides:
        centres = _sample_in(upper[s], rng, 1 + int(sev > 0.5))
        n = 1 + int(round(5 * sev)) + rng.poisson(1)
        for x, y in _sample_in(upper[s], rng, n):
            if len(centres) and rng.random() < 0.6:  # most nodules cluster round a focus
                cx, cy = centres[rng.integers(0, len(centres))]
                x, y = cx + rng.normal(0, 0.07) * frame.t, cy + rng.normal(0, 0.07) * frame.t
            r = rng.uniform(0.02, 0.055) * frame.t
            _add_blob(out, x, y, r, 0.10 + 0.22 * sev)
        if rng.random() < 0.15 + 0.5 * sev:  # cavity: a thick wall round a dark centre, in consolidation
            for x, y in _sample_in(upper[s], rng, 1):
                rad = rng.uniform(0.05, 0.09) * frame.t
                _add_blob(out, x, y, 1.6 * rad, 0.06 + 0.1 * sev)
                _add_ring(out, x, y, rad, (0.015 + 0.012 * sev) * frame.t, 0.1 + 0.16 * sev, 0.08 + 0.1 * sev)
        if rng.random() < 1.5 * sev - 0.3:  # fibrosis: streaks retracting from the hilum to the apex
            side = -1 if s == 0 else 1
            hu, hv = anat.hila[s]
            streaks = np.zeros_like(out)
            for _ in range(2 + int(3 * sev)):
                end = (side * rng.uniform(0.3, 0.7), rng.uniform(-0.95, -0.7))
                mid = (0.5 * (hu + end[0]) + rng.normal(0, 0.08), 0.5 * (hv + end[1]) + rng.normal(0, 0.06))
                frame.stroke(streaks, _smooth_open(np.array([(hu, hv - 0.05), mid, end]), 16), 0.01, 1.0)
            out += (0.06 + 0.08 * sev) * frame.blur(streaks, 0.008) * lung_poly[s]
    if rng.random() < 0.1 + 0.45 * sev:  # effusion: blunts a costophrenic angle, meniscus rising laterally
        s = rng.integers(0, 2)
        side = -1 if s == 0 else 1
        depth = 0.06 + 0.3 * sev
        lateral = np.clip((side * frame.u - 0.3) / 0.68, 0, 1)
        top = anat.cp - depth * (0.35 + 0.65 * lateral ** 2)
        out += 0.32 * np.clip((frame.v - top) / 0.08, 0, 1) * lung_poly[s] * (side * frame.u > 0.2)
    return out * (lung_soft > 0.2)


def _bacterial(frame, rng, sev, anat):
    """Lobar pneumonia: air-space consolidation of one lobe with ill-defined margins, except
    where a fissure bounds it (the minor fissure under a right upper lobe or over the middle
    lobe), with air bronchograms. Mild disease is a patchy segmental opacity; severe disease is
    confluent and fills the lobe."""
    s = int(rng.integers(0, 2))
    side = -1 if s == 0 else 1
    lobe = str(rng.choice(["lower", "upper", "middle"] if s == 0 else ["lower", "upper", "lingula"]))
    hu, hv = anat.hila[s]
    minor = hv - 0.02 + rng.normal(0, 0.04)  # the minor fissure, about at the right hilum
    vc = {"upper": -0.62, "middle": minor + 0.22, "lingula": hv + 0.25,
          "lower": anat.dome[s] - 0.22}[lobe] + rng.normal(0, 0.05)
    uc = side * rng.uniform(0.42, 0.65)
    ru, rv = rng.uniform(0.18, 0.32) * (0.7 + 0.6 * sev), rng.uniform(0.18, 0.32) * (0.7 + 0.6 * sev)
    blob = np.exp(-(((frame.u - uc) / ru) ** 2 + ((frame.v - vc) / rv) ** 2) ** 2)
    blob = np.clip(blob + 0.25 * frame.noise(rng, 14) * blob, 0, None)  # ill-defined margins
    blob *= np.clip(1.8 * sev + 0.5 + 0.5 * frame.noise(rng, 16), 0, 1)  # patchy when mild
    if lobe == "upper" and s == 0:
        blob *= _sigmoid(-(frame.v - minor) / 0.012)
    elif lobe == "middle":
        blob *= _sigmoid((frame.v - minor) / 0.012)
    blob = blob * anat.lung_poly[s]
    dense = (0.12 + 0.30 * sev) * np.clip(blob * 1.6, 0, 1)
    # air bronchograms: dark branching tubes inside the consolidation, from the hilum towards it
    airways = np.zeros((frame.h, frame.w), np.float32)
    toward = np.arctan2(vc - hv, abs(uc - hu))
    _vessel_tree(frame, airways, (hu, hv), side, toward + rng.normal(0, 0.25, 2), rng, 0.022, depth=3,
                 spread=0.4, length=(0.1, 0.16))
    dense -= 0.5 * dense * frame.blur(airways, 0.004)
    return frame.blur(dense, 0.01).astype(np.float32)


def _viral(frame, rng, sev, anat):
    """Viral pneumonia: bilateral interstitial (reticular) markings concentrated round the hila
    with ground-glass haze; with severity the pattern spreads out and patchy ground glass appears."""
    lung_soft = anat.lung_soft
    n = frame.noise(rng, 40)
    dog = cv2.GaussianBlur(n, (0, 0), 0.6) - cv2.GaussianBlur(n, (0, 0), 2.5)
    lines = np.exp(-((dog / (0.25 * dog.std() + 1e-6)) ** 2))  # zero-crossings: a reticular net
    d_hilum = np.minimum(*(np.hypot(frame.u - hu, frame.v - hv) for hu, hv in anat.hila))
    weight = 0.3 + np.exp(-(d_hilum / (0.4 + 0.3 * sev)) ** 2)  # perihilar, spreading with severity
    haze = (0.02 + 0.07 * sev) * frame.blur(lung_soft * weight, 0.05)
    # severe disease adds patchy ground-glass opacities on top of the interstitial pattern
    ggo = 0.12 * max(0.0, sev - 0.3) * np.clip(frame.noise(rng, 6) + 0.3, 0, None) * weight * lung_soft
    return ((0.04 + 0.13 * sev) * lines * weight * lung_soft + haze + ggo).astype(np.float32)


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
