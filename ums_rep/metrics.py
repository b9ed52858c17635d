"""Evaluation metrics, one home for both papers, computed with the libraries that define them.

* classification — accuracy, F-score, MCC (scikit-learn); multi-class AUC of Hand & Till
  (``roc_auc_score(multi_class="ovo")``) and one-vs-rest AUC per class;
* segmentation — pixel accuracy, F-score (= Dice) and IoU (Jaccard: foreground, and the mean
  over both classes) of binary masks (sklearn);
* image quality — PSNR, SSIM and MS-SSIM (``tf.image``) on images in [0, 1];
* saliency — KLD, CC (Pearson, scipy) and HS (histogram intersection Σ min(p, q));
* paired comparisons (UMS-Rep Sections 4.1.2 and 4.2.2; :mod:`ums_rep.claims`) — the exact McNemar
  test on two classifiers' per-image correctness (statsmodels), the Wilcoxon signed-rank test on
  paired per-image values (scipy), Holm's correction (statsmodels) and paired bootstrap
  percentile CIs of a mean or AUC difference, the same resampled images for both arms.
"""
from __future__ import annotations

import math
from itertools import combinations

import numpy as np
from sklearn import metrics as skm


def classification(y_true, y_pred) -> dict:
    """Accuracy, F-score (binary: positive class 1; multi-class: macro) and MCC.

    Args:
        y_true: True class indices.
        y_pred: Predicted class indices, in the same order.

    Returns:
        ``{"accuracy", "f_score", "mcc"}`` as floats.
    """
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
    classes: the tables show both, labelled.

    Args:
        masks_true: True masks, ``(N, H, W[, 1])``; foreground where > 0.5.
        masks_pred: Predicted masks or probability maps of the same shape.
        threshold: Foreground where ``masks_pred`` is above it.

    Returns:
        ``{"accuracy", "f_score", "iou", "iou_mean", "iou_per_image"}`` as floats.
    """
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
    on an empty class.

    Args:
        masks_true: True masks, ``(N, H, W[, 1])``; foreground where > 0.5.
        masks_pred: Predicted masks or probability maps of the same shape.
        threshold: Foreground where ``masks_pred`` is above it.

    Returns:
        ``{"dice", "iou", "iou_mean"}``, each an array of N values.
    """
    t = (np.asarray(masks_true) > 0.5).reshape(len(masks_true), -1)
    p = (np.asarray(masks_pred) > threshold).reshape(len(masks_pred), -1)
    return {"dice": np.array([skm.f1_score(a, b, zero_division=1.0) for a, b in zip(t, p)]),
            "iou": np.array([skm.jaccard_score(a, b, zero_division=1.0) for a, b in zip(t, p)]),
            "iou_mean": np.array([skm.jaccard_score(a, b, average="macro", labels=[0, 1], zero_division=1.0)
                                  for a, b in zip(t, p)])}


def auc(y_true, probabilities, classes=None) -> dict:
    """Hand & Till multi-class AUC (one-vs-one) and one-vs-rest AUC per class.

    Args:
        y_true: True class indices.
        probabilities: ``(N, C)`` class probabilities.
        classes: Class names for the per-class keys (default: the indices).

    Returns:
        ``{"auc": ..., "auc_<class>": ...}``: the binary or Hand & Till AUC, and each class's
        one-vs-rest AUC where the class is neither absent nor everything.
    """
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
    the first scales, renormalised); ``ms_ssim_scales`` says how many.

    Args:
        clean: Reference images, ``(N, H, W[, 1])``.
        test: The images to score, same shape.
        max_val: The images' dynamic range.

    Returns:
        ``{"psnr", "ssim", "ms_ssim", "ms_ssim_scales"}``: means over the images.
    """
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
    that are first normalised to sum to 1.

    Args:
        truth: Ground-truth saliency maps, ``(N, H, W[, 1])``.
        pred: Predicted maps of the same shape.

    Returns:
        ``{"kld", "cc", "hs"}``, each an array of N values.
    """
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
    """Median over images of KLD, CC and HS (:func:`saliency_per_image`).

    Args:
        truth: Ground-truth saliency maps, ``(N, H, W[, 1])``.
        pred: Predicted maps of the same shape.

    Returns:
        ``{"kld", "cc", "hs"}`` as floats.
    """
    return {k: float(np.median(v)) for k, v in saliency_per_image(truth, pred).items()}


def mcnemar(correct_a, correct_b) -> dict:
    """The exact McNemar test on paired per-image correctness: a binomial test on the discordant
    pairs (statsmodels ``mcnemar(table, exact=True)``), whatever their number.

    Args:
        correct_a: per-image correctness (bool) of one classifier.
        correct_b: the same images' correctness of the other, in the same order.

    Returns:
        ``{"statistic", "p_value", "exact": True, "table"}``; ``table[0][1]`` counts the images
        only the first got right, ``table[1][0]`` those only the second got right."""
    from statsmodels.stats.contingency_tables import mcnemar as sm_mcnemar
    a, b = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    if a.shape != b.shape:
        raise ValueError(f"mcnemar: paired predictions differ in length ({a.shape} vs {b.shape})")
    table = [[int(np.sum(a & b)), int(np.sum(a & ~b))], [int(np.sum(~a & b)), int(np.sum(~a & ~b))]]
    res = sm_mcnemar(table, exact=True)
    return {"statistic": float(res.statistic), "p_value": float(res.pvalue), "exact": True, "table": table}


N_RESAMPLES = 2000  # paired bootstrap: resamples of the test images
SEED = 0  # and their seed
LEVEL = 0.95  # the CIs' coverage


