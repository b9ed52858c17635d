"""Evaluation metrics, one home for both papers, computed with the libraries that define them.

* classification — accuracy, F-score, MCC (scikit-learn); multi-class AUC of Hand & Till
  (``roc_auc_score(multi_class="ovo")``) and one-vs-rest AUC per class;
* segmentation — pixel accuracy, F-score (= Dice) and IoU (Jaccard: foreground, and the mean
  over both classes) of binary masks (sklearn);
* image quality — PSNR, SSIM and MS-SSIM (``tf.image``) on images in [0, 1];
* saliency — KLD, CC (Pearson, scipy) and HS (histogram intersection Σ min(p, q));
* McNemar's test between two classifiers' per-image correctness (statsmodels, exact binomial
  when the discordant count is small).
"""
from __future__ import annotations

import numpy as np
from sklearn import metrics as skm


def classification(y_true, y_pred) -> dict:
    """Accuracy, F-score (binary: positive class 1; multi-class: macro) and MCC."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    binary = len(np.union1d(y_true, y_pred)) <= 2 and set(np.union1d(y_true, y_pred)) <= {0, 1}
    return {"accuracy": float(skm.accuracy_score(y_true, y_pred)),
            "f_score": float(skm.f1_score(y_true, y_pred, average="binary" if binary else "macro", zero_division=0)),
            "mcc": float(skm.matthews_corrcoef(y_true, y_pred))}


def segmentation(masks_true, masks_pred, threshold: float = 0.5) -> dict:
    """Pixel accuracy, F-score (Dice) and IoU over all pixels of the set (micro average): ``iou``
    of the foreground, and ``iou_mean``, the mean of the foreground's and the background's IoU
    (scikit-learn's ``jaccard_score(average="macro")``); plus the mean per-image foreground IoU.

    UMS-Rep's Tables 3 and 7 report an IoU above their F-score (lung 0.98 vs 0.96), which a
    foreground IoU cannot be (IoU ≤ Dice), so the papers' IoU is most likely the mean over both
    classes: the tables show both, labelled."""
    t = (np.asarray(masks_true) > 0.5).reshape(len(masks_true), -1)
    p = (np.asarray(masks_pred) > threshold).reshape(len(masks_pred), -1)
    per_image = [skm.jaccard_score(a, b, zero_division=1.0) for a, b in zip(t, p)]
    return {"accuracy": float(skm.accuracy_score(t.ravel(), p.ravel())),
            "f_score": float(skm.f1_score(t.ravel(), p.ravel(), zero_division=0)),
            "iou": float(skm.jaccard_score(t.ravel(), p.ravel(), zero_division=0)),
            "iou_mean": float(skm.jaccard_score(t.ravel(), p.ravel(), average="macro", labels=[0, 1],
                                                zero_division=1.0)),
            "iou_per_image": float(np.mean(per_image))}


def segmentation_per_image(masks_true, masks_pred, threshold: float = 0.5) -> dict:
    """Per image: ``dice`` (F1), ``iou`` (foreground Jaccard) and ``iou_mean`` (mean of the
    foreground's and the background's Jaccard), scikit-learn's scores; 1 where both masks agree
    on an empty class."""
    t = (np.asarray(masks_true) > 0.5).reshape(len(masks_true), -1)
    p = (np.asarray(masks_pred) > threshold).reshape(len(masks_pred), -1)
    return {"dice": np.array([skm.f1_score(a, b, zero_division=1.0) for a, b in zip(t, p)]),
            "iou": np.array([skm.jaccard_score(a, b, zero_division=1.0) for a, b in zip(t, p)]),
            "iou_mean": np.array([skm.jaccard_score(a, b, average="macro", labels=[0, 1], zero_division=1.0)
                                  for a, b in zip(t, p)])}


def auc(y_true, probabilities, classes=None) -> dict:
    """Hand & Till multi-class AUC (one-vs-one) and one-vs-rest AUC per class."""
    y_true, prob = np.asarray(y_true), np.asarray(probabilities)
    n = prob.shape[1]
    labels = list(range(n))
    names = list(classes) if classes is not None else [str(i) for i in labels]
    out = {}
    if n == 2:
        out["auc"] = float(skm.roc_auc_score(y_true, prob[:, 1]))
    else:
        out["auc"] = float(skm.roc_auc_score(y_true, prob, multi_class="ovo", labels=labels))
    for i, name in enumerate(names):
        positives = (y_true == i)
        if 0 < positives.sum() < len(y_true):
            out[f"auc_{name}"] = float(skm.roc_auc_score(positives, prob[:, i]))
    return out


def _ms_ssim_scales(side: int, filter_size: int = 11) -> int:
    """How many MS-SSIM scales fit: the coarsest must still hold the filter."""
    k = 1
    while k < 5 and side / 2 ** k >= filter_size:
        k += 1
    return k


MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def image_quality(clean, test, max_val: float = 1.0) -> dict:
    """Mean PSNR (dB), SSIM and MS-SSIM of ``test`` against ``clean`` (N, H, W[, 1]) via
    ``tf.image``. MS-SSIM uses 5 scales at ≥161 px and fewer on smaller images (the weights of
    the first scales, renormalised); ``ms_ssim_scales`` says how many."""
    import tensorflow as tf
    a = tf.convert_to_tensor(np.asarray(clean, np.float32))
    b = tf.convert_to_tensor(np.asarray(test, np.float32))
    if a.shape.rank == 3:
        a, b = a[..., None], b[..., None]
    scales = _ms_ssim_scales(min(a.shape[1], a.shape[2]))
    weights = np.array(MS_SSIM_WEIGHTS[:scales])
    ms = tf.image.ssim_multiscale(a, b, max_val, power_factors=tuple(weights / weights.sum()))
    return {"psnr": float(tf.reduce_mean(tf.image.psnr(a, b, max_val))),
            "ssim": float(tf.reduce_mean(tf.image.ssim(a, b, max_val))),
            "ms_ssim": float(tf.reduce_mean(ms)), "ms_ssim_scales": scales}


def saliency_per_image(truth, pred) -> dict:
    """Per-image KLD (KL(truth ‖ pred), MIT ε), CC (Pearson, scipy) and HS (Σ min) of maps
    that are first normalised to sum to 1."""
    from scipy.stats import pearsonr
    from ums_rep.losses import EPS
    t = np.asarray(truth, np.float64).reshape(len(truth), -1)
    p = np.asarray(pred, np.float64).reshape(len(pred), -1)
    t, p = t / t.sum(axis=1, keepdims=True), p / p.sum(axis=1, keepdims=True)
    kld = np.sum(t * np.log(EPS + t / (p + EPS)), axis=1)
    cc = np.array([pearsonr(a, b)[0] for a, b in zip(t, p)])
    hs = np.minimum(t, p).sum(axis=1)
    return {"kld": kld, "cc": cc, "hs": hs}


def saliency(truth, pred) -> dict:
    """Median over images of KLD, CC and HS (:func:`saliency_per_image`)."""
    return {k: float(np.median(v)) for k, v in saliency_per_image(truth, pred).items()}


def mcnemar(correct_a, correct_b) -> dict:
    """McNemar's test on paired per-image correctness (statsmodels): exact binomial when fewer
    than 25 discordant pairs, else the chi-square statistic with continuity correction."""
    from statsmodels.stats.contingency_tables import mcnemar as sm_mcnemar
    a, b = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    if a.shape != b.shape:
        raise ValueError(f"mcnemar: paired predictions differ in length ({a.shape} vs {b.shape})")
    table = [[int(np.sum(a & b)), int(np.sum(a & ~b))], [int(np.sum(~a & b)), int(np.sum(~a & ~b))]]
    exact = table[0][1] + table[1][0] < 25
    res = sm_mcnemar(table, exact=exact, correction=True)
    return {"statistic": float(res.statistic), "p_value": float(res.pvalue), "exact": exact, "table": table}
