"""Scoring MT-UNet-family models on the eye-gaze data (MT-UNet Section 5, Tables 1–3).

Saliency: KLD, CC and HS per image, median over images (the authors' code); classification:
accuracy, Hand & Till multi-class AUC and one-vs-rest AUC per class (Y1 normal, Y2 enlarged
heart / CHF, Y3 pneumonia). :func:`evaluate` scores a model on rows of the prepared data (what
training does on its test split); :func:`evaluate_saved` scores a saved model on the data its
run was trained on (``python -m mt_unet.evaluate``).
"""
from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from data_prep.egd import CLASSES
from data_prep.io import atomic_write_text
from mt_unet.data import dataset, egd_data, evaluation_settings
from mt_unet.figures import saliency_overlays
from mt_unet.inference import MODEL_KIND
from mt_unet.tasks import DISEASE, SALIENCY
from ums_rep import metrics
from ums_rep.runs import load_model, run_dir, write_json

log = logging.getLogger("mt_unet.evaluate")


def predict(model, prepared, rows, batch: int = 8):
    """``(outputs, truths)``: the model's outputs per task and the targets, as arrays."""
    tasks = tuple(model.output.keys()) if isinstance(model.output, dict) else ()
    ds = dataset(prepared, rows, batch, tasks=(SALIENCY, DISEASE), cache=False)
    outs, truths = {t: [] for t in tasks}, {"saliency": [], "label": [], "image": []}
    for x, y in ds:
        pred = model(x, training=False)
        for t in tasks:
            outs[t].append(np.asarray(pred[t]))
        truths["saliency"].append(y["saliency"].numpy())
        truths["label"].append(y["label"].numpy().argmax(-1))
        truths["image"].append(x.numpy())
    return {t: np.concatenate(v) for t, v in outs.items()}, {k: np.concatenate(v) for k, v in truths.items()}


def evaluate(model, prepared, rows, batch: int = 8):
    """``(metrics, per_image_table, arrays)`` of ``model`` on ``rows`` of the prepared eye-gaze data."""
    outs, truths = predict(model, prepared, rows, batch)
    table = pd.DataFrame({"id": rows["id"].to_numpy(), "truth": [CLASSES[i] for i in truths["label"]]})
    m = {}
    if SALIENCY in outs:
        m.update(metrics.saliency(truths["saliency"], outs[SALIENCY]))
        per = metrics.saliency_per_image(truths["saliency"], outs[SALIENCY])
        for k, v in per.items():
            table[k] = v
    if DISEASE in outs:
        probs = outs[DISEASE]
        y, yhat = truths["label"], probs.argmax(1)
        m["accuracy"] = metrics.classification(y, yhat)["accuracy"]
        if len(np.unique(y)) == len(CLASSES):
            m.update(metrics.auc(y, probs, CLASSES))
        else:
            log.warning("the evaluated split lacks a class (%s present); AUC not computed",
                        sorted(CLASSES[i] for i in np.unique(y)))
        table["pred"] = [CLASSES[i] for i in yhat]
        table["correct"] = y == yhat
        for i, c in enumerate(CLASSES):
            table[f"p_{c}"] = probs[:, i]
    return m, table, {"outputs": outs, "truths": truths}


def evaluate_saved(model_file, out=None, *, split: str = "test", batch: int = 8, preset: str | None = None,
                   data=None, seed: int | None = None) -> Path:
    """Score the saved model ``model_file`` on ``split`` of the eye-gaze data its ``mt_unet.train``
    run recorded (preset, ``--data``, ``--seed``; each overridden where given, see
    :func:`mt_unet.data.evaluation_settings`); writes ``results.json``, the per-image predictions
    and saliency overlays to the run folder ``out`` and returns it. A bad model file, a preset
    that does not fit the model or an unusable ``out`` raise ``ValueError`` (one line)."""
    model = load_model(model_file, expect=MODEL_KIND)
    settings = evaluation_settings(model_file, model.input.shape[1:3], preset=preset, data=data, seed=seed)
    log.info("data: preset %s, %s, seed %d (from %s)", settings.preset,
             "phantom" if settings.data is None else settings.data, settings.seed, settings.source)
    out = run_dir(out, "mt_unet-evaluate", "mt_unet.evaluate")
    prepared = egd_data(settings.data, settings.preset, settings.shape, settings.seed)
    rows = prepared.rows(split)
    m, table, arrays = evaluate(model, prepared, rows, batch)
    atomic_write_text(out / f"predictions_{split}.csv", table.to_csv(index=False))
    write_json(out / "results.json", {"command": "mt_unet.evaluate", "model": str(model_file), "split": split,
                                      "n_images": len(rows), "metrics": m, "preset": settings.preset,
                                      "data": "phantom" if settings.data is None else str(settings.data),
                                      "seed": settings.seed, "settings_from": settings.source,
                                      "prepared": prepared.info["prepared"]})
    if SALIENCY in arrays["outputs"]:
        k = min(4, len(rows))
        saliency_overlays(out / "saliency_overlays.png", arrays["truths"]["image"][:k],
                          arrays["truths"]["saliency"][:k], arrays["outputs"][SALIENCY][:k])
    log.info("%s on %d %s images: %s", model_file, len(rows), split, ", ".join(f"{k} {v:.3f}" for k, v in m.items()))
    return out


def chance_levels(truths: dict) -> dict:
    """What a model that learned nothing scores on these targets: the majority class's rate
    (accuracy) and the median KLD of the uniform saliency map (every pixel equal).

    Args:
        truths: ``{"saliency": (n, H, W, 1) maps, "label": (n,) class indices}`` (:func:`predict`).

    Returns:
        ``{"accuracy": majority rate, "kld": median KLD of the uniform map}``."""
    from scipy.stats import ConstantInputWarning
    counts = np.bincount(truths["label"], minlength=len(CLASSES))
    sal = np.asarray(truths["saliency"])
    with warnings.catch_warnings():  # the uniform map's CC is undefined (constant), and not used here
        warnings.simplefilter("ignore", ConstantInputWarning)
        uniform = metrics.saliency(sal, np.ones_like(sal))["kld"]
    return {"accuracy": float(counts.max() / counts.sum()), "kld": float(uniform)}


def learned(val_metrics: dict, chance: dict) -> dict:
    """Whether each task of a model learned on the validation split (the fair comparison's rule:
    an arm is compared only when it beats doing nothing): the disease head beats the majority
    class's rate, the saliency map has a lower median KLD than the uniform map.

    Args:
        val_metrics: the model's metrics on the validation split (:func:`evaluate`).
        chance: :func:`chance_levels` of the same split.

    Returns:
        ``{task: bool}`` for the tasks the model predicts."""
    out = {}
    if "accuracy" in val_metrics:
        out[DISEASE] = bool(val_metrics["accuracy"] > chance["accuracy"])
    if "kld" in val_metrics:
        out[SALIENCY] = bool(val_metrics["kld"] < chance["kld"])
    return out