def wilcoxon_paired(values_a, values_b) -> dict:
    """The two-sided Wilcoxon signed-rank test of paired per-image values (scipy's defaults: zero
    differences dropped); p = 1 when every difference is zero.

    Args:
        values_a: per-image values (e.g. Dice) of arm a.
        values_b: the same images' values of arm b, in the same order.

    Returns:
        ``{"p_value", "statistic", "n"}`` (``n``: the images with a non-zero difference)."""
    from scipy.stats import wilcoxon
    a, b = np.asarray(values_a, float), np.asarray(values_b, float)
    if a.shape != b.shape:
        raise ValueError(f"wilcoxon: paired values differ in length ({a.shape} vs {b.shape})")
    nonzero = int(np.count_nonzero(a - b))
    if nonzero == 0:
        return {"p_value": 1.0, "statistic": 0.0, "n": 0}
    res = wilcoxon(a, b)
    return {"p_value": float(res.pvalue), "statistic": float(res.statistic), "n": nonzero}


def holm(p_values) -> np.ndarray:
    """Holm-corrected p-values (statsmodels ``multipletests(method="holm")``).

    Args:
        p_values: the family's p-values.

    Returns:
        The corrected p-values, in the same order."""
    from statsmodels.stats.multitest import multipletests
    p = np.asarray(p_values, float)
    return multipletests(p, alpha=0.05, method="holm")[1] if len(p) else p


def resample_indices(n: int, n_resamples: int = N_RESAMPLES, seed: int = SEED) -> np.ndarray:
    """Bootstrap resamples of ``n`` items: ``(n_resamples, n)`` indices drawn with replacement.

    Args:
        n: how many items (test images).
        n_resamples: how many resamples.
        seed: the generator's seed (``numpy.random.default_rng``).

    Returns:
        The indices, one resample per row."""
    return np.random.default_rng(seed).integers(0, n, size=(n_resamples, n))


def resample_weights(indices: np.ndarray, n: int) -> np.ndarray:
    """How often each of ``n`` items is drawn in each resample of ``indices`` (float counts, one
    row per resample): a weighted statistic on these weights equals the statistic on the resample.

    Args:
        indices: ``(n_resamples, n)`` from :func:`resample_indices`.
        n: how many items.

    Returns:
        ``(n_resamples, n)`` counts."""
    b = len(indices)
    flat = (indices + n * np.arange(b)[:, None]).ravel()
    return np.bincount(flat, minlength=b * n).reshape(b, n).astype(float)


def weighted_mean(values, weights: np.ndarray) -> np.ndarray:
    """The mean of ``values`` under each row of ``weights``.

    Args:
        values: ``(n,)`` per-item values.
        weights: ``(k, n)`` weights (resample counts).

    Returns:
        ``(k,)`` means."""
    return weights @ np.asarray(values, float) / weights.sum(axis=1)


def _binary_auc(scores, positive, negative, weights) -> np.ndarray:
    """P(score of a positive > score of a negative) + ½ P(tie), items weighted (one row per resample)."""
    from scipy import sparse
    scores = np.asarray(scores, float)
    u, inv = np.unique(scores, return_inverse=True)
    onehot = sparse.csr_matrix((np.ones(len(scores)), (np.arange(len(scores)), inv)), shape=(len(scores), len(u)))
    wp = np.asarray(onehot.T @ (weights * positive).T).T  # (k, unique scores)
    wn = np.asarray(onehot.T @ (weights * negative).T).T
    below = np.cumsum(wn, axis=1) - wn
    num = (wp * (below + 0.5 * wn)).sum(axis=1)
    den = wp.sum(axis=1) * wn.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def auc_resampled(y_true, probabilities, weights: np.ndarray) -> np.ndarray:
    """The AUC of :func:`ums_rep.metrics.auc` (binary: of the second class's probability; more
    classes: Hand & Till's one-vs-one mean over class pairs) under each row of ``weights``, so
    each row gives the AUC of one bootstrap resample. NaN where a resample lacks a class.

    Args:
        y_true: ``(n,)`` class indices.
        probabilities: ``(n, classes)`` predicted probabilities.
        weights: ``(k, n)`` weights (resample counts; ones for the sample itself).

    Returns:
        ``(k,)`` AUCs."""
    y, prob = np.asarray(y_true), np.asarray(probabilities, float)
    n_classes = prob.shape[1]
    if n_classes == 2:
        return _binary_auc(prob[:, 1], y == 1, y == 0, weights)
    pairs = [(_binary_auc(prob[:, i], y == i, y == j, weights) + _binary_auc(prob[:, j], y == j, y == i, weights)) / 2
             for i, j in combinations(range(n_classes), 2)]
    return np.mean(pairs, axis=0)


def bootstrap_ci(diff_of, n: int, n_resamples: int = N_RESAMPLES, seed: int = SEED,
                 level: float = LEVEL) -> tuple[float, tuple[float, float]]:
    """A paired bootstrap percentile CI: ``diff_of(weights)`` computes a difference between two
    arms under each weight row, the same rows (images) for both arms.

    Args:
        diff_of: ``(k, n)`` weights → ``(k,)`` differences (NaN where undefined).
        n: how many paired images.
        n_resamples: how many resamples.
        seed: the resampling seed.
        level: the CI's coverage.

    Returns:
        ``(point estimate on the sample, (low, high))``; the CI is NaN when no resample is
        defined."""
    point = float(diff_of(np.ones((1, n)))[0])
    values = diff_of(resample_weights(resample_indices(n, n_resamples, seed), n))
    values = values[np.isfinite(values)]
    if not len(values):
        return point, (math.nan, math.nan)
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(values, [tail, 100 - tail])
    return point, (float(lo), float(hi))
