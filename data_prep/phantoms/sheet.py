"""Contact sheet of the phantoms: a real PA radiograph beside phantom patients, one sample per
class with masks and gaze overlaid, and the Doppler strips."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from data_prep.io import atomic_write_bytes
from data_prep.phantoms.cxr import render_cxr
from data_prep.phantoms.doppler import DEFECTS, FLOW_TYPES, render_doppler
from data_prep.phantoms.gaze import regions_of, simulate_fixations
from data_prep.plotting import pyplot


def _contour(ax, mask, color):
    if mask.any():
        ax.contour(mask, levels=[0.5], colors=[color], linewidths=0.8)


def real_radiograph(path=None):
    """``(image, name)`` of a real chest radiograph: ``path``, or pydicom-data's ``RG1_UNCR.dcm``
    (a PA computed radiograph) when that package is installed; ``(None, None)`` otherwise."""
    from data_prep.io import read_image
    if path is None:
        try:
            from pydicom.data import get_testdata_file
            path = get_testdata_file("RG1_UNCR.dcm")
        except (ImportError, ValueError, OSError):
            path = None
        if path is None:
            return None, None
    return read_image(path), Path(path).name


def contact_sheet(out, seed: int = 0, size: int = 256, real=None) -> Path:
    """Draw a 5×5 grid: a real radiograph (``real``, default pydicom-data's RG1_UNCR.dcm when
    installed) beside four phantom patients, CXR findings, gaze readings, Doppler flows, Doppler
    defects."""
    plt = pyplot()

    from data_prep.transforms import resize

    fig, grid = plt.subplots(5, 5, figsize=(15, 16.5))
    image, name = real_radiograph(real)
    if image is not None:
        grid[0, 0].imshow(resize(image, (size, size)), cmap="gray", vmin=0, vmax=1)
        grid[0, 0].set_title(f"REAL: {name}\n{image.shape[1]}×{image.shape[0]} resized to {size}²")
    else:
        grid[0, 0].set_axis_off()
    patients = [("adult", (size, size), False), ("adult, Montgomery shape", (int(size * 1.2), size), False),
                ("adult", (size, size), False), ("child, Kermany shape", (size, int(size * 1.3)), True)]
    for k, (ax, (what, shape, pediatric)) in enumerate(zip(grid[0, 1:], patients)):
        ph = render_cxr(np.random.SeedSequence([seed, 1000 + k]), shape, "normal", pediatric=pediatric)
        ax.imshow(ph.image, cmap="gray", vmin=0, vmax=1)
        ax.set_title(f"phantom, normal {what}\nlungs {ph.lungs.mean():.2f} of the image, CTR {ph.ctr:.2f}")
    axes = grid[1:]
    ss = np.random.SeedSequence(seed)
    seeds = iter(ss.spawn(20))
    for ax, finding in zip(axes[0], ["normal", "tb", "bacterial", "viral", "enlarged_heart"]):
        ph = render_cxr(next(seeds), (size, size), finding, severity=None if finding == "normal" else 0.7)
        ax.imshow(ph.image, cmap="gray", vmin=0, vmax=1)
        _contour(ax, ph.lungs, "lime")
        _contour(ax, ph.finding_mask if finding != "enlarged_heart" else ph.heart, "red")
        ax.set_title(f"CXR {finding}  CTR {ph.ctr:.2f}" + (f"  sev {ph.severity:.2f}" if ph.severity else ""))

    gaze_cases = [("normal", "normal"), ("CHF", "enlarged_heart"), ("pneumonia", "bacterial"),
                  ("pneumonia", "viral")]
    shape = (int(size * 1.2), size)
    for ax, (label, finding) in zip(axes[1], gaze_cases):
        ph = render_cxr(next(seeds), shape, finding, severity=None if finding == "normal" else 0.7)
        fix = simulate_fixations(next(seeds), regions_of(ph), label, shape)
        on = fix["x"] >= 0
        ax.imshow(ph.image, cmap="gray", vmin=0, vmax=1)
        ax.plot(fix["x"][on], fix["y"][on], "-", color="yellow", lw=0.5, alpha=0.6)
        ax.scatter(fix["x"][on], fix["y"][on], s=fix["duration"][on] * 120, facecolors="none",
                   edgecolors="yellow", linewidths=0.8)
        _contour(ax, ph.finding_mask, "red")
        ax.set_title(f"gaze: {label} ({finding}), {on.sum()} fixations")
    ph = render_cxr(next(seeds), (size, int(size * 1.3)), "bacterial", severity=0.7, pediatric=True)
    axes[1, 4].imshow(ph.image, cmap="gray", vmin=0, vmax=1)
    _contour(axes[1, 4], ph.finding_mask, "red")
    axes[1, 4].set_title("Kermany-style pediatric, bacterial")

    for ax, flow in zip(axes[2], FLOW_TYPES):
        ph = render_doppler(next(seeds), (size, size), flow, "good")
        ax.imshow(ph.image, cmap="gray", vmin=0, vmax=1)
        _contour(ax, ph.envelope_mask, "lime")
        ax.set_title(f"Doppler {flow} good, peak {ph.peak_velocity:+.2f} m/s")
    for ax, flow in zip(axes[2, 3:], ["MV", "TR"]):
        ph = render_doppler(next(seeds), (size, size), flow, "low")
        ax.imshow(ph.image, cmap="gray", vmin=0, vmax=1)
        ax.set_title(f"Doppler {flow} low: {', '.join(ph.defects)}")
    for ax, defect in zip(axes[3], DEFECTS + ("good",)):
        # draw low-quality strips until one shows the defect wanted (the choice is random)
        for k in range(200):
            ph = render_doppler(np.random.SeedSequence([seed, k, 7]), (size, size), "MV",
                                "good" if defect == "good" else "low")
            if defect == "good" or ph.defects == [defect]:
                break
        ax.imshow(ph.image, cmap="gray", vmin=0, vmax=1)
        ax.set_title(f"MV quality: {defect}")
    for ax in grid.ravel():
        ax.set_xticks([]), ax.set_yticks([])
        ax.title.set_fontsize(9)
    fig.suptitle(f"Phantom datasets (seed {seed}): top row a real radiograph beside phantoms; below, lungs "
                 "green, findings red, gaze yellow (circle area ∝ fixation duration)", fontsize=12)
    fig.tight_layout(rect=(0, 0, 1, 0.985))
    out = Path(out)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=72)
    plt.close(fig)
    atomic_write_bytes(out, buf.getvalue())
    return out
