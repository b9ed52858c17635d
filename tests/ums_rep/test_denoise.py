"""``python -m ums_rep.denoise`` and :mod:`ums_rep.denoising`: the tiler covers the whole image and
blends without seams, tiling at the model's size is the model-size path, the noise is the seed's,
quality.csv holds what a direct computation gives, and a model that is not a denoiser is one line.

Run folders are made by hand (tiny untrained models, as tests/ums_rep/test_predict.py does), so
each test takes seconds."""
import json

import cv2
import numpy as np
import pandas as pd
import pytest

import keras
from data_prep.io import read_image
from data_prep.transforms import MeanNormalizer
from ums_rep.backbones import cdae, echo_encoder
from ums_rep.denoise import main
from ums_rep.denoising import (add_noise, denoise_image, denoise_tiled, model_input, noise_seed, tile_starts,
                               tile_weights, window)
from ums_rep.inference import Geometry, Head, Predictor
from ums_rep.runs import save_model
from ums_rep.tasks import Task

SIDE = 32
MEAN, STD = 0.4, 0.2


@pytest.fixture(scope="module")
def radiograph():
    from pydicom.data import get_testdata_file
    path = get_testdata_file("RG1_UNCR.dcm")
    assert path is not None, "pydicom-data's RG1_UNCR.dcm is missing"
    return path


def _write_run(folder, command: str, model, args: dict, results_command: str):
    folder.mkdir(parents=True)
    save_model(model, folder / "model.keras")
    (folder / "normalizer.json").write_text(json.dumps({"mean": MEAN, "std": STD}))
    (folder / "args.json").write_text(json.dumps({"command": command, "seed": 0, "preset": "tiny", **args}))
    (folder / "results.json").write_text(json.dumps({"command": results_command, "config": {"image": SIDE}}))
    return folder


@pytest.fixture(scope="module")
def cdae_run(tmp_path_factory):
    keras.utils.set_random_seed(3)
    model = cdae((SIDE, SIDE, 1), filters=(4, 8, 8, 8))
    return _write_run(tmp_path_factory.mktemp("runs") / "cdae", "ums_rep.pretrain", model, {"backbone": "cdae"},
                      "pretrain --backbone cdae")


@pytest.fixture(scope="module")
def small_png(radiograph, tmp_path_factory):
    """The radiograph at 1/16 of its size (122x115): tiled mode in seconds."""
    img = read_image(radiograph)
    path = tmp_path_factory.mktemp("images") / "chest.png"
    cv2.imwrite(str(path), np.round(cv2.resize(img, (115, 122), interpolation=cv2.INTER_AREA) * 255).astype(np.uint8))
    return path


def _identity_predictor(shape=(SIDE, SIDE)):
    inp = keras.Input((*shape, 1))
    model = keras.Model(inp, keras.layers.Identity()(inp))
    return Predictor([Head(Task("denoise", "reconstruction"), model)], MeanNormalizer(MEAN, STD),
                     Geometry("resize", shape))


def _png(path):
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert img is not None, path
    return img


def _psnr(a, b):
    return 10 * np.log10(1.0 / np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))


# --------------------------------------------------------------------------- the tiler

@pytest.mark.parametrize("length", [32, 33, 57, 100, 1955])
def test_tiles_cover_the_line_with_the_overlap(length):
    starts = tile_starts(length, SIDE, 0.25)
    assert starts[0] == 0 and starts[-1] == length - SIDE
    assert all(0 < b - a <= SIDE - 8 for a, b in zip(starts, starts[1:]))


@pytest.mark.parametrize("shape", [(32, 32), (77, 53), (200, 41)])
def test_blend_weights_are_positive_and_sum_to_one(shape):
    acc = tile_weights(shape, (SIDE, SIDE))
    assert acc.shape == shape and acc.min() > 0
    win = window((SIDE, SIDE))
    assert win.min() > 0 and win.max() <= 1 and np.allclose(win, win[::-1]) and np.allclose(win, win[:, ::-1])
    total = np.zeros(shape)
    for y in tile_starts(shape[0], SIDE):
        for x in tile_starts(shape[1], SIDE):
            total[y:y + SIDE, x:x + SIDE] += win / acc[y:y + SIDE, x:x + SIDE]
    np.testing.assert_allclose(total, 1.0, atol=1e-12)


