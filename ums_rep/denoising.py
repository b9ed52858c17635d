"""Denoising real images with a pretrained CDAE (``python -m ums_rep.denoise``), and scoring it.

A :class:`~ums_rep.inference.Predictor` of an ``ums_rep.pretrain --backbone cdae`` run denoises
a gray image in [0, 1] in one of two modes:

* ``model`` — at the model's input size, as :mod:`ums_rep.predict` does: the image is resized as
  ``data_prep.prepare`` does (bicubic, rounded to 8 bits), normalised with the run's
  ``normalizer.json``, denoised, and brought back to the original size (bicubic);
* ``tiled`` — at full resolution: the image (rounded to 8 bits) is cut into tiles of the model's
  input size overlapping by :data:`OVERLAP` of a side (the last tile of a row or column flush with
  the border; an image smaller than a tile is reflect-padded), each tile denoised, and the tiles
  blended with a separable sine window ``sin(π (i + ½) / n)`` — smooth, so no seams, and never
  zero — divided by the summed window, so the blend weights of every pixel sum to 1 (a model that
  returns its input gives the image back exactly).

With known noise (:func:`add_noise`: a ``data_prep.noise`` level, drawn from a stateless seed)
added to the clean input *at the resolution being denoised* (the model's size, or full
resolution), :func:`score` rates the noisy input, the CDAE output and scikit-image's non-local
means (:func:`classical`, the classical baseline of Table 2) against the clean image: PSNR, SSIM
and MS-SSIM from :func:`ums_rep.metrics.image_quality`. :func:`denoise_files` writes the PNGs and
``quality.csv``.
"""
from __future__ import annotations

import logging
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import tensorflow as tf

from data_prep.io import atomic_write_text, gray8, write_png
from data_prep.noise import NOISE_LEVELS, apply
from ums_rep import metrics
from ums_rep.inference import read_images, unique_stem
from ums_rep.runs import ModelFileError

log = logging.getLogger("ums_rep.denoising")

MODES = ("model", "tiled")
OVERLAP = 0.25  # of the tile side, in tiled mode
BATCH = 32  # tiles per model call


# --------------------------------------------------------------------------- classical denoisers

def classical(noisy: np.ndarray, methods=("nlm", "wavelet")) -> dict:
    """scikit-image's non-local means and BayesShrink wavelet denoisers on gray images in
    [0, 1] (one (H, W) image or a stack (N, H, W)), the noise σ estimated per image
    (``estimate_sigma``); NLM with ``h = 0.8 σ``, 5×5 patches, search distance 6, fast mode.

    Args:
        noisy: One gray image ``(H, W)`` or a stack ``(N, H, W)``, in [0, 1].
        methods: ``"nlm"`` and/or ``"wavelet"``.

    Returns:
        ``{method: denoised, clipped to [0, 1]}`` in the input's shape.
    """
    from skimage.restoration import denoise_nl_means, denoise_wavelet, estimate_sigma
    noisy = np.asarray(noisy, np.float64)
    stack = noisy[None] if noisy.ndim == 2 else noisy
    out = {m: [] for m in methods}
    for img in stack:
        sigma = float(estimate_sigma(img))
        if "nlm" in out:
            out["nlm"].append(denoise_nl_means(img, h=0.8 * sigma, sigma=sigma, patch_size=5, patch_distance=6,
                                               fast_mode=True))
        if "wavelet" in out:
            out["wavelet"].append(denoise_wavelet(img, method="BayesShrink", mode="soft", rescale_sigma=True))
    return {m: np.clip(np.array(v), 0, 1).reshape(noisy.shape) for m, v in out.items()}


# --------------------------------------------------------------------------- noise

def noise_seed(seed: int, name: str) -> tuple:
    """The stateless seed pair of one image's noise: ``(seed, crc32(name))``, so an image's noise
    depends on ``--seed`` and its output name only, not on the order of the images."""
    return int(seed), zlib.crc32(name.encode()) & 0x7FFFFFFF


