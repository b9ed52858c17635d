"""How much do the chest X-ray phantoms look like *your* radiographs? Side-by-side statistics.

``python -m data_prep.phantoms realism --real DIR [--masks DIR] [--n 100] [--out DIR]`` reads
every image under ``DIR`` (PNG, JPEG, TIFF, BMP or DICOM, through :func:`data_prep.io.read_image`),
resizes it to 256² as ``prepare`` does, renders ``--n`` phantoms (half normal, half TB, as in
the Shenzhen and Montgomery layouts) and compares:

* the grey-level histogram: mean, spread, quantiles, and the distance between the pooled
  histograms (Jensen–Shannon divergence, base 2, and the earth mover's distance in grey levels);
* the radial power spectrum: the slope β of ``log P(f) ∝ -β log f`` between 4 and 64 cycles per
  image (natural images and radiographs have β ≈ 2–3.5; a flat or blotchy phantom does not);
* the lung-mask area fraction (quartiles of the non-empty masks) and the share of masks with
  exactly two connected components: always for the phantoms and for the published PA masks
  (517 v7labs masks, issue 18), for the real images with ``--masks``. A mask belongs to the
  image with the same file stem, optionally suffixed ``_mask`` (``X.png`` ↔ ``X_mask.png``;
  ``leftMask/X.png`` + ``rightMask/X.png`` are united).

It writes ``realism.md`` (a Markdown table) and
``realism.png`` (histograms, spectra, area fractions and an example of each) into ``--out``.
"""
from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage

from data_prep.io import atomic_write_bytes, atomic_write_text, read_image, read_mask
from data_prep.phantoms.cxr import render_cxr
from data_prep.plotting import pyplot
from data_prep.transforms import resize, resize_mask

log = logging.getLogger(__name__)

SIZE = 256
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".dcm", ".dicom")
BINS = 64
SPECTRUM_BAND = (4, 64)  # cycles per image over which the spectral slope is fitted
COUNTS = ("images", "masks", "empty masks")
# Lung masks of real PA films (517 public v7labs masks resized to 256², the non-empty ones)
PUBLISHED = {"lung area q25": 0.31, "lung area q50": 0.36, "lung area q75": 0.43, "exactly two components": 0.99}


def image_files(folder) -> list:
    """Image files under ``folder`` (recursively), sorted."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: folder not found")
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def masks_for(images: list, mask_folder) -> dict:
    """``{image path: [mask paths]}``: masks whose stem is the image's stem, optionally with a
    ``_mask`` suffix (several files, e.g. left and right lungs, are united later)."""
    by_stem: dict = {}
    for m in image_files(mask_folder):
        stem = m.stem[:-5] if m.stem.endswith("_mask") else m.stem
        by_stem.setdefault(stem, []).append(m)
    return {p: by_stem[p.stem] for p in images if p.stem in by_stem}


def radial_spectrum(img: np.ndarray) -> tuple:
    """Radially averaged power spectrum of a square image (Hann-windowed, mean removed):
    frequencies in cycles per image and the mean power at each."""
    n = img.shape[0]
    win = np.outer(np.hanning(n), np.hanning(img.shape[1]))
    f = np.fft.fftshift(np.fft.fft2((img - img.mean()) * win))
    power = np.abs(f) ** 2
    yy, xx = np.indices(power.shape)
    r = np.hypot(yy - n // 2, xx - img.shape[1] // 2).astype(int)
    sums = np.bincount(r.ravel(), power.ravel())
    counts = np.bincount(r.ravel())
    freqs = np.arange(1, n // 2)
    return freqs, sums[1:n // 2] / np.maximum(counts[1:n // 2], 1)


def spectral_slope(img: np.ndarray, band=SPECTRUM_BAND) -> float:
    """β in ``P(f) ∝ f^-β`` fitted (least squares in log–log) over ``band`` cycles per image."""
    freqs, power = radial_spectrum(img)
    keep = (freqs >= band[0]) & (freqs <= band[1]) & (power > 0)
    return float(-np.polyfit(np.log(freqs[keep]), np.log(power[keep]), 1)[0])


def mask_stats(mask: np.ndarray) -> tuple:
    """Area fraction and number of 4-connected components of a mask at 256²."""
    m = resize_mask(mask, (SIZE, SIZE))
    return float(m.mean()), int(ndimage.label(m)[1])


def _histogram(images) -> np.ndarray:
    h = sum(np.histogram(im, BINS, (0.0, 1.0))[0] for im in images).astype(np.float64)
    return h / max(h.sum(), 1.0)


def _js(p: np.ndarray, q: np.ndarray) -> float:
    m = 0.5 * (p + q)

    def kl(a, b):
        keep = a > 0
        return float(np.sum(a[keep] * np.log2(a[keep] / b[keep])))
    return 0.5 * kl(p, m) + 0.5 * kl(q, m)


def _emd(p: np.ndarray, q: np.ndarray) -> float:
    """Earth mover's distance between two histograms on [0, 1], in grey levels (0..255)."""
    return float(np.abs(np.cumsum(p - q)).sum() / BINS * 255)


