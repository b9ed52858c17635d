"""Pretraining: the CDAE's Table 2 with noisy and classical rows, the echo encoder, --params."""
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from data_prep.io import read_image
from data_prep.noise import NOISE_LEVELS, apply as add_noise
from ums_rep import metrics
from ums_rep.backbones import CDAE_FILTERS
from ums_rep.pretrain import main
from ums_rep.runs import load_model


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("UMS_REP_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def _cdae_trainable_params(filters=CDAE_FILTERS) -> int:
    """The CDAE's trainable parameters from its architecture: four stride-2 3×3 convolutions and
    the mirrored decoder's four (no bias before batch norm; BN's γ and β), then a biased 3×3
    convolution to one channel."""
    widths = list(filters[-2::-1]) + [filters[0]]
    convs = list(zip((1, *filters[:-1]), filters)) + list(zip((filters[-1], *widths[:-1]), widths))
    return sum(9 * c_in * c_out + 2 * c_out for c_in, c_out in convs) + 9 * filters[0] + 1


def test_cdae_tiny_run_writes_table2(tmp_path):
    out = tmp_path / "cdae"
    assert main(["--backbone", "cdae", "--preset", "tiny", "--out", str(out), "--epochs", "3"]) == 0
    r = json.loads((out / "results.json").read_text())
    assert set(r["table2"]) == set(NOISE_LEVELS)
    for level, rows in r["table2"].items():
        assert set(rows) == {"noisy", "cdae", "nlm", "wavelet"}
        for row in rows.values():
            assert np.isfinite(row["psnr"]) and -1 <= row["ssim"] <= 1
    # noisier inputs score lower: the table measures what it claims
    assert r["table2"]["gaussian10"]["noisy"]["psnr"] > r["table2"]["gaussian50"]["noisy"]["psnr"] + 10
    # the exact count of the architecture (785,409 trainable; 786,881 with BN's moving statistics)
    model = load_model(out / "model.keras")
    assert _cdae_trainable_params() == 785_409 == sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert r["tasks"]["denoise"]["trainable_params"] == 785_409 and model.count_params() == 786_881
    assert r["seed"] == 0
    assert len(pd.read_csv(out / "history.csv")) == 3
    assert (out / "denoising.png").stat().st_size > 1000
    assert model.output.shape[1:] == (32, 32, 1)
    # the noisy and CDAE rows are those of the saved model on the test split's images, noised
    # with the stateless seed (seed, level index), normalised with the run's normalizer.json
    cfg = r["config"]
    prepared = Path(cfg["prepared"])
    manifest = pd.read_csv(prepared / "manifest.csv")
    test = manifest[manifest.split == "test"].head(cfg["eval_images"])
    assert len(test) == cfg["n_test"] >= 2
    clean = np.stack([read_image(prepared / p) for p in test.image])
    norm = json.loads((out / "normalizer.json").read_text())
    mean, std = norm["mean"], norm["std"]
    for i, level in enumerate(NOISE_LEVELS):
        noisy = add_noise(tf.constant(clean[..., None]), level, seed=tf.constant([0, i], tf.int64)).numpy()
        denoised = np.clip(np.asarray(model((noisy - mean) / std, training=False)) * std + mean, 0, 1)
        for name, image in (("noisy", noisy), ("cdae", denoised)):
            want = metrics.image_quality(clean, image[..., 0])
            got = r["table2"][level][name]
            assert got["psnr"] == pytest.approx(want["psnr"], abs=1e-3), (level, name)
            assert got["ssim"] == pytest.approx(want["ssim"], abs=1e-4), (level, name)
            assert got["ms_ssim"] == pytest.approx(want["ms_ssim"], abs=1e-4), (level, name)
        assert r["tasks"]["denoise"]["metrics"][f"{level}_psnr"] == r["table2"][level]["cdae"]["psnr"]


def test_echo_tiny_run_and_params_change_the_model(tmp_path):
    params = tmp_path / "best.json"
    params.write_text(json.dumps({"kernel_size": 5, "dilation": 3, "dropout": 0.1, "optimizer": "sgd",
                                  "batch_size": 4, "filters": [8, 8, 16, 16, 32, 32]}))
    out = tmp_path / "echo"
    assert main(["--backbone", "echo", "--preset", "tiny", "--out", str(out), "--params", str(params)]) == 0
    r = json.loads((out / "results.json").read_text())
    assert {"accuracy", "f_score", "mcc"} <= set(r["tasks"]["flow"]["metrics"])
    assert r["config"]["params"]["kernel_size"] == 5 and r["config"]["batch_size"] == 4
    model = load_model(out / "model.keras")
    conv4 = model.get_layer("echo.conv4.conv")
    assert conv4.kernel_size == (5, 5) and conv4.dilation_rate == (3, 3) and conv4.filters == 16
    assert model.get_layer("echo.flow.dropout").rate == 0.1


def test_bad_params_file_is_a_clear_error(tmp_path, caplog):
    bad = tmp_path / "best.json"
    bad.write_text("[1, 2]")
    assert main(["--backbone", "echo", "--preset", "tiny", "--out", str(tmp_path / "x"), "--params", str(bad)]) == 1
    assert "must be a JSON object" in caplog.text
