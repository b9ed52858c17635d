"""Pretraining: the CDAE's Table 2 with noisy and classical rows, the echo encoder, --params."""
import json

import numpy as np
import pandas as pd
import pytest

from data_prep.noise import NOISE_LEVELS
from ums_rep.pretrain import main
from ums_rep.runs import load_model


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("UMS_REP_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


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
    assert r["tasks"]["denoise"]["trainable_params"] > 700_000 and r["seed"] == 0
    assert len(pd.read_csv(out / "history.csv")) == 3
    assert (out / "denoising.png").stat().st_size > 1000
    model = load_model(out / "model.keras")
    assert model.output.shape[1:] == (32, 32, 1)


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
