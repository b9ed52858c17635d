"""The eye-gaze data recipe of MT-UNet (Section 4): the prepared data, the tf.data
pipeline, the split check, and the data settings a saved model was trained on.

The eye-gaze layout is letter-boxed to the preset's image size (``mt_unet.presets.MT_UNET``; paper
640×416, ``--shape 640x512`` is the authors' code), saliency comes from duration-weighted fixations, and the split is
patient-level, class-stratified 70/10/20 (the authors split per class, not per patient).
``mt_unet.train`` and ``mt_unet.evaluate`` both take their data from here, so a model is scored
on the data it was trained on.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from data_prep.egd import CLASSES
from data_prep.pipeline import make_dataset
from mt_unet.presets import MT_UNET
from mt_unet.tasks import DISEASE, SALIENCY
from ums_rep.runs import prepared_data

TRAIN_COMMAND = "mt_unet.train"


def egd_data(data_root, preset_name: str, shape, seed: int):
    """The prepared eye-gaze data (``ums_rep.runs.prepared_data``) of ``--data`` (``None``: the
    preset's phantom) letter-boxed to ``shape`` (H, W), split with ``seed``."""
    p = MT_UNET[preset_name]
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


# --------------------------------------------------------------------------- a saved model's data

@dataclass(frozen=True)
class DataSettings:
    """What :func:`egd_data` needs to rebuild a model's data, and where it was read from."""
    preset: str
    data: Path | None
    seed: int
    shape: tuple
    source: str


def trained_run(model_file) -> Path | None:
    """The ``mt_unet.train`` run folder that saved ``model_file`` (``RUN/seed<k>/model.keras``,
    or a model file directly in ``RUN``): the folder whose ``args.json`` names that command."""
    model_file = Path(model_file)
    for folder in (model_file.parent, model_file.parent.parent):
        args = folder / "args.json"
        if args.is_file():
            try:
                body = json.loads(args.read_text())
            except (OSError, json.JSONDecodeError):
                continue
            if isinstance(body, dict) and body.get("command") == TRAIN_COMMAND:
                return folder
    return None


def _hw(shape) -> str:
    return "x".join(str(int(d)) for d in shape)


def evaluation_settings(model_file, input_shape, *, preset: str | None = None, data=None,
                        seed: int | None = None) -> DataSettings:
    """The data to score a saved model on: what its ``mt_unet.train`` run recorded in
    ``args.json`` (preset, ``--data``, ``--seed``), each overridden by the value given here.
    ``input_shape`` (H, W) is the model's input size. Without a run folder and without
    ``preset``, the preset whose shape is the model's input size is used. A ``preset`` given
    here whose images are not the model's input size raises ``ValueError`` (one line)."""
    shape = tuple(int(d) for d in input_shape)
    run = trained_run(model_file)
    recorded = json.loads((run / "args.json").read_text()) if run else {}
    name = preset or recorded.get("preset")
    if name is None:
        matching = [p for p, v in MT_UNET.items() if tuple(v["image"]) == shape]
        if not matching:
            raise ValueError(f"{model_file}: no mt_unet.train run folder records its preset and no preset "
                             f"prepares {_hw(shape)} images; give --preset")
        name = matching[0]
    if preset is not None:
        same_run = recorded.get("preset") == preset and recorded.get("shape")
        expected = tuple(recorded["shape"]) if same_run else tuple(MT_UNET[preset]["image"])
        if expected != shape:
            trained = f" (trained with --preset {recorded['preset']}, {run}/args.json)" if recorded.get("preset") else ""
            raise ValueError(f"{model_file}: the model takes {_hw(shape)} images, --preset {preset} prepares "
                             f"{_hw(expected)}{trained}; leave out --preset or give the one it was trained with")
    if data is None and recorded.get("data"):
        data = Path(recorded["data"])
    if seed is None:
        seed = int(recorded.get("seed", 0))
    source = f"{run}/args.json" if run else "the command line and the model's input size"
    return DataSettings(name, None if data is None else Path(data), seed, shape, source)
