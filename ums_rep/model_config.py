"""``model_config.json``: what the model(s) of a run folder are, written by the run that trained
them and read by ``python -m ums_rep.predict`` (:meth:`ums_rep.inference.Predictor.from_run`)
instead of the producing command's name.

One JSON object (written atomically, like the other files of a run folder)::

    {"format": 1,
     "command": "ums_rep.finetune",                 # the command that made the folder
     "produced_by": "finetune --strategy joint --tasks cxr-hetero",   # as results.json says
     "package_version": "0.1.0",
     "backbone": "cdae", "modality": "cxr",         # ums_rep.backbone_registry's record
     "input": {"shape": [128, 128, 1], "geometry": "resize"},
     "normalizer": "normalizer.json",
     "tasks": {"lung_seg": {"kind": "segmentation", "classes": []},
               "abnormal": {"kind": "classification", "classes": ["normal", "tb"]}},
     "task_set": "cxr-hetero", "strategy": "joint",
     "cross_validated": true,                       # --fold picks one fold's model(s)
     "folds": [{"fold": 0, "normalizer": "normalizer.json",
                "models": {"model.keras": {"lung_seg": "lung_seg", "abnormal": "abnormal"}}},
               {"fold": 1, "normalizer": "normalizer_fold1.json",
                "models": {"model_fold1.keras": {...}}}]}

Each fold's ``models`` maps a model file (relative to the run folder) to the tasks it predicts
and, for each, its key in the model's dict output (null: the model's only output). A run without
folds (``ums_rep.pretrain``) has one entry whose ``fold`` is null; a run of several seeds has one
such entry per seed (with its ``seed``, its model files in the seed's folder), alternatives of
which predict takes the first unless given a seed's folder or model file. The file is written when the
model files are, at the end of a run: a folder without it is a run of an older version of the
package, or an unfinished one, which ``predict`` reads as before, by its command.

This module is light (no TensorFlow).
"""
from __future__ import annotations

import json
from pathlib import Path

from data_prep.io import atomic_write_text

FILE = "model_config.json"
FORMAT = 1


def fold_entry(fold: int | None, normalizer: str, models: dict, *, seed: int | None = None) -> dict:
    """One entry of ``folds``.

    Args:
        fold: The cross-validation fold, or None (a run without folds).
        normalizer: The normaliser file of this fold's model(s), relative to the run folder.
        models: ``{model file: {task: output key or None}}``, files relative to the run folder
            (``/``-separated).
        seed: The seed of a run of several seeds (one entry each, ``fold`` None); None: not one.

    Returns:
        The entry.
    """
    entry = {"fold": fold, "normalizer": normalizer,
             "models": {Path(f).as_posix(): dict(outputs) for f, outputs in models.items()}}
    return entry if seed is None else {**entry, "seed": seed}


def describe(command: str, produced_by: str, backbone, input_shape, tasks: dict, folds: list, *,
             task_set: str | None = None, strategy: str | None = None, geometry: str = "resize") -> dict:
    """The ``model_config.json`` body of a run.

    Args:
        command: The command that made the run folder (``"ums_rep.pretrain"``).
        produced_by: The run's command line as ``results.json`` names it.
        backbone: The :class:`ums_rep.backbone_registry.Backbone` the models are built on.
        input_shape: The models' input ``(H, W, 1)``.
        tasks: ``{name: ums_rep.tasks.Task}`` the models predict.
        folds: :func:`fold_entry` per fold (one, with fold None, for a run without folds).
        task_set: The task set fine-tuned, if any.
        strategy: The fine-tuning strategy, if any.
        geometry: How an image becomes a model input (:class:`ums_rep.inference.Geometry`).

    Returns:
        The JSON object.
    """
    from ums_rep import __version__
    return {"format": FORMAT, "command": command, "produced_by": produced_by, "package_version": __version__,
            "backbone": backbone.name, "modality": backbone.modality,
            "input": {"shape": [int(d) for d in input_shape], "geometry": geometry},
            "normalizer": "normalizer.json",
            "tasks": {name: {"kind": t.kind, "classes": list(t.classes)} for name, t in tasks.items()},
            "task_set": task_set, "strategy": strategy,
            "cross_validated": any(f["fold"] is not None for f in folds), "folds": list(folds)}


def write(out, config: dict) -> Path:
    """Write ``out/model_config.json`` atomically.

    Args:
        out: The run folder.
        config: :func:`describe`'s object.

    Returns:
        The file's path.
    """
    path = Path(out) / FILE
    atomic_write_text(path, json.dumps(config, indent=1) + "\n")
    return path


def read(run) -> dict | None:
    """A run folder's ``model_config.json``.

    Args:
        run: The run folder.

    Returns:
        The object, or None when the folder has no such file (a run of an older version of the
        package, or an unfinished one).

    Raises:
        ValueError: The file is not a ``model_config.json`` this version reads.
    """
    path = Path(run) / FILE
    if not path.is_file():
        return None
    try:
        config = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: cannot read ({e})") from None
    missing = sorted({"format", "command", "backbone", "input", "tasks", "folds"} - set(config)) \
        if isinstance(config, dict) else ["an object"]
    if missing:
        raise ValueError(f"{path}: not a model configuration (lacks {', '.join(missing)})")
    if config["format"] != FORMAT:
        raise ValueError(f"{path}: format {config['format']!r}; this version of the package reads {FORMAT}")
    return config