def add_noise(image: np.ndarray, level: str, seed) -> np.ndarray:
    """``data_prep.noise.apply(image, level)`` with the stateless seed pair ``seed``: the same
    seed gives the same noise. ``level``: ``gaussian<σ>`` (σ on the 0–255 scale) or ``poisson``.

    Args:
        image: A gray image (or stack) in [0, 1].
        level: ``gaussian<σ>`` or ``poisson``.
        seed: A pair of integers, TensorFlow's stateless seed.

    Returns:
        The noisy image, same shape, float32.
    """
    x = tf.convert_to_tensor(np.asarray(image, np.float32))
    return apply(x, level, seed=tf.constant(seed, tf.int64)).numpy()


def check_noise(level: str) -> str:
    """``level`` if ``data_prep.noise.apply`` knows it, else ``ValueError`` (one line)."""
    if level == "poisson" or (level.startswith("gaussian") and level[8:].isdigit() and 0 < int(level[8:]) <= 255):
        return level
    raise ValueError(f"--noise {level}: unknown noise; expected gaussian<σ> (σ on the 0-255 scale, e.g. "
                     f"{', '.join(NOISE_LEVELS[:-1])}) or poisson")


# --------------------------------------------------------------------------- the denoiser

def denoiser(predictor):
    """The reconstruction head of ``predictor`` (a CDAE run's), or :class:`ModelFileError`
    naming the model file."""
    heads = [h for h in predictor.heads if h.task.kind == "reconstruction"]
    if not heads:
        what = ", ".join(f"{h.task.name} ({h.task.kind})" for h in predictor.heads)
        f = predictor.model_files[0] if predictor.model_files else predictor.run
        raise ModelFileError(f"{f}: not a denoiser (a {predictor.command} model predicting {what}); "
                             "denoise needs the CDAE of ums_rep.pretrain --backbone cdae")
    return heads[0]


def _run_model(predictor, images: np.ndarray, batch: int = BATCH) -> np.ndarray:
    """The CDAE on a stack of model-size images in [0, 1] (N, H, W): normalised with the run's
    normaliser, denoised, de-normalised. Not clipped."""
    model, norm = denoiser(predictor).model, predictor.normalizer
    outs = []
    for i in range(0, len(images), batch):
        x = norm(np.asarray(images[i:i + batch], np.float32))[..., None].astype(np.float32)
        y = model([x] if isinstance(model.input, list) else x, training=False)
        outs.append(np.asarray(y)[..., 0] * norm.std + norm.mean)
    return np.concatenate(outs).astype(np.float32)


def quantise(image: np.ndarray) -> np.ndarray:
    """Rounded to 8 bits, as the prepared PNGs the CDAE was trained on."""
    return (np.round(np.clip(image, 0, 1) * 255) / 255).astype(np.float32)


def model_input(predictor, image: np.ndarray) -> np.ndarray:
    """The clean image at the model's size: resized as ``prepare`` does, 8 bits."""
    return predictor.geometry.forward(np.asarray(image, np.float32))[0]


def denoise_small(predictor, small: np.ndarray) -> np.ndarray:
    """One model-size image in [0, 1] denoised (``model`` mode, at the model's size), in [0, 1]."""
    return np.clip(_run_model(predictor, np.asarray(small, np.float32)[None])[0], 0, 1)


def tile_starts(length: int, side: int, overlap: float = OVERLAP) -> list:
    """Start offsets of tiles of ``side`` covering ``[0, length)`` (``length >= side``), at most
    ``side - round(overlap · side)`` apart, the first at 0 and the last at ``length - side``."""
    if length <= side:
        return [0]
    step = max(1, side - int(round(overlap * side)))
    n = int(np.ceil((length - side) / step)) + 1
    return sorted({int(round(i * (length - side) / (n - 1))) for i in range(n)})


