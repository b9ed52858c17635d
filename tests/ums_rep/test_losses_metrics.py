"""Losses against hand-worked values; metrics against the libraries that define them."""
import numpy as np
import pytest
import tensorflow as tf
from scipy.stats import pearsonr
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from sklearn import metrics as skm

from data_prep import noise
from ums_rep import losses, metrics


def test_dice_and_bce_dice_by_hand():
    t = np.array([[[1.0, 0.0], [1.0, 0.0]]])[..., None]
    y = np.array([[[0.5, 0.5], [1.0, 0.0]]])[..., None]
    # Σty = 1.5, Σt = 2, Σy = 2 → dice loss = 1 − (3 + 1)/(4 + 1) = 0.2 (smooth 1)
    assert float(losses.dice_loss(t, y)[0]) == pytest.approx(0.2, abs=1e-6)
    assert float(losses.dice_loss(t, y, smooth=0.0)[0]) == pytest.approx(1 - 3 / 4, abs=1e-6)
    bce = -(np.log(0.5) + np.log(0.5) + np.log(1 - 1e-7) + np.log(1 - 1e-7)) / 4
    assert float(losses.bce_dice(t, y)[0]) == pytest.approx(0.5 * bce + 0.5 * 0.2, abs=1e-5)


def test_kld_and_cce_by_hand():
    p = np.array([[0.5, 0.25, 0.25, 0.0]]).reshape(1, 2, 2, 1)
    q = np.array([[0.25, 0.25, 0.25, 0.25]]).reshape(1, 2, 2, 1)
    assert float(losses.kld(p, q)[0]) == pytest.approx(0.5 * np.log(2), abs=1e-6)
    assert float(losses.kld(p, p)[0]) == pytest.approx(0.0, abs=1e-6)
    cce = losses.categorical_crossentropy(np.array([[0, 1, 0.0]]), np.array([[0.2, 0.5, 0.3]]))
    assert float(cce[0]) == pytest.approx(-np.log(0.5), abs=1e-6)
    assert float(losses.mse(np.ones((1, 2, 2)), np.zeros((1, 2, 2)))[0]) == pytest.approx(1.0)


def test_classification_metrics_equal_sklearn():
    rng = np.random.default_rng(0)
    t, p = rng.integers(0, 2, 50), rng.integers(0, 2, 50)
    m = metrics.classification(t, p)
    assert m["accuracy"] == skm.accuracy_score(t, p) and m["f_score"] == skm.f1_score(t, p)
    assert m["mcc"] == skm.matthews_corrcoef(t, p)
    t3, p3 = rng.integers(0, 3, 60), rng.integers(0, 3, 60)
    assert metrics.classification(t3, p3)["f_score"] == skm.f1_score(t3, p3, average="macro")


def test_segmentation_metrics():
    t = np.zeros((2, 4, 4))
    p = np.zeros((2, 4, 4))
    t[:, :2] = 1
    p[:, :3] = 1
    m = metrics.segmentation(t, p)
    assert m["iou"] == pytest.approx(8 / 12) and m["f_score"] == pytest.approx(2 * 16 / (16 + 24))
    assert m["accuracy"] == pytest.approx(24 / 32)


def test_auc_is_hand_and_till():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 3, 90)
    prob = rng.dirichlet([1, 1, 1], 90)
    m = metrics.auc(y, prob, ["Normal", "CHF", "pneumonia"])
    assert m["auc"] == skm.roc_auc_score(y, prob, multi_class="ovo")
    assert m["auc_CHF"] == skm.roc_auc_score(y == 1, prob[:, 1])


def test_image_quality_equals_skimage():
    rng = np.random.default_rng(3)
    clean = rng.random((2, 64, 64)).astype(np.float32)
    noisy = np.clip(clean + rng.normal(0, 0.05, clean.shape), 0, 1).astype(np.float32)
    m = metrics.image_quality(clean, noisy)
    ref_psnr = np.mean([peak_signal_noise_ratio(c, n, data_range=1) for c, n in zip(clean, noisy)])
    assert m["psnr"] == pytest.approx(ref_psnr, abs=1e-3)
    ref_ssim = np.mean([structural_similarity(c, n, data_range=1, gaussian_weights=True, sigma=1.5,
                                              use_sample_covariance=False) for c, n in zip(clean, noisy)])
    assert m["ssim"] == pytest.approx(ref_ssim, abs=2e-3)
    assert m["ms_ssim_scales"] == 3 and 0 < m["ms_ssim"] <= 1
    big = metrics.image_quality(np.ones((1, 176, 176)) * 0.5, np.ones((1, 176, 176)) * 0.5)
    assert big["ms_ssim_scales"] == 5 and big["ms_ssim"] == pytest.approx(1.0)


def test_saliency_metrics_by_hand():
    t = np.array([[0.5, 0.5, 0.0, 0.0]])
    p = np.array([[0.25, 0.25, 0.25, 0.25]])
    m = metrics.saliency(t, p)
    assert m["kld"] == pytest.approx(np.log(2), abs=1e-6)
    assert m["hs"] == pytest.approx(0.5)
    q = np.array([[0.4, 0.3, 0.2, 0.1]])
    assert metrics.saliency(t, q)["cc"] == pytest.approx(pearsonr(t[0], q[0])[0])


def test_mcnemar_equals_statsmodels():
    from statsmodels.stats.contingency_tables import mcnemar
    a = np.array([1] * 30 + [0] * 10 + [1] * 5 + [0] * 5, bool)
    b = np.array([1] * 30 + [1] * 10 + [0] * 5 + [0] * 5, bool)
    m = metrics.mcnemar(a, b)
    assert m["table"] == [[30, 5], [10, 5]] and m["exact"]
    assert m["p_value"] == pytest.approx(mcnemar([[30, 5], [10, 5]], exact=True).pvalue)


def test_noise_levels():
    x = tf.fill((1, 64, 64, 1), 0.5)
    for sigma in noise.GAUSSIAN_SIGMAS:
        y = noise.apply(x, f"gaussian{sigma}", seed=tf.constant([1, 2]))
        assert float(tf.math.reduce_std(y - x)) * 255 == pytest.approx(sigma, rel=0.1)
    p = noise.apply(x, "poisson", seed=tf.constant([1, 2]))
    assert float(tf.math.reduce_variance(p * 255)) == pytest.approx(127.5, rel=0.15)  # variance = mean
    np.testing.assert_array_equal(noise.apply(x, "gaussian20", seed=tf.constant([3, 4])),
                                  noise.apply(x, "gaussian20", seed=tf.constant([3, 4])))
    with pytest.raises(ValueError, match="unknown noise level"):
        noise.apply(x, "speckle")
