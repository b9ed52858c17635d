"""MT-UNet joins the shared framework through the ``ums_rep.plugins`` entry point alone: a fresh
process that imports only ``ums_rep`` finds MT-UNet's claims, report section, presets and
predictor once :func:`ums_rep.plugins.load` has run, and not before."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

_PROBE = """
import json, sys
from ums_rep import claims, plugins, predictors, presets, reporting, reproduce_plan
before = {"imported": sorted(m for m in sys.modules if m.split(".")[0] == "mt_unet"),
          "kinds": "mt_unet.train" in reporting.KINDS, "stage": reproduce_plan.stage_of("mt_unet-x"),
          "closings": reproduce_plan.closings()}
names = plugins.load()
print(json.dumps({"before": before, "names": names,
                  "claims": sum(c.paper == "MT-UNet" for c in claims.REGISTRY),
                  "kinds": [k for k in reporting.KINDS if k.startswith("mt_unet")],
                  "reported": "mt_unet.train" in reporting.REPORTED,
                  "sections": [h for h, _ in reporting.SECTIONS],
                  "stages": list(presets.STAGES),
                  "predict": {c: [k.geometry, k.feature_layer] for c, k in predictors.RUN_KINDS.items()},
                  "stage": reproduce_plan.stage_of("mt_unet-mtunet-full-mtl3"),
                  "closings": reproduce_plan.closings(),
                  "tensorflow": "tensorflow" in sys.modules}))
"""


def test_the_entry_point_fills_every_registry_and_ums_rep_alone_names_none():
    proc = subprocess.run([sys.executable, "-c", _PROBE], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    # ums_rep imports no mt_unet module itself, and knows no MT-UNet stage of reproduce.sh
    assert got["before"] == {"imported": [], "kinds": False, "stage": "mt_unet-x", "closings": []}
    assert "mt_unet" in got["names"], "the ums_rep.plugins entry point is not installed: pip install -e ."
    assert got["claims"] == 40
    assert got["kinds"] == ["mt_unet.train", "mt_unet.evaluate"] and got["reported"]
    assert got["sections"] == ["MT-UNet"]
    assert got["stages"][-1] == "mt_unet"
    assert got["predict"]["mt_unet.train"] == ["letterbox", "unet.bottleneck.relu2"]
    assert got["stage"] == "MT-UNet" and got["closings"] == ["MT-UNet comparison table"]
    assert list(got["predict"])[:2] == ["ums_rep.finetune", "ums_rep.pretrain"]
    assert not got["tensorflow"]  # the report's plugins load without TensorFlow