def window(shape) -> np.ndarray:
    """The blending window of a tile (H, W): a separable sine ``sin(π (i + ½) / n)``, 1 at the
    centre, small but positive at the border."""
    h, w = shape
    wy = np.sin(np.pi * (np.arange(h) + 0.5) / h)
    wx = np.sin(np.pi * (np.arange(w) + 0.5) / w)
    return np.outer(wy, wx).astype(np.float64)


def tile_weights(shape, tile, overlap: float = OVERLAP) -> np.ndarray:
    """The summed window over the tiles of an image of ``shape`` (at least ``tile``): what
    :func:`denoise_tiled` divides by, positive everywhere."""
    acc = np.zeros(shape, np.float64)
    win = window(tile)
    for y in tile_starts(shape[0], tile[0], overlap):
        for x in tile_starts(shape[1], tile[1], overlap):
            acc[y:y + tile[0], x:x + tile[1]] += win
    return acc


def denoise_tiled(predictor, image: np.ndarray, overlap: float = OVERLAP, batch: int = BATCH,
                  model_fn=None) -> np.ndarray:
    """One image in [0, 1] denoised at full resolution (``tiled`` mode): tiles of the model's
    input size, blended by :func:`window` and normalised by the summed window; the image's
    shape, in [0, 1]. ``model_fn`` (stack of tiles → stack) replaces the CDAE, for tests."""
    image = np.asarray(image, np.float32)
    th, tw = predictor.geometry.shape
    h, w = image.shape
    ph, pw = max(0, th - h), max(0, tw - w)
    padded = np.pad(image, ((0, ph), (0, pw)), mode="reflect" if (ph < h and pw < w) else "symmetric") \
        if ph or pw else image
    H, W = padded.shape
    boxes = [(y, x) for y in tile_starts(H, th, overlap) for x in tile_starts(W, tw, overlap)]
    run = model_fn or (lambda tiles: _run_model(predictor, tiles, batch))
    win = window((th, tw))
    acc = np.zeros((H, W), np.float64)
    norm = np.zeros((H, W), np.float64)
    for i in range(0, len(boxes), batch):
        chunk = boxes[i:i + batch]
        out = run(np.stack([padded[y:y + th, x:x + tw] for y, x in chunk]))
        for (y, x), t in zip(chunk, out):
            acc[y:y + th, x:x + tw] += win * t
            norm[y:y + th, x:x + tw] += win
    return np.clip(acc / norm, 0, 1)[:h, :w].astype(np.float32)


# --------------------------------------------------------------------------- scoring

def score(clean: np.ndarray, outputs: dict) -> list:
    """One row per output (``{method: image}``, each the clean image's shape): PSNR, SSIM and
    MS-SSIM against ``clean`` (:func:`ums_rep.metrics.image_quality`), and the PSNR gain over
    the ``noisy`` row where there is one."""
    rows = []
    for method, img in outputs.items():
        q = metrics.image_quality(np.asarray(clean, np.float32)[None], np.asarray(img, np.float32)[None])
        rows.append({"method": method, "psnr": q["psnr"], "ssim": q["ssim"], "ms_ssim": q["ms_ssim"]})
    base = next((r["psnr"] for r in rows if r["method"] == "noisy"), None)
    for r in rows:
        r["psnr_gain"] = r["psnr"] - base if base is not None else np.nan
    return rows


def pipe_table(table, floats: str = ".3f") -> str:
    """A Markdown pipe table of a DataFrame (what ``DataFrame.to_markdown`` writes, without its
    optional ``tabulate`` dependency)."""
    def cell(v):
        if isinstance(v, (float, np.floating)):
            return "" if np.isnan(v) else format(v, floats)
        return str(v)

    cols = list(table.columns)
    numeric = [np.issubdtype(table[c].dtype, np.number) for c in cols]
    lines = ["| " + " | ".join(map(str, cols)) + " |",
             "|" + "|".join("---:" if n else ":---" for n in numeric) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines)


