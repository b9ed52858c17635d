"""Scoring a fine-tuned UMS-Rep model and its derived outputs (Sections 4.1.2-4.1.3, 4.2.2-4.2.3).

* :func:`score_task` — one task's test metrics (accuracy, F-score, MCC and AUC, or IoU/Dice) and
  its per-image table (classification: correctness, for McNemar's test; segmentation: Dice and
  both IoUs, for the paired Wilcoxon test);
* :func:`fold_ensemble` — the fold models' soft vote on the test set (mean probabilities), scored,
  with each fold's metrics as mean ± std;
* :func:`grad_cam_figure` — Grad-CAM overlays of the first classification head (Section 4.1.3);
* :func:`recommendation` — the echo recommendation of good-quality images of one flow type
  (Section 4.2.3);
* :func:`summary` — the few lines a finished run prints.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from data_prep.io import atomic_write_text, read_image
from ums_rep import derive, metrics
from ums_rep.models import feature_layer
from ums_rep.tasks import FLOW_CLASSES, Spec

ENSEMBLE = "mean of the fold models' test probabilities (soft vote)"


def predict(model, ds) -> np.ndarray:
    """The model's outputs on a ``(x, y)`` dataset."""
    return model.predict(ds.map(lambda x, y: x), verbose=0)


def score_task(spec: Spec, probs: np.ndarray, rows: pd.DataFrame, test_root: Path) -> tuple[dict, pd.DataFrame]:
    """Metrics and per-image predictions of one task: classification ``id, truth, pred, correct,
    p_<class>``; segmentation ``id, dice, iou, iou_mean`` (:func:`ums_rep.metrics.segmentation_per_image`)."""
    t = spec.task
    ids = rows["id"].to_numpy()
    if t.kind == "segmentation":
        truth = np.stack([read_image(test_root / p) for p in rows["mask"]]) > 0.5
        pred = probs[..., 0] > 0.5
        m = metrics.segmentation(truth, pred)
        per_image = metrics.segmentation_per_image(truth, pred)
        return m, pd.DataFrame({"id": ids, **per_image})
    lookup = {c: i for i, c in enumerate(t.classes)}
    y = rows[spec.label_column].astype(str).map(lookup).to_numpy()
    yhat = probs.argmax(1)
    m = metrics.classification(y, yhat)
    m["majority_accuracy"] = float(np.bincount(y, minlength=len(t.classes)).max() / len(y))
    if len(np.unique(y)) > 1:
        m.update(metrics.auc(y, probs, t.classes))
    table = pd.DataFrame({"id": ids, "truth": y, "pred": yhat, "correct": y == yhat,
                          **{f"p_{c}": probs[:, i] for i, c in enumerate(t.classes)}})
    return m, table


LEARNED_IOU = 0.5  # a segmentation head has learned when its validation IoU reaches this


def learned(metrics_: dict) -> bool:
    """Whether a head has learned, from its validation metrics: a classification head beats the
    majority-class rate of its validation fold, a segmentation head reaches IoU
    :data:`LEARNED_IOU`. Arms of a comparison are compared only when every head has (a baseline
    that does not learn is a broken experiment, not a finding)."""
    if "iou" in metrics_:
        return bool(metrics_["iou"] >= LEARNED_IOU)
    return bool(metrics_["accuracy"] > metrics_["majority_accuracy"])


def mean_std(per_fold: list) -> tuple[dict, dict]:
    """Mean and sample standard deviation over the folds of every scalar metric they all have."""
    keys = [k for k in per_fold[0] if all(k in m and np.isscalar(m[k]) for m in per_fold)]
    return ({k: float(np.mean([m[k] for m in per_fold])) for k in keys},
            {k: float(np.std([m[k] for m in per_fold], ddof=1)) if len(per_fold) > 1 else 0.0 for k in keys})


