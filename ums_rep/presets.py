"""The tiny / quick / paper presets: one table per stage, one way to override them.

:data:`UMS_REP` gives, per preset, one entry per stage of UMS-Rep: ``pretrain`` (the shared
source model: the CDAE of Section 4.1.1, the echo encoder of Section 4.2.1), ``finetune`` (the
task heads and strategies, Sections 4.1.2 and 4.2) and ``scan`` (the Talos searches of Sections
4 and 4.2.1). Another paper's package adds its own stage with :func:`register` (a table of the
same preset names). A name means the same thing wherever it appears:

* ``n`` — phantom images written per dataset when there is no ``--data``
* ``phantom_size`` — the phantoms' side in pixels
* ``image`` — the training image size: one side, or one side per modality (UMS-Rep); (H, W)
* ``epochs``, ``batch``
* ``lr_patience`` — epochs without improvement before the learning rate drops (reduce on plateau)
* ``stop`` — epochs without improvement before training stops (where a stage does not derive it)
* ``folds`` — cross-validation folds fine-tuning trains (1: one hold-out fold of five)
* ``shared_optimizer`` — (kind, learning rate) of the shared encoder's optimizer under every
  strategy and of the baseline models' encoders (each head keeps its task's own: UMS-Rep
  Section 4.2 names the heads' optimizers, none for the encoder)
* ``precise_bn`` — re-estimate batch norm on training images after every epoch (PreciseBN)
* ``classification_optimizer`` — (kind, learning rate) of every classification head under every
  strategy and the baseline, in place of Section 4.2's SGD at 1e-2; None: the paper's.
  A deviation from the paper, chosen on validation folds (docs/fair-comparison.md)

:func:`preset` is the one override mechanism: a copy of an entry with the command line's values,
where given, in place of the preset's.
"""
from __future__ import annotations

from collections.abc import Mapping

from data_prep.cli import PRESETS as NAMES  # the names, for every command-line parser

# the paper preset follows the papers; tiny fits a unit test; quick is what a 2-core CPU trains in minutes
UMS_REP = {
    "tiny": {
        "pretrain": {"n": {"rsna": 40, "doppler": 300}, "phantom_size": 64, "image": 32, "epochs": 2,
                     "lr_patience": 1, "stop": 2, "batch": 8, "eval_images": 6, "echo_strides": 2},
        "finetune": {"n": {"shenzhen": 40, "montgomery": 20, "kermany": 120, "doppler": 300}, "phantom_size": 64,
                     "image": 32, "epochs": 2, "batch": 8, "lr_patience": 1, "stop": 2, "folds": 1, "augment": True,
                     "shared_optimizer": ("adam", 1e-3), "classification_optimizer": None, "precise_bn": True},
        "scan": {"image": 32, "phantom_size": 64, "epochs": 1},
    },
    "quick": {
        # the echo encoder strides its layers 2 and 3 below the paper preset, to fit a 2-core CPU
        "pretrain": {"n": {"rsna": 300, "doppler": 600}, "phantom_size": 128, "image": {"cxr": 128, "echo": 64},
                     "epochs": 30, "lr_patience": 3, "stop": 6, "batch": 16, "eval_images": 30, "echo_strides": 2},
        # chest X-rays at 128 px: at 64 px a TB nodule is 1-3 pixels, and the CDAE's stride-2
        # convolutions (no pooling, as the paper's) sample past it. The Shenzhen phantom count,
        # augmentation and PreciseBN are chosen on the validation folds (docs/fair-comparison.md);
        # Montgomery keeps its real 138 images, so that the test AUC is not a 60-image coin toss.
        # Every classification head of every arm, baseline included, trains with Adam at 1e-3 instead
        # of Section 4.2's SGD at 1e-2: chosen on validation folds only (head scans on the frozen
        # encoders and cxr-homo's four arms with either recipe, docs/fair-comparison.md), a named
        # deviation recorded per arm in results.json's config.optimizers.
        "finetune": {"n": {"shenzhen": 300, "montgomery": 138, "kermany": 300, "doppler": 600}, "phantom_size": 128,
                     "image": {"cxr": 128, "echo": 64}, "epochs": 30, "batch": 16, "lr_patience": 3, "stop": 5,
                     "folds": 3, "augment": True, "shared_optimizer": ("adam", 1e-3),
                     "classification_optimizer": ("adam", 1e-3), "precise_bn": True},
        "scan": {"image": {"cxr": 128, "echo": 64}, "phantom_size": 128, "epochs": 8},
    },
    "paper": {
        "pretrain": {"n": {"rsna": 2000, "doppler": 2444}, "phantom_size": 256, "image": 256, "epochs": 100,
                     "lr_patience": 5, "stop": 10, "batch": 16, "eval_images": None, "echo_strides": 1},
        # no augmentation: the paper names none
        "finetune": {"n": {"shenzhen": 662, "montgomery": 138, "kermany": 5856, "doppler": 2444}, "phantom_size": 256,
                     "image": 256, "epochs": 100, "batch": 16, "lr_patience": 5, "stop": 10, "folds": 10,
                     "augment": False, "shared_optimizer": ("adam", 1e-3),
                     "classification_optimizer": None, "precise_bn": True},
        "scan": {"image": 256, "phantom_size": 256, "epochs": 64},
    },
}

