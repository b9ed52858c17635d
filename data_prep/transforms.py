"""Image transforms shared by every dataset (UMS-Rep Sections 3.1.1-3.1.2; MT-UNet Section 4).

* :func:`resize` — bicubic resize (OpenCV), 256×256 for UMS-Rep;
* :func:`letterbox` — keep the aspect ratio, resize to fit and zero-pad centred, 640×416 (H×W)
  for MT-UNet; :class:`Letterbox` maps gaze coordinates through the same transform;
* :class:`MeanNormalizer` — mean normalisation with statistics from the training split only.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import cv2
import numpy as np

UMS_SIZE = (256, 256)
MTUNET_SHAPE = (640, 416)  # (H, W), the paper's; the authors' code uses 640×512

_INTERP = {"bicubic": cv2.INTER_CUBIC, "bilinear": cv2.INTER_LINEAR, "nearest": cv2.INTER_NEAREST,
           "area": cv2.INTER_AREA}


def resize(image: np.ndarray, size=UMS_SIZE, interpolation: str = "bicubic") -> np.ndarray:
    """Resize a 2-D image to ``size`` = (H, W). Bicubic overshoots, so float images are clipped
    back to [0, 1]."""
    h, w = size
    out = cv2.resize(image, (int(w), int(h)), interpolation=_INTERP[interpolation])
    return np.clip(out, 0.0, 1.0) if np.issubdtype(out.dtype, np.floating) else out


def resize_mask(mask: np.ndarray, size=UMS_SIZE) -> np.ndarray:
    """Resize a binary mask (area-weighted, then threshold at 0.5): thin structures survive
    better than with nearest neighbour."""
    out = resize(mask.astype(np.float32), size, "area" if mask.shape[0] > size[0] else "bilinear")
    return (out >= 0.5).astype(np.uint8)


@dataclass(frozen=True)
class Letterbox:
    """``out = in · scale + (left, top)``: an aspect-preserving resize into ``out_shape``."""

    in_shape: tuple
    out_shape: tuple
    scale: float
    top: int
    left: int

    @classmethod
    def fit(cls, in_shape, out_shape) -> "Letterbox":
        (h, w), (oh, ow) = in_shape[:2], out_shape
        scale = min(oh / h, ow / w)
        nh, nw = int(round(h * scale)), int(round(w * scale))
        return cls(tuple(in_shape[:2]), tuple(out_shape), scale, (oh - nh) // 2, (ow - nw) // 2)

    @property
    def inner_shape(self) -> tuple:
        h, w = self.in_shape
        return int(round(h * self.scale)), int(round(w * self.scale))

    def points(self, x, y):
        """Map pixel coordinates of the input image to the output image."""
        return np.asarray(x) * self.scale + self.left, np.asarray(y) * self.scale + self.top

    def apply(self, image: np.ndarray, interpolation: str = "bicubic") -> np.ndarray:
        out = np.zeros(self.out_shape, image.dtype)
        nh, nw = self.inner_shape
        interp = "area" if self.scale < 1 and interpolation != "nearest" else interpolation
        out[self.top:self.top + nh, self.left:self.left + nw] = resize(image, (nh, nw), interp)
        return out


def letterbox(image: np.ndarray, out_shape=MTUNET_SHAPE, interpolation: str = "bicubic"):
    """Return ``(padded image, Letterbox)``."""
    lb = Letterbox.fit(image.shape, out_shape)
    return lb.apply(image, interpolation), lb


def pixel_moments(image) -> tuple[int, float, float]:
    """An image's pixel count, mean and sum of squared deviations from the mean (float64)."""
    x = np.asarray(image, np.float64).ravel()
    mean = float(x.mean())
    return x.size, mean, float(((x - mean) ** 2).sum())


@dataclass
class MeanNormalizer:
    """``(x - mean) / std`` with the mean and standard deviation of the training split's pixels.

    The paper says "mean normalization"; dividing by the standard deviation as well keeps inputs
    at unit scale for every dataset. Fit on training images only (the leakage guard)."""

    mean: float
    std: float

    @classmethod
    def fit(cls, images) -> "MeanNormalizer":
        """Mean/std over an iterable of float images, streamed."""
        return cls.from_moments(pixel_moments(img) for img in images)

    @classmethod
    def from_moments(cls, moments) -> "MeanNormalizer":
        """Mean/std from per-image :func:`pixel_moments`, merged in order with Chan et al.'s
        parallel update (so workers can compute them and the merge needs no pixels)."""
        n, mean, m2 = 0, 0.0, 0.0
        for nb, mb, m2b in moments:
            delta = mb - mean
            tot = n + nb
            mean += delta * nb / tot
            m2 += m2b + delta**2 * n * nb / tot
            n = tot
        if n == 0:
            raise ValueError("MeanNormalizer.fit: no training images")
        return cls(mean, float(np.sqrt(m2 / n)) or 1.0)

    def __call__(self, x):
        return (x - self.mean) / self.std

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "MeanNormalizer":
        d = json.loads(text)
        return cls(float(d["mean"]), float(d["std"]))
