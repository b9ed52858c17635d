"""The README's main job (``python -m ums_rep.finetune --strategy joint``: cxr-hetero, quick
preset) learns every task it trains: each classification head beats the majority class on the
external test set and the lung masks overlap. Run at a smaller size: the quick preset's data,
image side, heads and optimisers, with fewer epochs for the encoder and the heads."""
import json

import pytest

from ums_rep import finetune, pretrain


@pytest.fixture(scope="module")
def main_job(tmp_path_factory):
    import os
    root = tmp_path_factory.mktemp("main_job")
    os.environ["UMS_REP_CACHE"] = str(root / "cache")
    saved = pretrain.PRESETS["quick"], finetune.PRESETS["quick"]
    pretrain.PRESETS["quick"] = {**saved[0], "epochs": 8}
    finetune.PRESETS["quick"] = {**saved[1], "epochs": 10}
    try:
        assert finetune.main(["--strategy", "joint", "--out", str(root / "run"), "--no-progress"]) == 0
    finally:
        pretrain.PRESETS["quick"], finetune.PRESETS["quick"] = saved
    return json.loads((root / "run" / "results.json").read_text())


def test_every_head_of_the_main_job_learns(main_job):
    assert main_job["config"]["tasks"] == "cxr-hetero" and main_job["config"]["image"] == 128
    tb = main_job["tasks"]["abnormal"]["metrics"]
    assert tb["accuracy"] > tb["majority_accuracy"], tb
    assert tb["auc"] > 0.65, tb
    assert main_job["tasks"]["lung_seg"]["metrics"]["iou"] > 0.8