def _column(images, masks) -> dict:
    """One column of the table; the mask rows are NaN where there are no masks."""
    pixels = np.concatenate([im.ravel() for im in images])
    slopes = [spectral_slope(im) for im in images]
    col = {"images": len(images),
           "grey mean": pixels.mean(), "grey std": pixels.std(),
           "grey q05": np.quantile(pixels, 0.05), "grey q50": np.quantile(pixels, 0.5),
           "grey q95": np.quantile(pixels, 0.95),
           "spectral slope β (mean)": float(np.mean(slopes)), "spectral slope β (sd)": float(np.std(slopes)),
           "masks": np.nan, "lung area q25": np.nan, "lung area q50": np.nan, "lung area q75": np.nan,
           "empty masks": np.nan, "exactly two components": np.nan}
    if masks is None:
        return col
    stats = [mask_stats(m) for m in masks]
    fr = np.array([a for a, _ in stats], dtype=np.float64)
    comps = np.array([c for _, c in stats])
    nonempty = fr > 0
    col.update({"masks": len(masks), "empty masks": int((~nonempty).sum())})
    if nonempty.any():
        q = np.quantile(fr[nonempty], [0.25, 0.5, 0.75])
        col.update({"lung area q25": q[0], "lung area q50": q[1], "lung area q75": q[2],
                    "exactly two components": float(np.mean(comps[nonempty] == 2))})
    return col


def compare(real_dir, mask_dir=None, n: int = 100, seed: int = 0) -> tuple:
    """Return ``(table, data)``: the statistics of phantoms and real images side by side (a
    DataFrame indexed by statistic) and the arrays the figure draws."""
    files = image_files(real_dir)
    if not files:
        raise FileNotFoundError(f"{real_dir}: no images ({', '.join(IMAGE_SUFFIXES)})")
    real = [resize(read_image(p), (SIZE, SIZE)) for p in files]
    real_masks = None
    if mask_dir is not None:
        pairs = masks_for(files, mask_dir)
        real_masks = [read_mask(pairs[p]) for p in files if p in pairs]
        log.info("%d of %d real images have masks", len(real_masks), len(files))
    seeds = np.random.SeedSequence(seed).spawn(n)
    phantoms = [render_cxr(s, (SIZE, SIZE), "tb" if i % 2 else "normal") for i, s in enumerate(seeds)]
    ph_images = [p.image for p in phantoms]
    ph_masks = [p.lungs for p in phantoms]

    cols = {"phantoms": _column(ph_images, ph_masks), "real": _column(real, real_masks),
            "published PA masks": PUBLISHED}
    hp, hr = _histogram(ph_images), _histogram(real)
    table = pd.DataFrame(cols).reindex(list(cols["phantoms"]))
    table.loc["histogram JS divergence (bits)"] = [_js(hp, hr), 0.0, np.nan]
    table.loc["histogram EMD (grey levels)"] = [_emd(hp, hr), 0.0, np.nan]
    data = {"hist": (hp, hr),
            "spectra": ([radial_spectrum(im) for im in ph_images], [radial_spectrum(im) for im in real]),
            "examples": (ph_images[0], real[0]),
            "areas": ([mask_stats(m)[0] for m in ph_masks], [mask_stats(m)[0] for m in real_masks or []])}
    return table, data


def to_markdown(table: pd.DataFrame) -> str:
    """``table`` as a pipe table (:meth:`pandas.DataFrame.to_markdown`), numbers right-aligned:
    counts as integers, the rest to three decimals."""
    def cell(idx, v):
        if pd.isna(v):
            return ""
        return f"{int(v)}" if idx in COUNTS else f"{v:.3f}"

    cells = pd.DataFrame([[cell(idx, table.loc[idx, c]) for c in table.columns] for idx in table.index],
                         index=pd.Index([str(i) for i in table.index], name="statistic"),
                         columns=[str(c) for c in table.columns])
    return cells.to_markdown(disable_numparse=True, colalign=["left"] + ["right"] * len(table.columns))


def figure(data: dict, path) -> Path:
    plt = pyplot()

    fig, axes = plt.subplots(1, 5, figsize=(20, 3.8))
    centres = (np.arange(BINS) + 0.5) / BINS
    for h, name in zip(data["hist"], ("phantoms", "real")):
        axes[0].plot(centres, h, label=name)
    axes[0].set(title="grey-level histogram", xlabel="grey level", ylabel="fraction of pixels")
    axes[0].legend()
    for spectra, name in zip(data["spectra"], ("phantoms", "real")):
        freqs = spectra[0][0]
        axes[1].loglog(freqs, np.mean([p for _, p in spectra], axis=0), label=name)
    axes[1].axvspan(*SPECTRUM_BAND, color="0.9")
    axes[1].set(title="radial power spectrum", xlabel="cycles per image", ylabel="power")
    axes[1].legend()
    for areas, name in zip(data["areas"], ("phantoms", "real")):
        if len(areas):
            axes[2].hist(areas, bins=24, range=(0, 0.6), alpha=0.6, label=f"{name} ({len(areas)})")
    for q in (0.31, 0.36, 0.43):
        axes[2].axvline(q, color="k", ls=":", lw=0.8)
    axes[2].set(title="lung-mask area fraction (256²); published quartiles dotted", xlabel="fraction")
    axes[2].legend()
    for ax, im, name in zip(axes[-2:], data["examples"], ("phantom", "real")):
        ax.imshow(im, cmap="gray", vmin=0, vmax=1)
        ax.set(title=name, xticks=[], yticks=[])
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    path = Path(path)
    atomic_write_bytes(path, buf.getvalue())
    return path


def run(real_dir, out, mask_dir=None, n: int = 100, seed: int = 0) -> str:
    """Compare, write ``out/realism.md`` and ``out/realism.png``, and return the Markdown."""
    table, data = compare(real_dir, mask_dir, n=n, seed=seed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    text = (f"# Phantoms vs real images\n\nReal: `{real_dir}`" + (f", masks: `{mask_dir}`" if mask_dir else "")
            + f"; {n} phantoms (seed {seed}); all at {SIZE}².\n\n" + to_markdown(table) + "\n")
    atomic_write_text(out / "realism.md", text)
    figure(data, out / "realism.png")
    return text