@pytest.mark.parametrize("shape", [(32, 32), (77, 53), (20, 50), (5, 7)])
def test_identity_model_gives_the_image_back_through_the_tiler(shape):
    """The run's normaliser in and out, tiles blended: an identity model reproduces the image
    exactly, at its own size (smaller than a tile included)."""
    img = np.random.default_rng(0).random(shape).astype(np.float32)
    out = denoise_tiled(_identity_predictor(), img)
    assert out.shape == shape
    np.testing.assert_allclose(out, img, atol=1e-5)


def test_blending_leaves_no_seams():
    """Each tile replaced by a constant of its own: a hard cut would jump by the constants'
    difference at tile borders; the window's blend changes by a small part of it per pixel."""
    rng = np.random.default_rng(1)
    img = np.zeros((150, 130), np.float32)
    out = denoise_tiled(_identity_predictor(), img,
                        model_fn=lambda tiles: np.ones_like(tiles) * rng.random((len(tiles), 1, 1)))
    jump = max(np.abs(np.diff(out, axis=0)).max(), np.abs(np.diff(out, axis=1)).max())
    assert 0 < jump < 0.15, jump


def test_tiling_at_the_models_size_is_the_model_size_path(cdae_run):
    pred = Predictor.from_run(cdae_run)
    img = np.random.default_rng(2).random((SIDE, SIDE)).astype(np.float32)
    tiled = denoise_image(pred, img, "tiled")["denoised"]
    small = denoise_image(pred, img, "model")["denoised"]
    assert tiled.shape == small.shape == (SIDE, SIDE)
    np.testing.assert_allclose(tiled, small, atol=1e-5)
    assert np.abs(tiled - img).max() > 0.01  # (an untrained CDAE, not the identity)


# --------------------------------------------------------------------------- noise

def test_same_seed_same_noise_other_seed_other_noise():
    img = np.full((40, 30), 0.5, np.float32)
    a, b = add_noise(img, "gaussian20", (1, 7)), add_noise(img, "gaussian20", (1, 7))
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - add_noise(img, "gaussian20", (2, 7))).max() > 0.01
    assert (a - img).std() == pytest.approx(20 / 255, rel=0.15)
    assert noise_seed(1, "chest") == noise_seed(1, "chest") != noise_seed(2, "chest")


def test_seed_option_fixes_the_noisy_image(cdae_run, small_png, tmp_path):
    noisy = {}
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        out = tmp_path / name
        assert main(["--model", str(cdae_run), str(small_png), "--out", str(out), "--noise", "gaussian30",
                     "--seed", str(seed)]) == 0
        noisy[name] = _png(out / "chest_noisy.png")
    np.testing.assert_array_equal(noisy["a"], noisy["b"])
    assert (noisy["a"] != noisy["c"]).mean() > 0.5


# --------------------------------------------------------------------------- the command

def test_model_mode_on_the_pydicom_radiograph_scores_as_computed(cdae_run, radiograph, tmp_path):
    out = tmp_path / "den"
    assert main(["--model", str(cdae_run), radiograph, "--out", str(out), "--noise", "gaussian20"]) == 0
    assert _png(out / "RG1_UNCR_denoised.png").shape == (1955, 1841)
    assert _png(out / "RG1_UNCR_noisy.png").shape == (1955, 1841)
    q = pd.read_csv(out / "quality.csv").set_index("method")
    assert list(q.index) == ["noisy", "cdae", "nlm"] and set(q["mode"]) == {"model"}
    assert (q.height.iloc[0], q.width.iloc[0]) == (SIDE, SIDE)
    # the noisy row, by hand: read → resize as prepare → 8 bits → the seed's Gaussian noise
    pred = Predictor.from_run(cdae_run)
    clean = model_input(pred, read_image(radiograph))
    noisy = add_noise(clean, "gaussian20", noise_seed(0, "RG1_UNCR"))
    assert q.loc["noisy", "psnr"] == pytest.approx(_psnr(clean, noisy), abs=1e-3)
    assert q.loc["noisy", "psnr"] == pytest.approx(20 * np.log10(255 / 20), abs=0.5)  # σ = 20 on 0-255
    x = ((noisy - MEAN) / STD)[None, ..., None].astype(np.float32)
    den = np.clip(np.asarray(pred.heads[0].model(x, training=False))[0, ..., 0] * STD + MEAN, 0, 1)
    assert q.loc["cdae", "psnr"] == pytest.approx(_psnr(clean, den), abs=1e-3)
    assert q.loc["cdae", "psnr_gain"] == pytest.approx(q.loc["cdae", "psnr"] - q.loc["noisy", "psnr"])
    assert q.loc["nlm", "psnr_gain"] > 0  # NLM does remove noise
    info = json.loads((out / "denoise.json").read_text())
    assert info["mode"] == "model" and info["noise"] == "gaussian20" and info["failures"] == []
    assert json.loads((out / "args.json").read_text())["command"] == "ums_rep.denoise"


