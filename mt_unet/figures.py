"""MT-UNet's figures: training curves (Figures 2–3: both losses, σ_s, σ_c and the learning rate,
with the RLRP resets marked) and saliency overlays (Table 4: ground truth and prediction in the
jet colormap over the chest X-ray)."""
from __future__ import annotations

import io

import numpy as np
import pandas as pd

from data_prep.io import atomic_write_bytes
from data_prep.plotting import pyplot


def _save(fig, path, dpi=100) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    pyplot().close(fig)
    atomic_write_bytes(path, buf.getvalue())


def training_curves(history: pd.DataFrame, path, title: str = "") -> None:
    """One panel per task loss (train and validation), one for the σ values, one for the
    learning rate; dashed lines mark the epochs where RLRP cut the rate and reset the weights."""
    plt = pyplot()
    h = pd.DataFrame(history)
    tasks = [c[len("train_"):] for c in h.columns if c.startswith("train_")]
    sigmas = [c for c in h.columns if c.startswith("sigma_")]
    panels = len(tasks) + (1 if sigmas else 0) + 1
    fig, axes = plt.subplots(1, panels, figsize=(3.3 * panels, 2.8), squeeze=False)
    axes = axes[0]
    resets = h.loc[h.get("lr_cut", pd.Series(False, index=h.index)).astype(bool), "epoch"].tolist()
    for ax, t in zip(axes, tasks):
        ax.plot(h.epoch, h[f"train_{t}"], label="train")
        ax.plot(h.epoch, h[f"val_{t}"], label="validation")
        ax.set_title(f"{t} loss", fontsize=9)
        ax.legend(fontsize=7)
    if sigmas:
        ax = axes[len(tasks)]
        for c in sigmas:
            ax.plot(h.epoch, h[c], label=c.replace("sigma_", "σ "))
        ax.set_title("σ", fontsize=9)
        ax.legend(fontsize=7)
    ax = axes[-1]
    ax.semilogy(h.epoch, h["lr"])
    ax.set_title("learning rate", fontsize=9)
    for ax in axes:
        ax.set_xlabel("epoch", fontsize=8)
        for e in resets:
            ax.axvline(e, color="grey", linestyle="--", linewidth=0.8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    _save(fig, path)


def jet_overlay(image: np.ndarray, heat: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """RGB uint8: ``heat`` (scaled to its maximum) in OpenCV's jet colormap blended over the
    grey ``image`` (scaled to its range)."""
    import cv2
    img = np.squeeze(image).astype(np.float32)
    img = (img - img.min()) / max(float(img.max() - img.min()), 1e-12)
    h = np.squeeze(heat).astype(np.float32)
    h = h / max(float(h.max()), 1e-12)
    colour = cv2.cvtColor(cv2.applyColorMap((h * 255).astype(np.uint8), cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
    grey = np.repeat((img * 255)[..., None], 3, axis=-1)
    return ((1 - alpha) * grey + alpha * colour).clip(0, 255).astype(np.uint8)


def saliency_overlays(path, images, truths, preds, titles=None) -> None:
    """One row per image: the X-ray, the ground-truth gaze map over it, the prediction over it."""
    plt = pyplot()
    n = len(images)
    fig, axes = plt.subplots(n, 3, figsize=(6.6, 2.6 * n * images[0].shape[0] / images[0].shape[1] / 1.5 + 0.4),
                             squeeze=False)
    for i in range(n):
        panels = (np.squeeze(images[i]), jet_overlay(images[i], truths[i]), jet_overlay(images[i], preds[i]))
        for j, (ax, p) in enumerate(zip(axes[i], panels)):
            ax.imshow(p, cmap="gray" if j == 0 else None)
            ax.axis("off")
            if i == 0:
                ax.set_title(("image", "ground truth", "prediction")[j], fontsize=8)
        if titles:
            axes[i][0].set_ylabel(titles[i], fontsize=7)
            axes[i][0].text(0, -2, titles[i], fontsize=7)
    fig.tight_layout()
    _save(fig, path)