# --------------------------------------------------------------------------- files

def denoise_image(predictor, image: np.ndarray, mode: str = "model", noise: str | None = None,
                  seed=(0, 0)) -> dict:
    """Denoise one gray image in [0, 1]. Returns ``denoised`` (the original size), and with
    ``noise``: ``clean``, ``noisy`` and ``outputs`` (noisy / cdae / nlm) at the resolution
    denoised, and ``noisy_full`` (the noisy input at the original size).

    Args:
        predictor: A :class:`ums_rep.inference.Predictor` of a CDAE pretraining run.
        image: A gray image in [0, 1], any size.
        mode: ``"model"`` (resized to the model's input, as ``prepare`` does) or ``"tiled"``
            (the full resolution, in overlapping tiles blended by a sine window).
        noise: ``gaussian<σ>`` or ``poisson`` to add before denoising; None: denoise as is.
        seed: The noise's stateless seed pair.

    Returns:
        ``{"denoised", ...}`` as above.

    Raises:
        ValueError: An unknown mode.
    """
    if mode not in MODES:
        raise ValueError(f"mode {mode!r}: expected one of {MODES}")
    image = np.asarray(image, np.float32)
    clean = model_input(predictor, image) if mode == "model" else quantise(image)
    noisy = add_noise(clean, noise, seed) if noise else clean
    den = denoise_small(predictor, noisy) if mode == "model" else denoise_tiled(predictor, noisy)
    back = (lambda a: np.clip(predictor.geometry.back(a, image.shape, None, "bicubic"), 0, 1)) \
        if mode == "model" else (lambda a: a)
    result = {"denoised": back(den)}
    if noise:
        result.update(clean=clean, noisy=noisy, noisy_full=back(noisy),
                      outputs={"noisy": noisy, "cdae": den, "nlm": classical(noisy, ("nlm",))["nlm"]})
    return result


def denoise_files(predictor, paths, out, mode: str = "model", noise: str | None = None, seed: int = 0) -> tuple:
    """Denoise every image of ``paths`` into ``out``: ``<stem>_denoised.png`` (the original
    size), with ``noise`` also ``<stem>_noisy.png`` (the noisy input, at the original size) and
    ``quality.csv`` (one row per image and method). An image that cannot be read is logged (one
    line) and skipped.

    Args:
        predictor: A :class:`ums_rep.inference.Predictor` of a CDAE pretraining run.
        paths: Image files.
        out: The output folder.
        mode: ``"model"`` or ``"tiled"`` (:func:`denoise_image`).
        noise: ``gaussian<σ>`` or ``poisson`` to add and score against; None: denoise as is.
        seed: Seeds each image's noise (with its file name).

    Returns:
        ``(quality table or None, failures [(path, message)])``.
    """
    denoiser(predictor)
    out = Path(out)
    if noise:
        check_noise(noise)
    rows, failures, used = [], [], set()
    for path, image in read_images(paths, failures):
        stem = unique_stem(path, used)
        res = denoise_image(predictor, image, mode, noise, noise_seed(seed, stem))
        write_png(out / f"{stem}_denoised.png", gray8(res["denoised"]))
        files = [f"{stem}_denoised.png"]
        if noise:
            write_png(out / f"{stem}_noisy.png", gray8(res["noisy_full"]))
            files.append(f"{stem}_noisy.png")
            h, w = res["clean"].shape
            for r in score(res["clean"], res["outputs"]):
                rows.append({"file": str(path), "output": stem, "mode": mode, "noise": noise, "seed": seed,
                             "height": h, "width": w, **r})
        log.info("%s (%dx%d, %s): %s", path, *image.shape, mode, ", ".join(files))
    table = pd.DataFrame(rows) if rows else None
    if table is not None:
        atomic_write_text(out / "quality.csv", table.to_csv(index=False))
    return table, failures
