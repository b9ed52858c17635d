"""Issue 28: a third backbone is one record. This file registers a toy chest X-ray autoencoder
(two stride-2 convolutions and their mirrored decoder) and runs pretrain → finetune → predict on
it at the tiny preset, on the phantom data the package generates, without touching a package
module: the commands learn what the backbone is from its record, and predict learns what the
models are from the run folders' ``model_config.json``."""
import json
import shutil

import keras
import numpy as np
import pandas as pd
import pytest
from keras import layers

from ums_rep.backbone_registry import Backbone, register_backbone, unregister_backbone
from ums_rep.layers import conv_bn_relu, decoder
from ums_rep.tasks import Task

FILTERS = (4, 8)


def build_toy(side: int, params: dict, preset: dict) -> keras.Model:
    """The toy backbone: image → two stride-2 conv-BN-ReLU → mirrored decoder → image."""
    inputs = keras.Input((side, side, 1), name="toy.input")
    x = inputs
    for i, f in enumerate(params["filters"], 1):
        x = conv_bn_relu(x, f, f"toy.enc{i}", strides=2)
    x = decoder(x, tuple(params["filters"]), name="toy.dec")
    return keras.Model(inputs, layers.Conv2D(1, 3, padding="same", name="toy.out", dtype="float32")(x), name="toy")


TOY = Backbone("toy", "cxr", build_toy, defaults={"filters": list(FILTERS), "optimizer": "adam", "learning_rate": 1e-3},
               pretraining_data="rsna", pretraining_target=Task("denoise", "reconstruction"),
               feature_layer="toy.enc2.relu", decoder_to_transfer="toy.dec", baseline_denoiser=True,
               default_heads={"head_units": 12}, description="a toy two-layer denoising autoencoder (a test's)")


@pytest.fixture
def toy(tmp_path, monkeypatch):
    monkeypatch.setenv("UMS_REP_CACHE", str(tmp_path / "cache"))
    register_backbone(TOY)
    yield TOY
    unregister_backbone(TOY.name)


def test_a_toy_backbone_pretrains_finetunes_and_predicts(toy, tmp_path):
    from ums_rep.finetune import main as finetune
    from ums_rep.predict import main as predict
    from ums_rep.pretrain import main as pretrain

    # pretrain: --backbone's choices are the registry's; the record says data, target and builder
    pre = tmp_path / "pretrain"
    assert pretrain(["--backbone", "toy", "--preset", "tiny", "--out", str(pre), "--no-progress"]) == 0
    config = json.loads((pre / "model_config.json").read_text())
    assert (config["backbone"], config["modality"], config["command"]) == ("toy", "cxr", "ums_rep.pretrain")
    assert config["tasks"] == {"denoise": {"kind": "reconstruction", "classes": []}}
    assert config["input"]["shape"] == [32, 32, 1] and config["package_version"]
    results = json.loads((pre / "results.json").read_text())
    assert {"noisy", "toy", "nlm", "wavelet"} == set(results["table2"]["gaussian10"])  # Table 2's rows, its own

    # finetune on the toy encoder: the backbone is read from the encoder's run (model_config.json)
    ft = tmp_path / "finetune"
    assert finetune(["--strategy", "joint", "--tasks", "cxr-hetero", "--preset", "tiny", "--epochs", "1",
                     "--encoder", str(pre / "model.keras"), "--out", str(ft), "--no-progress"]) == 0
    config = json.loads((ft / "model_config.json").read_text())
    assert (config["backbone"], config["task_set"], config["strategy"]) == ("toy", "cxr-hetero", "joint")
    assert config["folds"] == [{"fold": 0, "normalizer": "normalizer.json",
                                "models": {"model.keras": {"lung_seg": "lung_seg", "abnormal": "abnormal"}}}]
    model = keras.saving.load_model(ft / "model.keras", safe_mode=True, compile=False)
    assert "toy.enc2.relu" in {layer.name for layer in model.layers}  # the heads sit on the toy encoder
    assert model.get_layer("abnormal.fc").units == 12  # the record's default head, not the package's 1,024

    # predict: a phantom test image through the fine-tuned model, with Grad-CAM at the toy's features
    prepared = json.loads((ft / "results.json").read_text())["config"]["prepared"]["test"]
    image = str(next(p for p in sorted((tmp_path / "cache").rglob("*.png")) if str(p).startswith(prepared)))
    out = tmp_path / "pred"
    assert predict(["--model", str(ft), image, "--out", str(out)]) == 0
    row = pd.read_csv(out / "predictions.csv").iloc[0]
    assert row.abnormal_p_normal + row.abnormal_p_tb == pytest.approx(1, abs=1e-5) and 0 <= row.lung_seg_fraction <= 1
    assert list(out.glob("*_abnormal_gradcam.png")) and list(out.glob("*_lung_seg_mask.png"))

    # the run's model_config.json alone says what its models are: without args.json and
    # results.json (what predict read before it) the folder predicts the same
    bare = tmp_path / "bare"
    shutil.copytree(ft, bare, ignore=shutil.ignore_patterns("args.json", "results.json", "encoder", "checkpoints"))
    assert predict(["--model", str(bare), image, "--out", str(tmp_path / "pred2"), "--no-gradcam"]) == 0
    again = pd.read_csv(tmp_path / "pred2" / "predictions.csv").iloc[0]
    np.testing.assert_allclose(again[["abnormal_p_normal", "abnormal_p_tb"]].to_numpy(float),
                               row[["abnormal_p_normal", "abnormal_p_tb"]].to_numpy(float), atol=1e-6)

    # and the pretrained toy denoises, as its record's target says
    assert predict(["--model", str(pre), image, "--out", str(tmp_path / "pred3")]) == 0
    assert list((tmp_path / "pred3").glob("*_denoised.png"))