def test_model_mode_without_noise_is_predicts_denoised_image(cdae_run, radiograph, tmp_path):
    out = tmp_path / "den"
    assert main(["--model", str(cdae_run), radiograph, "--out", str(out)]) == 0
    assert not (out / "quality.csv").exists() and not (out / "RG1_UNCR_noisy.png").exists()
    want = Predictor.from_run(cdae_run).predict([read_image(radiograph)])[0].denoised["denoise"]
    np.testing.assert_allclose(_png(out / "RG1_UNCR_denoised.png") / 255.0, want, atol=1 / 255 + 1e-6)


def test_tiled_mode_keeps_the_full_size(cdae_run, radiograph, small_png, tmp_path):
    out = tmp_path / "den"
    assert main(["--model", str(cdae_run), str(small_png), "--out", str(out), "--mode", "tiled",
                 "--noise", "gaussian20"]) == 0
    assert _png(out / "chest_denoised.png").shape == _png(out / "chest_noisy.png").shape == (122, 115)
    q = pd.read_csv(out / "quality.csv").set_index("method")
    assert (q.height.iloc[0], q.width.iloc[0]) == (122, 115) and set(q["mode"]) == {"tiled"}
    clean = read_image(small_png)  # already 8 bits
    noisy = add_noise(clean, "gaussian20", noise_seed(0, "chest"))
    assert q.loc["noisy", "psnr"] == pytest.approx(_psnr(clean, noisy), abs=1e-3)
    # the real radiograph at full resolution, no noise: the original size comes out
    assert main(["--model", str(cdae_run), radiograph, "--out", str(out), "--mode", "tiled"]) == 0
    den = _png(out / "RG1_UNCR_denoised.png")
    assert den.shape == (1955, 1841) and den.dtype == np.uint8


@pytest.mark.parametrize("kind", ["echo", "finetune"])
def test_a_model_that_is_no_denoiser_is_one_line_naming_the_file(kind, radiograph, tmp_path, caplog):
    keras.utils.set_random_seed(4)
    if kind == "echo":
        model = echo_encoder((SIDE, SIDE, 1), filters=(4, 4, 4, 8, 8, 8), fc_units=8, strides=2)
        run = _write_run(tmp_path / "echo", "ums_rep.pretrain", model, {"backbone": "echo"}, "pretrain --backbone echo")
    else:
        from ums_rep.models import build_shared
        from ums_rep.tasks import TASK_SETS
        models, _ = build_shared(cdae((SIDE, SIDE, 1), filters=(4, 8, 8, 8)), "cxr",
                                 TASK_SETS["cxr-hetero"]["tasks"], {"head_units": 8})
        model = keras.Model(models["lung_seg"].inputs, {n: m.output for n, m in models.items()})
        run = _write_run(tmp_path / "ft", "ums_rep.finetune", model, {"tasks": "cxr-hetero", "strategy": "joint"},
                         "finetune --strategy joint --tasks cxr-hetero")
    out = tmp_path / "den"
    assert main(["--model", str(run), radiograph, "--out", str(out), "--noise", "gaussian20"]) == 1
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "\n" not in errors[0], errors
    assert errors[0].startswith(f"{run / 'model.keras'}: not a denoiser"), errors
    assert not out.exists()


def test_bad_image_or_noise_is_one_line_and_exit_code_1(cdae_run, small_png, tmp_path, caplog):
    bad = tmp_path / "scan.dcm"
    bad.write_bytes(b"\0" * 128 + b"DICM" + b"\1" * 50)
    out = tmp_path / "den"
    assert main(["--model", str(cdae_run), str(bad), str(small_png), "--out", str(out)]) == 1
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and str(bad) in errors[0] and "\n" not in errors[0], errors
    assert (out / "chest_denoised.png").exists()  # the good image still done
    caplog.clear()
    assert main(["--model", str(cdae_run), str(small_png), "--out", str(tmp_path / "d2"), "--noise", "speckle"]) == 1
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "--noise speckle: unknown noise" in errors[0]
    # --out: the model's own run folder (another command's) is refused, nothing written there
    before = sorted(p.name for p in cdae_run.iterdir())
    caplog.clear()
    assert main(["--model", str(cdae_run), str(small_png), "--out", str(cdae_run)]) == 1
    assert "not of ums_rep.denoise" in caplog.text and sorted(p.name for p in cdae_run.iterdir()) == before
