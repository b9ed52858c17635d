"""The eye-gaze data recipe of MT-UNet (Section 4): the presets, the prepared data, the tf.data
pipeline and the split check.

The eye-gaze layout is letter-boxed to the preset's shape (paper 640×416; ``--shape 640x512`` is
the authors' code), saliency comes from duration-weighted fixations, and the split is
patient-level, class-stratified 70/10/20 (the authors split per class, not per patient).
``mt_unet.train`` and ``mt_unet.evaluate`` both take their data from here.
"""
from __future__ import annotations

from data_prep.egd import CLASSES
from data_prep.pipeline import make_dataset
from mt_unet.model import DISEASE, SALIENCY
from ums_rep.runs import prepared_data

PRESETS = {
    "tiny": {"shape": (64, 48), "base": 4, "epochs": 2, "batch": 4, "patience": 1, "lr": 1e-3, "seeds": 1,
             "n": 40, "phantom_size": 96},
    "quick": {"shape": (96, 64), "base": 8, "epochs": 20, "batch": 8, "patience": 3, "lr": 1e-3, "seeds": 3,
              "n": 300, "phantom_size": 256},
    "paper": {"shape": (640, 416), "base": 64, "epochs": 500, "batch": 6, "patience": 40, "lr": 1e-4, "seeds": 5,
              "n": 1083, "phantom_size": 640},
}


def preset(name: str, **overrides) -> dict:
    """A copy of ``PRESETS[name]`` with the given overrides (``epochs``, ``lr``, ``patience``,
    ``batch``, ``shape``, ...); an override that is ``None`` (or 0) keeps the preset's value."""
    p = dict(PRESETS[name])
    p.update({k: v for k, v in overrides.items() if v})
    return p


def egd_data(data_root, preset_name: str, shape, seed: int):
    """The prepared eye-gaze data (``ums_rep.runs.prepared_data``) of ``--data`` (``None``: the
    preset's phantom) letter-boxed to ``shape`` (H, W), split with ``seed``."""
    p = PRESETS[preset_name]
    return prepared_data("egd", data_root, shape=tuple(shape), seed=seed, phantom_n=p["n"],
                         phantom_size=p["phantom_size"])


def dataset(prepared, rows, batch: int, tasks, **kw):
    """The eye-gaze pipeline: image → ``{"label": one-hot, "saliency": map summing to 1}``."""
    return make_dataset(prepared, rows, label_column="label" if DISEASE in tasks else None,
                        classes=CLASSES if DISEASE in tasks else None, saliency=SALIENCY in tasks,
                        batch_size=batch, **kw)


def check_split(prepared, rows: dict, tasks) -> None:
    """Fail before training when a split is empty or, for classification, lacks a class."""
    for split, df in rows.items():
        if df.empty:
            raise ValueError(f"{prepared.root}/manifest.csv: the {split} split is empty")
        if DISEASE in tasks and split == "train":
            missing = sorted(set(CLASSES) - set(df["label"].astype(str)))
            if missing:
                raise ValueError(f"{prepared.root}/manifest.csv: the training split has no {missing} images")
