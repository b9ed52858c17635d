"""What MT-UNet adds to the shared framework, loaded through the ``ums_rep.plugins`` entry point
(``setup.cfg``; :func:`ums_rep.plugins.load`): its claims (:mod:`mt_unet.claims`), its report
section and the kinds of results.json the report reads (:mod:`mt_unet.reporting`), its presets
(:mod:`mt_unet.presets`) and how ``python -m ums_rep.predict`` reads its run folders
(:mod:`ums_rep.predictors`; the reading itself, :mod:`mt_unet.inference`, loads with
TensorFlow only when such a folder is predicted), and the stage of ``reproduce.sh``'s MT-UNet
steps with its closing comparison table (:func:`ums_rep.reproduce_plan.register_stage`).
Importing this module loads no TensorFlow.
"""
from __future__ import annotations

from mt_unet import claims, presets, reporting  # noqa: F401  each registers on import
from ums_rep import predictors, reproduce_plan

TRAIN_COMMAND = "mt_unet.train"
FEATURES = "unet.bottleneck.relu2"  # MT-UNet's deepest features (every variant's head sees them): Grad-CAM's layer

predictors.register(predictors.RunKind(TRAIN_COMMAND, "mt_unet.inference:members", geometry="letterbox",
                                       feature_layer=FEATURES))

STEP_PREFIX = "mt_unet-"  # reproduce.sh's MT-UNet steps: mt_unet-<model>-<variant>-<scheme>[-...]
COMPARE = "MT-UNet comparison table"  # reproduce.sh's step after them: mt_unet.train --compare, compare.md
reproduce_plan.register_stage(STEP_PREFIX, "MT-UNet", 3, closing=COMPARE)