def fold_ensemble(spec: Spec, per_fold_probs: list, per_fold_metrics: list, rows: pd.DataFrame, test_root: Path,
                  out: Path) -> dict:
    """The task's test metrics from the fold ensemble (:data:`ENSEMBLE`; its per-image table is
    written to ``out/predictions_<task>.csv``) and the folds' mean ± std."""
    m, table = score_task(spec, np.mean(per_fold_probs, axis=0), rows, test_root)
    atomic_write_text(Path(out) / f"predictions_{spec.task.name}.csv", table.to_csv(index=False))
    mean, std = mean_std(per_fold_metrics)
    return {"metrics": m, "fold_mean": mean, "fold_std": std}


def grad_cam_figure(out: Path, specs, models: dict, prepared, test_rows: dict, probs: dict) -> Path | None:
    """Grad-CAM overlays of four test images for the first classification task (one fold's model;
    Section 4.1.3), titled with the true and the predicted class; ``out/gradcam_<task>.png``, or
    None where there is no classification task or no feature layer to explain."""
    cls = [s for s in specs if s.task.kind == "classification"]
    if not cls:
        return None
    s = cls[0]
    model = models[s.task.name]
    rows = test_rows[s.task.name].head(4)
    layer = feature_layer(model)
    if layer is None:  # (a baseline model wrapping a denoiser has no such top-level layer)
        return None
    raw = np.stack([read_image(prepared.root / p) for p in rows.image])
    x = prepared.normalizer(raw)[..., None].astype("float32")
    heat = derive.grad_cam(model, x, layer)
    p = probs[s.task.name][-1][: len(rows)]
    classes = s.task.classes
    titles = [f"true {t} / pred {classes[int(np.argmax(q))]} ({q.max():.2f})"
              for t, q in zip(rows[s.label_column].astype(str), p)]
    path = Path(out) / f"gradcam_{s.task.name}.png"
    derive.overlay_png(path, raw, heat, titles)
    return path


def recommendation(out: Path, flow_rows: pd.DataFrame, flow_probs: list, quality_probs: list, flow: str) -> pd.DataFrame:
    """The echo recommendation (Section 4.2.3) from the fold ensembles of the flow head and of the
    quality head on the flow test images: ``out/recommendation.csv``."""
    p_flow = np.mean(flow_probs, axis=0)
    q = np.mean(quality_probs, axis=0)
    keep = derive.recommend(p_flow, q, flow=flow)
    rec = pd.DataFrame({"id": flow_rows["id"].to_numpy(), "flow_pred": np.array(FLOW_CLASSES)[p_flow.argmax(1)],
                        "p_good": q[:, 1], "recommended": keep})
    atomic_write_text(Path(out) / "recommendation.csv", rec.to_csv(index=False))
    return rec


def summary(out: Path, strategy: str, task_set: str, body: dict) -> str:
    """A short per-task summary of a finished run: each test metric beside the majority-class rate."""
    lines = [f"{strategy} on {task_set} ({body['config']['folds']} fold(s), test = {ENSEMBLE}):"]
    for t, r in body["tasks"].items():
        m = r["metrics"]
        if "iou" in m:
            lines.append(f"  {t:<20} IoU {m['iou']:.3f} (mean over both classes {m.get('iou_mean', float('nan')):.3f})"
                         f"  Dice-F {m.get('f_score', float('nan')):.3f}")
        elif "accuracy" in m:
            lines.append(f"  {t:<20} accuracy {m['accuracy']:.3f} (majority class {m['majority_accuracy']:.3f})"
                         + (f"  AUC {m['auc']:.3f}" if "auc" in m else ""))
    for t, r in body["tasks"].items():
        flags = r.get("learned_on_validation", [])
        if flags and not all(flags):
            lines.append(f"  WARNING {t}: did not learn on validation fold(s) "
                         f"{[k for k, ok in enumerate(flags) if not ok]} (majority class / IoU {LEARNED_IOU})")
    counted = f" (with the {body['source']['role']})" if body.get("source") else ""
    lines.append(f"  cost: {body['total_train_seconds']:.0f} s, {body['total_params']:,} parameters{counted}")
    lines.append(f"  {out}: results.json, predictions_*.csv, model(s), normalizer.json, gradcam_*.png")
    return "\n".join(lines)
