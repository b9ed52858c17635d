"""``python -m ums_rep.predict``: every kind of run folder on the real chest radiograph of
pydicom-data, with the run's own preprocessing; bad input is one line and exit code 1; a
cross-validated finetune run predicts with its fold ensemble, as its test set was scored.

Most run folders are made by hand (tiny untrained models, normalizer.json, args.json,
results.json as the training commands write them), so each test takes seconds; the fold
ensemble is checked on two real ``ums_rep.finetune --preset tiny --folds 2`` runs (about a
minute, once per module)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

import keras
from data_prep.io import read_image
from data_prep.transforms import Letterbox, resize
from ums_rep.backbones import FLOW_CLASSES, cdae, echo_encoder
from ums_rep.derive import grad_cam
from ums_rep.finetune import main as finetune
from ums_rep.inference import FOLD_ENSEMBLE, FOLD_ENSEMBLE_GRADCAM, Predictor
from ums_rep.models import baseline_model, build_shared, feature_layer
from ums_rep.predict import main
from ums_rep.runs import load_model, save_model
from ums_rep.tasks import TASK_SETS

SIDE = 32
HEAD = {"head_units": 8}


@pytest.fixture(scope="module")
def radiograph():
    from pydicom.data import get_testdata_file
    path = get_testdata_file("RG1_UNCR.dcm")
    assert path is not None, "pydicom-data's RG1_UNCR.dcm is missing"
    return path


def _write_run(folder, command: str, models: dict, mean: float, std: float, args: dict, config: dict):
    folder.mkdir(parents=True)
    for name, model in models.items():
        save_model(model, folder / name)
    (folder / "normalizer.json").write_text(json.dumps({"mean": mean, "std": std}))
    (folder / "args.json").write_text(json.dumps({"command": command, "seed": 0, "preset": "tiny", **args}))
    (folder / "results.json").write_text(json.dumps({"command": config.pop("_command"), "config": config}))
    return folder


@pytest.fixture(scope="module")
def shared_model():
    """A cxr-hetero joint model as finetune saves it: one output per task, keyed by task."""
    keras.utils.set_random_seed(1)
    models, _ = build_shared(cdae((SIDE, SIDE, 1), filters=(4, 8, 8, 8)), "cxr", TASK_SETS["cxr-hetero"]["tasks"], HEAD)
    return keras.Model(models["lung_seg"].inputs, {n: m.output for n, m in models.items()})


def _finetune_run(folder, model, mean=0.5, std=0.25):
    return _write_run(folder, "ums_rep.finetune", {"model.keras": model}, mean, std,
                      {"tasks": "cxr-hetero", "strategy": "joint"},
                      {"_command": "finetune --strategy joint --tasks cxr-hetero", "image": SIDE, "tasks": "cxr-hetero",
                       "preset": "tiny"})


@pytest.fixture(scope="module")
def finetune_run(tmp_path_factory, shared_model):
    return _finetune_run(tmp_path_factory.mktemp("runs") / "finetune", shared_model)


def _by_hand(path, mean: float, std: float) -> np.ndarray:
    """The model input of an image as the prepared training images were made: read → bicubic
    resize to SIDE → 8 bits → (x - mean) / std, shape (1, SIDE, SIDE, 1)."""
    small = np.round(resize(read_image(path), (SIDE, SIDE)) * 255) / 255
    return ((small - mean) / std).astype("float32")[None, ..., None]


def _png(path):
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert img is not None, path
    return img


def test_finetune_run_on_the_pydicom_radiograph(finetune_run, radiograph, tmp_path, caplog):
    out = tmp_path / "pred"
    assert main(["--model", str(finetune_run), radiograph, "--out", str(out)]) == 0
    assert "WARNING" not in [r.levelname for r in caplog.records]  # one model, one fold: nothing missing
    table = pd.read_csv(out / "predictions.csv")
    assert len(table) == 1 and table.file[0] == radiograph and table.output[0] == "RG1_UNCR"
    assert (table.height[0], table.width[0]) == (1955, 1841)
    p = table[["abnormal_p_normal", "abnormal_p_tb"]].to_numpy()
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-5)
    assert table.abnormal_pred[0] == ("normal", "tb")[int(p[0].argmax())]
    mask = _png(out / "RG1_UNCR_lung_seg_mask.png")
    assert mask.shape == (1955, 1841) and set(np.unique(mask)) <= {0, 255}
    assert table.lung_seg_fraction[0] == pytest.approx((mask > 0).mean(), abs=1e-6)
    assert _png(out / "RG1_UNCR_lung_seg_overlay.png").shape == (1955, 1841, 3)
    cam = _png(out / "RG1_UNCR_abnormal_gradcam.png")
    assert cam.shape == (1955, 1841, 3) and cam.std() > 1  # a heatmap over the image, not a blank
    info = json.loads((out / "predict.json").read_text())
    assert info["run_command"] == "ums_rep.finetune" and info["preprocessing"]["shape"] == [SIDE, SIDE]
    assert json.loads((out / "args.json").read_text())["command"] == "ums_rep.predict"


def test_the_run_folders_normaliser_is_applied(shared_model, radiograph, tmp_path):
    """Two run folders differing only in normalizer.json: different probabilities, each the
    hand computation read → bicubic resize → 8 bits → (x - mean) / std → the model."""
    small = np.round(resize(read_image(radiograph), (SIDE, SIDE)) * 255) / 255
    got = {}
    for mean, std in ((0.2, 0.1), (0.7, 0.4)):
        run = _finetune_run(tmp_path / f"run-{mean}", shared_model, mean, std)
        out = tmp_path / f"pred-{mean}"
        assert main(["--model", str(run), radiograph, "--out", str(out), "--no-gradcam"]) == 0
        table = pd.read_csv(out / "predictions.csv")
        got[mean] = table[["abnormal_p_normal", "abnormal_p_tb"]].to_numpy()[0]
        x = ((small - mean) / std).astype("float32")[None, ..., None]
        want = np.asarray(shared_model([x], training=False)["abnormal"])[0]
        np.testing.assert_allclose(got[mean], want, rtol=1e-5, atol=1e-6)
        assert not (out / "RG1_UNCR_abnormal_gradcam.png").exists()
    assert np.abs(got[0.2] - got[0.7]).max() > 1e-4


def test_a_folder_of_images_and_repeated_stems(finetune_run, radiograph, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    img = read_image(radiograph)
    cv2.imwrite(str(images / "chest.png"), np.round(img[::8, ::8] * 255).astype(np.uint8))
    cv2.imwrite(str(images / "chest.jpg"), np.round(img[::4, ::6] * 255).astype(np.uint8))
    (images / "notes.txt").write_text("not an image, ignored in a folder")
    out = tmp_path / "pred"
    assert main(["--model", str(finetune_run), str(images), "--out", str(out), "--no-gradcam"]) == 0
    table = pd.read_csv(out / "predictions.csv")
    assert list(table.output) == ["chest", "chest_png"]  # sorted: chest.jpg, chest.png
    for stem, (h, w) in zip(table.output, zip(table.height, table.width)):
        assert _png(out / f"{stem}_lung_seg_mask.png").shape == (h, w)
    # the same --out again: predict's own folder is reused; another command's is refused
    assert main(["--model", str(finetune_run), str(images / "chest.png"), "--out", str(out), "--no-gradcam"]) == 0
    assert len(pd.read_csv(out / "predictions.csv")) == 1


def test_baseline_run_one_model_per_task(radiograph, tmp_path):
    keras.utils.set_random_seed(2)
    backbone = cdae((SIDE, SIDE, 1), filters=(4, 8, 8, 8))
    denoiser = cdae((SIDE, SIDE, 1), filters=(4, 8, 8, 8))
    models = {f"model_{s.task.name}.keras": baseline_model(backbone, "cxr", s, HEAD, denoiser)
              for s in TASK_SETS["cxr-hetero"]["tasks"]}
    run = _write_run(tmp_path / "baseline", "ums_rep.finetune", models, 0.5, 0.25,
                     {"tasks": "cxr-hetero", "strategy": "baseline"},
                     {"_command": "finetune --strategy baseline --tasks cxr-hetero", "image": SIDE})
    out = tmp_path / "pred"
    assert main(["--model", str(run), radiograph, "--out", str(out)]) == 0
    table = pd.read_csv(out / "predictions.csv")
    # each task's own model on the image read → bicubic resize → 8 bits → (x - 0.5) / 0.25
    x = _by_hand(radiograph, 0.5, 0.25)
    want = np.asarray(models["model_abnormal.keras"](x, training=False))[0]
    np.testing.assert_allclose(table[["abnormal_p_normal", "abnormal_p_tb"]].to_numpy()[0], want, rtol=1e-5, atol=1e-6)
    prob = np.asarray(models["model_lung_seg.keras"](x, training=False))[0, ..., 0]
    want_mask = cv2.resize(prob, (1841, 1955), interpolation=cv2.INTER_LINEAR) > 0.5  # back at the original size
    mask = _png(out / "RG1_UNCR_lung_seg_mask.png")
    assert mask.shape == (1955, 1841) and 0 < want_mask.mean() < 1
    assert np.mean((mask > 0) != want_mask) < 1e-4  # (a pixel at 0.5 ± rounding may flip)
    # the CXR baseline nests its denoiser and network: no top-level feature layer, no Grad-CAM
    assert not (out / "RG1_UNCR_abnormal_gradcam.png").exists()


def test_cdae_pretrain_run_writes_the_denoised_image(radiograph, tmp_path):
    keras.utils.set_random_seed(3)
    model = cdae((SIDE, SIDE, 1), filters=(4, 8, 8, 8))
    run = _write_run(tmp_path / "cdae", "ums_rep.pretrain", {"model.keras": model}, 0.4, 0.2,
                     {"backbone": "cdae"}, {"_command": "pretrain --backbone cdae", "image": SIDE})
    out = tmp_path / "pred"
    assert main(["--model", str(run), radiograph, "--out", str(out)]) == 0
    den = _png(out / "RG1_UNCR_denoised.png")
    assert den.shape == (1955, 1841) and den.dtype == np.uint8
    pred = Predictor.from_run(run)
    x, _ = pred.preprocess(read_image(radiograph))
    want = np.asarray(model(x[None], training=False))[0, ..., 0] * 0.2 + 0.4
    back = cv2.resize(want, (1841, 1955), interpolation=cv2.INTER_CUBIC)
    np.testing.assert_allclose(den / 255.0, np.clip(back, 0, 1), atol=1 / 255 + 1e-6)


def test_echo_pretrain_run_classifies_flow(radiograph, tmp_path):
    keras.utils.set_random_seed(4)
    model = echo_encoder((SIDE, SIDE, 1), filters=(4, 4, 4, 8, 8, 8), fc_units=8, strides=2)
    run = _write_run(tmp_path / "echo", "ums_rep.pretrain", {"model.keras": model}, 0.3, 0.2,
                     {"backbone": "echo"}, {"_command": "pretrain --backbone echo", "image": SIDE})
    out = tmp_path / "pred"
    assert main(["--model", str(run), radiograph, "--out", str(out)]) == 0
    table = pd.read_csv(out / "predictions.csv")
    got = table[[f"flow_p_{c}" for c in FLOW_CLASSES]].to_numpy()[0]
    want = np.asarray(model(_by_hand(radiograph, 0.3, 0.2), training=False))[0]  # the run's normaliser 0.3/0.2
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert table.flow_pred[0] == FLOW_CLASSES[int(want.argmax())]
    assert _png(out / "RG1_UNCR_flow_gradcam.png").shape == (1955, 1841, 3)
    assert json.loads((out / "predict.json").read_text())["folds"] is None
    # --fold is a cross-validated finetune run's: refused here, in one line
    assert main(["--model", str(run), radiograph, "--out", str(tmp_path / "p2"), "--fold", "0"]) == 1


def test_mt_unet_run_letterboxes_and_writes_saliency(radiograph, tmp_path):
    from data_prep.egd import CLASSES
    from mt_unet.model import filters_for, mt_unet
    keras.utils.set_random_seed(5)
    model = mt_unet((64, 48, 1), len(CLASSES), filters_for(4))
    run = _write_run(tmp_path / "mtunet", "mt_unet.train", {"seed0/model.keras": model, "seed1/model.keras": model},
                     0.45, 0.3, {"model": "mtunet", "variant": "full", "scheme": "mtl3"},
                     {"_command": "mt_unet.train --model mtunet --variant full --scheme mtl3", "shape": [64, 48]})
    out = tmp_path / "pred"
    assert main(["--model", str(run), radiograph, "--out", str(out)]) == 0
    table = pd.read_csv(out / "predictions.csv")
    np.testing.assert_allclose(sum(table[f"disease_p_{c}"] for c in CLASSES), 1.0, atol=1e-5)
    sal = _png(out / "RG1_UNCR_saliency.png")
    assert sal.shape == (1955, 1841) and sal.max() == 255
    assert _png(out / "RG1_UNCR_saliency_overlay.png").shape == (1955, 1841, 3)
    assert _png(out / "RG1_UNCR_disease_gradcam.png").shape == (1955, 1841, 3)
    assert json.loads((out / "predict.json").read_text())["model_files"] == [str(run / "seed0" / "model.keras")]
    # letter-box, not a squashing resize: the preprocessing is the prepared data's
    pred = Predictor.from_run(run / "seed1")
    img = read_image(radiograph)
    x, lb = pred.preprocess(img)
    want = (np.round(Letterbox.fit(img.shape, (64, 48)).apply(img) * 255) / 255 - 0.45) / 0.3
    np.testing.assert_allclose(x[..., 0], want, atol=1e-6)
    assert lb.top > 0 and np.allclose(x[: lb.top], -0.45 / 0.3)  # the padding is zero before normalising


def test_bad_image_is_one_line_and_exit_code_1(finetune_run, radiograph, tmp_path, caplog):
    bad = tmp_path / "scan.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(200))
    out = tmp_path / "pred"
    assert main(["--model", str(finetune_run), str(bad), radiograph, "--out", str(out), "--no-gradcam"]) == 1
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and str(bad) in errors[0] and "\n" not in errors[0]
    assert list(pd.read_csv(out / "predictions.csv").output) == ["RG1_UNCR"]  # the good image still done
    caplog.clear()
    assert main(["--model", str(finetune_run), str(tmp_path / "missing.dcm"), "--out", str(tmp_path / "p2")]) == 1
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "missing.dcm: file not found" in errors[0]
    empty = tmp_path / "empty"
    empty.mkdir()
    caplog.clear()
    assert main(["--model", str(finetune_run), str(empty), "--out", str(tmp_path / "p3")]) == 1
    assert "no image files" in caplog.text and not (tmp_path / "p3").exists()


@pytest.mark.parametrize("case", ["txt", "fake_keras", "not_a_run", "other_out"])
def test_bad_model_or_folder_is_one_line_and_exit_code_1(case, finetune_run, radiograph, tmp_path, caplog):
    model, out = finetune_run, tmp_path / "pred"
    if case == "txt":
        model = tmp_path / "notes.txt"
        model.write_text("a model? no")
        want = "not a .keras model file"
    elif case == "fake_keras":
        model = _write_run(tmp_path / "run", "ums_rep.finetune", {}, 0.5, 0.25, {"tasks": "cxr-hetero"},
                           {"_command": "finetune --strategy joint --tasks cxr-hetero"})
        (model / "model.keras").write_text("text named .keras")
        want = "not a valid .keras file"
    elif case == "not_a_run":
        model = tmp_path / "folder"
        model.mkdir()
        want = "not a run folder"
    else:  # --out is the model's own run folder, another command's: refused, nothing written
        out = finetune_run
        want = "a run folder of ums_rep.finetune, not of ums_rep.predict"
    before = sorted(p.name for p in finetune_run.iterdir())
    assert main(["--model", str(model), radiograph, "--out", str(out)]) == 1
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and want in errors[0] and "\n" not in errors[0], errors
    assert sorted(p.name for p in finetune_run.iterdir()) == before


def test_command_line_error_is_one_line_on_stderr(radiograph, tmp_path):
    notes = tmp_path / "notes.csv"
    notes.write_text("a,b\n1,2\n")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    r = subprocess.run([sys.executable, "-m", "ums_rep.predict", "--model", str(notes), radiograph,
                        "--out", str(tmp_path / "out")], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 1, r.stderr
    lines = [line for line in r.stderr.splitlines() if "ERROR" in line]
    assert len(lines) == 1 and f"{notes}: not a .keras model file" in lines[0], r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- the fold ensemble

@pytest.fixture(scope="module")
def cv_runs(tmp_path_factory):
    """``ums_rep.finetune --tasks cxr-hetero --preset tiny --folds 2 --epochs 1``, joint and baseline
    (as test_protocol's two-fold runs), on a small untrained CDAE as the encoder (no pretraining)."""
    root = tmp_path_factory.mktemp("cv")
    keras.utils.set_random_seed(6)
    enc = root / "encoder" / "model.keras"
    save_model(cdae((SIDE, SIDE, 1), filters=(4, 8, 8, 8)), enc)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("UMS_REP_CACHE", str(root / "cache"))
        for strategy in ("joint", "baseline"):
            assert finetune(["--strategy", strategy, "--tasks", "cxr-hetero", "--preset", "tiny", "--folds", "2",
                             "--epochs", "1", "--encoder", str(enc), "--out", str(root / strategy),
                             "--no-progress"]) == 0
    return root


def _test_set(run):
    """The run's Montgomery test images, masks and per-image scores, in predictions_<task>.csv's order."""
    prepared = Path(json.loads((run / "results.json").read_text())["config"]["prepared"]["test"])
    manifest = pd.read_csv(prepared / "manifest.csv").set_index("id")
    ids = pd.read_csv(run / "predictions_abnormal.csv").id
    return ([str(prepared / manifest.image[i]) for i in ids], [prepared / manifest["mask"][i] for i in ids])


def _dice(truth, pred) -> float:
    both = truth.sum() + pred.sum()
    return 1.0 if both == 0 else 2.0 * np.logical_and(truth, pred).sum() / both


def _predicted(out, images, masks):
    """``(probabilities (N, 2), Dice per image)`` of a predict output folder, in ``images``' order."""
    table = pd.read_csv(out / "predictions.csv").set_index("file").loc[images]
    dice = [_dice(read_image(m) > 0.5, _png(out / f"{stem}_lung_seg_mask.png") > 0)
            for stem, m in zip(table.output, masks)]
    return table[["abnormal_p_normal", "abnormal_p_tb"]].to_numpy(), np.array(dice)


def _scored(run, suffix=""):
    """The run's own test scores: ``predictions_abnormal<suffix>.csv``'s probabilities and
    ``predictions_lung_seg<suffix>.csv``'s Dice."""
    return (pd.read_csv(run / f"predictions_abnormal{suffix}.csv")[["p_normal", "p_tb"]].to_numpy(),
            pd.read_csv(run / f"predictions_lung_seg{suffix}.csv").dice.to_numpy())


@pytest.mark.parametrize("strategy", ["joint", "baseline"])
def test_a_cross_validated_run_predicts_with_its_fold_ensemble(cv_runs, strategy, tmp_path):
    """Issue 26 item 7: predict on the run's own test images gives the run's test scores — the
    fold ensemble's probabilities and segmentation Dice (predictions_<task>.csv), not fold 0's."""
    run = cv_runs / strategy
    files = {"joint": ["model.keras", "model_fold1.keras"],
             "baseline": ["model_abnormal.keras", "model_abnormal_fold1.keras", "model_lung_seg.keras",
                          "model_lung_seg_fold1.keras"]}[strategy]
    assert sorted(p.name for p in run.glob("model*.keras")) == files
    images, masks = _test_set(run)
    out = tmp_path / "pred"
    assert main(["--model", str(run), *images, "--out", str(out)]) == 0
    probs, dice = _predicted(out, images, masks)
    want_probs, want_dice = _scored(run)
    np.testing.assert_allclose(probs, want_probs, atol=1e-5)
    np.testing.assert_allclose(dice, want_dice, atol=1e-6)
    fold0 = _scored(run, "_fold0")[0]
    assert np.abs(fold0 - want_probs).max() > 1e-3  # (so fold 0 alone would not pass)
    info = json.loads((out / "predict.json").read_text())
    assert info["folds"] == [0, 1] and info["combined"] == FOLD_ENSEMBLE
    assert sorted(map(Path, info["model_files"])) == sorted(run / f for f in files)
    norms = info["preprocessing"]["normalizer"]
    for k in (0, 1):
        assert {**norms[k], "fold": k} == {"fold": k, **json.loads((run / f"normalizer_fold{k}.json").read_text())}
    # the CXR baseline nests its encoder in its model: no Grad-CAM
    assert info["gradcam"] == (FOLD_ENSEMBLE_GRADCAM if strategy == "joint" else None)


def test_fold_k_predicts_with_that_folds_model_and_normaliser(cv_runs, tmp_path):
    """``--fold 1``: fold 1's model on the image normalised with fold 1's normaliser gives fold 1's
    test scores (predictions_<task>_fold1.csv), which differ from the ensemble's."""
    run = cv_runs / "joint"
    images, masks = _test_set(run)
    out = tmp_path / "pred"
    assert main(["--model", str(run), *images, "--out", str(out), "--fold", "1", "--no-gradcam"]) == 0
    probs, dice = _predicted(out, images, masks)
    want_probs, want_dice = _scored(run, "_fold1")
    np.testing.assert_allclose(probs, want_probs, atol=1e-5)
    np.testing.assert_allclose(dice, want_dice, atol=1e-6)
    assert np.abs(want_probs - _scored(run)[0]).max() > 1e-3
    info = json.loads((out / "predict.json").read_text())
    assert info["folds"] == [1] and info["model_files"] == [str(run / "model_fold1.keras")]
    assert info["preprocessing"]["normalizer"] == json.loads((run / "normalizer_fold1.json").read_text())
    # the same by its model file; a fold the run does not have is one line
    assert Predictor.from_run(run / "model_fold1.keras").folds == [1]
    assert main(["--model", str(run), images[0], "--out", str(tmp_path / "p2"), "--fold", "2"]) == 1


def test_ensemble_gradcam_is_the_mean_of_the_folds_heatmaps(cv_runs, radiograph):
    """On the radiograph, by hand: each fold's model on the image normalised with its own fold's
    normaliser; probabilities averaged; Grad-CAM of the ensemble's class per fold, averaged."""
    run = cv_runs / "joint"
    pred = Predictor.from_run(run)
    got = pred.predict([read_image(radiograph)])[0]
    probs, heats = [], []
    for k, name in enumerate(("model.keras", "model_fold1.keras")):
        norm = json.loads((run / f"normalizer_fold{k}.json").read_text())
        model = load_model(run / name)
        x = _by_hand(radiograph, norm["mean"], norm["std"])
        probs.append(np.asarray(model([x], training=False)["abnormal"])[0])
        heats.append((keras.Model(model.inputs[0], model.get_layer("abnormal.out").output), x))
    want = np.mean(probs, axis=0)
    np.testing.assert_allclose(got.probs["abnormal"], want, rtol=1e-5, atol=1e-6)
    cls = int(want.argmax())
    heat = np.mean([grad_cam(m, x, feature_layer(m), class_index=cls)[0] for m, x in heats], axis=0)
    back = np.clip(cv2.resize(heat, (1841, 1955), interpolation=cv2.INTER_LINEAR), 0, 1)
    np.testing.assert_allclose(got.gradcam["abnormal"], back, atol=1e-5)


def test_a_run_with_only_fold_0s_model_predicts_with_it(cv_runs, radiograph, tmp_path, caplog):
    """A run folder from before every fold's model was saved (model.keras, normalizer.json) keeps
    working: fold 0's model alone, with a warning that the run was scored by its ensemble."""
    src, run = cv_runs / "joint", tmp_path / "old-run"
    run.mkdir()
    for name in ("args.json", "results.json", "model.keras", "normalizer.json", "normalizer_fold0.json",
                 "normalizer_fold1.json", "predictions_abnormal_fold0.csv", "predictions_abnormal.csv"):
        (run / name).write_bytes((src / name).read_bytes())
    images, _ = _test_set(run)
    out = tmp_path / "pred"
    assert main(["--model", str(run), *images, "--out", str(out), "--no-gradcam"]) == 0
    assert "only fold 0's model was saved" in caplog.text
    table = pd.read_csv(out / "predictions.csv").set_index("file").loc[images]
    np.testing.assert_allclose(table[["abnormal_p_normal", "abnormal_p_tb"]].to_numpy(),
                               _scored(src, "_fold0")[0], atol=1e-5)
    assert json.loads((out / "predict.json").read_text())["folds"] == [0]