class _UmsRepStage(Mapping):
    """Preset name → UMS-Rep's entry of one stage, looked up in :data:`UMS_REP` when asked: the
    one table, so an entry replaced there is the one every command gets."""

    def __init__(self, stage: str):
        self.stage = stage

    def __getitem__(self, name: str) -> dict:
        return UMS_REP[name][self.stage]

    def __iter__(self):
        return iter(UMS_REP)

    def __len__(self) -> int:
        return len(UMS_REP)


STAGES = {stage: _UmsRepStage(stage)
          for stage in ("pretrain", "finetune", "scan")}  # stage → preset name → entry; register() adds stages


def register(stage: str, table: dict) -> None:
    """Add a stage's presets (another paper's package registers its own table).

    Args:
        stage: The stage's name, new to :data:`STAGES`.
        table: One entry (a dict) per preset name of :data:`NAMES`.

    Raises:
        ValueError: A stage registered already with another table, or a table whose names are not :data:`NAMES`.
    """
    if STAGES.get(stage, table) is not table:
        raise ValueError(f"preset stage {stage!r} is registered already")
    if tuple(table) != tuple(NAMES):
        raise ValueError(f"preset stage {stage!r}: expected the presets {list(NAMES)}, got {list(table)}")
    STAGES[stage] = table


def preset(name: str, stage: str, **overrides) -> dict:
    """A copy of preset ``name`` of ``stage`` — UMS-Rep's ``"pretrain"``, ``"finetune"`` or
    ``"scan"``, or a stage another package registered (:func:`register`) — with every override
    that is not None in place of the preset's value (a command line's unset options are None).

    Args:
        name: ``"tiny"``, ``"quick"`` or ``"paper"``.
        stage: A stage of :data:`STAGES`.
        **overrides: Values to use instead of the preset's; None leaves the preset's.

    Returns:
        A new dict: the entry with the overrides applied.

    Raises:
        ValueError: An unknown preset name.
        KeyError: An unknown stage, or an override the entry does not have.
    """
    if name not in NAMES:
        raise ValueError(f"unknown preset {name!r}; expected one of {list(NAMES)}")
    if stage not in STAGES:
        raise KeyError(f"no preset stage {stage!r}; expected one of {list(STAGES)}")
    entry = dict(STAGES[stage][name])
    unknown = set(overrides) - set(entry)
    if unknown:
        raise KeyError(f"preset {name!r} has no {sorted(unknown)}")
    entry.update({k: v for k, v in overrides.items() if v is not None})
    return entry


# The Talos search spaces (``python -m ums_rep.scan --model``): the echo encoder's is the paper's
# (Section 4.2.1; PAPER_ECHO_CHOICE is what its Talos chose), the CDAE's and the head's are ours;
# each is scored by its objective (metric, direction).
SCAN_SPACES = {
    "echo": {"kernel_size": [3, 5, 7], "dilation": [2, 3], "dropout": [0.1, 0.3, 0.5],
             "optimizer": ["sgd", "adam", "rmsprop"], "batch_size": [16, 32, 64]},
    "cdae": {"base_filters": [16, 32, 64], "learning_rate": [1e-4, 3e-4, 1e-3, 3e-3], "batch_size": [8, 16, 32]},
    "head": {"head_units": [64, 128, 256], "head_dropout": [0.25, 0.5], "head_optimizer": ["sgd", "adam"],
             "head_learning_rate": [1e-3, 1e-2], "batch_size": [16, 32]},
}
PAPER_ECHO_CHOICE = {"kernel_size": 3, "dilation": 2, "dropout": 0.5, "optimizer": "adam", "batch_size": 16}
SCAN_OBJECTIVES = {"echo": ("val_accuracy", "max"), "cdae": ("val_loss", "min"), "head": ("val_accuracy", "max")}
