"""How ``python -m ums_rep.predict`` reads an ``mt_unet.train`` run folder (:func:`members`,
which :mod:`mt_unet.plugin` registers with :mod:`ums_rep.predictors`), and the ``mt_unet``
model kind that ``ums_rep.runs.load_model(..., expect="mt_unet")`` checks (registered here).

A run folder with ``model_config.json`` (:func:`mt_unet.experiment.model_description`) is read
from it by :func:`ums_rep.inference.config_members`; this module reads the older ones. An
``mt_unet.train`` run predicts with ``seed<k>/model.keras`` (the first seed's, unless a seed
folder or model file is given), its saliency and/or disease head; the image is letter-boxed
(aspect kept, zero padding) to the model's input H×W and normalised with ``normalizer.json``
(the prepared eye-gaze data's training split). Grad-CAM of the disease head reads
:data:`mt_unet.plugin.FEATURES`.
"""
from __future__ import annotations

import logging
from pathlib import Path

from mt_unet.tasks import DISEASE, SALIENCY, TASKS
from ums_rep.inference import Head, Member
from ums_rep.runs import RunFolderError, load_model, register_model_kind

log = logging.getLogger("mt_unet.inference")

MODEL_KIND = "mt_unet"


def heads(run: Path, model_file: Path | None, given: Path) -> list:
    """The heads of an ``mt_unet.train`` run's model: ``model_file``, else the ``model.keras`` of
    the folder given (a seed's), else the first seed's.

    Args:
        run: The run folder.
        model_file: The model file given, or None.
        given: The path given (the run folder, or a seed folder inside it).

    Returns:
        One :class:`ums_rep.inference.Head` per task of :data:`mt_unet.tasks.TASKS` the model outputs.

    Raises:
        RunFolderError: No seed's model in the run folder."""
    if model_file is None:
        if (given / "model.keras").exists():
            model_file = given / "model.keras"
        else:
            seeds = sorted(run.glob("seed*/model.keras"), key=lambda p: (len(p.parent.name), p.parent.name))
            if not seeds:
                raise RunFolderError(f"{run}: no seed*/model.keras (an unfinished run?)")
            model_file = seeds[0]
            if len(seeds) > 1:
                log.info("%s: %d seeds' models; using %s (give --model %s for another)", run, len(seeds),
                         model_file.parent.name, run / "seed<k>")
    model = load_model(model_file, expect=MODEL_KIND)
    return [Head(TASKS[k], model, k, file=model_file) for k in model.output if k in TASKS]


register_model_kind(MODEL_KIND, "an eye-gaze model with a saliency and/or disease output, e.g. mt_unet.train's "
                    "model.keras", lambda m: len(m.inputs) == 1 and isinstance(m.output, dict)
                    and bool({SALIENCY, DISEASE} & set(m.output)))


def members(run: Path, model_file: Path | None, given: Path, fold: int | None) -> list:
    """The one model set of an ``mt_unet.train`` run, its normaliser left to
    :meth:`ums_rep.inference.Predictor.from_run` (``normalizer.json``).

    Args:
        run: The run folder.
        model_file: The model file given, or None.
        given: The path given (the run folder, or a seed folder inside it).
        fold: None (the runs have seeds, not folds).

    Returns:
        ``[Member]``."""
    return [Member(heads(run, model_file, given), None)]
