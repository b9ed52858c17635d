"""Run a trained model of the package on one's own images (``python -m ums_rep.predict``).

:meth:`Predictor.from_run` reads a run folder of any command that trains a model and applies
that run's own preprocessing, stored in the folder. A run folder's ``model_config.json``
(:mod:`ums_rep.model_config`) says what its models are — backbone, input, tasks and heads, each
fold's model files and normaliser — and is what predict reads; a folder without one (made by an
older version of the package) is read by the command that made it, as follows:

* ``ums_rep.finetune`` — per fold k, the model(s) (:func:`fold_model_file`: ``model.keras``, one
  output per task of the run's task set, or for ``--strategy baseline`` ``model_<task>.keras``,
  for fold 0; ``model_fold<k>.keras`` / ``model_<task>_fold<k>.keras`` for the others) and the
  normaliser of that fold's training images (``normalizer.json`` for fold 0, as
  ``normalizer_fold0.json``; ``normalizer_fold<k>.json``); square bicubic resize to the model's
  input side. A cross-validated run predicts with its **fold ensemble**, as its test set was
  scored (UMS-Rep Sections 4.1.2 and 4.2; :data:`ums_rep.evaluation.ENSEMBLE`): each fold's model
  on the image normalised with that fold's own normaliser, the probabilities averaged (a
  segmentation head: the mean probability map, then the 0.5 threshold). ``fold=K`` picks one
  fold's model(s). A run saved before every fold's model was (``model.keras`` only) predicts
  with fold 0's, with a warning;
* ``ums_rep.pretrain`` — ``model.keras``, predicting its backbone's pretraining target
  (:mod:`ums_rep.backbone_registry`: the CDAE a denoiser, the echo encoder a flow-type
  classifier over ``FLOW_CLASSES``); as above, ``normalizer.json`` holding the prepared data's
  training-split statistics;
* another paper's training command — as its package registered it (:func:`ums_rep.predictors.register`:
  which model files, which heads, resize or letter-box), loaded through :mod:`ums_rep.plugins`.

As ``data_prep.prepare`` does for the training images, an image is read as gray in [0, 1]
(:func:`data_prep.io.read_image`: DICOM, PNG, JPEG, TIFF, BMP), resized or letter-boxed, rounded
to 8 bits (the prepared images are 8-bit PNGs) and normalised as ``(x - mean) / std``.

What comes out, per image (:class:`Prediction`): class probabilities per classification head
and, where the model has the encoder's feature layer at top level, a Grad-CAM heatmap of the
predicted class (:func:`ums_rep.derive.grad_cam`; for a fold ensemble
:data:`FOLD_ENSEMBLE_GRADCAM`); a binary mask per segmentation head; a saliency map per saliency head;
the denoised image (CDAE). Maps are brought back to the image's original size (for a
letter-box, the padding is cropped first). :func:`predict_files` writes them as PNGs with
``predictions.csv``.

Runs made before their command wrote ``normalizer.json`` (pretrain, and runs of a package whose
heads leave the normaliser to :class:`Predictor`) fall back, with a
warning, to the ``stats.json`` of the prepared data their ``results.json`` names, if it is
still in the cache.
"""
from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

import keras
from data_prep.io import ImageReadError, atomic_write_text, gray8, read_image, write_png
from data_prep.transforms import Letterbox, MeanNormalizer, resize
from ums_rep.derive import grad_cam
from ums_rep.models import feature_layer
from ums_rep import backbone_registry, model_config, plugins, predictors
from ums_rep.runs import ModelFileError, RunFolderError, load_model, run_dir
from ums_rep.tasks import TASK_SETS, Task

log = logging.getLogger("ums_rep.inference")

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".dcm", ".dicom")
FOLD_ENSEMBLE = ("the fold ensemble: each fold's model on the image normalised with its own fold's normaliser, "
                 "probabilities averaged (segmentation: the mean probability map, thresholded at 0.5)")
FOLD_ENSEMBLE_GRADCAM = ("the mean of the folds' Grad-CAM heatmaps, each of the ensemble's predicted class on "
                         "the fold's own normalised input")


# --------------------------------------------------------------------------- geometry

@dataclass(frozen=True)
class Geometry:
    """How an image becomes a model input: ``resize`` (square, aspect not kept, as UMS-Rep's
    prepared data) or ``letterbox`` (aspect kept, zero padding), to ``shape`` = (H, W)."""

    method: str
    shape: tuple

    def forward(self, image: np.ndarray):
        """``(model-size image, Letterbox or None)``, rounded to 8 bits as the prepared PNGs."""
        if self.method == "letterbox":
            lb = Letterbox.fit(image.shape, self.shape)
            small = lb.apply(image)
        else:
            lb, small = None, resize(image, self.shape)
        return (np.round(np.clip(small, 0, 1) * 255) / 255).astype(np.float32), lb

    def back(self, arr: np.ndarray, original: tuple, lb, interpolation: str = "bilinear") -> np.ndarray:
        """A model-size map at the original image size (a letter-box's padding cropped first)."""
        arr = np.asarray(arr, np.float32)
        if lb is not None:
            nh, nw = lb.inner_shape
            arr = arr[lb.top:lb.top + nh, lb.left:lb.left + nw]
        interp = {"bilinear": cv2.INTER_LINEAR, "bicubic": cv2.INTER_CUBIC}[interpolation]
        return cv2.resize(arr, (int(original[1]), int(original[0])), interpolation=interp)

    def describe(self) -> str:
        return f"{self.method} to {self.shape[0]}x{self.shape[1]}"


# --------------------------------------------------------------------------- heads

@dataclass
class Head:
    """One task a model predicts: ``key`` is its key in a dict-output model (None: the model's
    only output); ``cam`` the single-output model and feature layer Grad-CAM uses, if any."""

    task: object  # ums_rep.tasks.Task
    model: keras.Model
    key: str | None = None
    cam: tuple | None = None
    file: Path | None = None


@dataclass
class Member:
    """One model set a :class:`Predictor` runs: its heads and the normaliser its model(s) were
    trained with; ``fold`` is its cross-validation fold (a finetune run's), else None."""

    heads: list
    normalizer: MeanNormalizer
    fold: int | None = None

    def head(self, task: str) -> Head:
        """The head predicting ``task``."""
        return next(h for h in self.heads if h.task.name == task)


@dataclass
class Prediction:
    """One image's outputs, maps at its original size ``shape``.

    Attributes:
        shape: The image's original ``(height, width)``.
        probs: ``{task: (C,) probabilities}`` of each classification head.
        masks: ``{task: (H, W) uint8 in {0, 1}}`` of each segmentation head.
        saliency: ``{task: (H, W) float32, maximum 1}``: each saliency head's map.
        gradcam: ``{task: (H, W) float32 in [0, 1]}``: Grad-CAM of the predicted class.
        denoised: ``{task: (H, W) float32 in [0, 1]}``: the CDAE's output.
    """

    shape: tuple
    probs: dict = field(default_factory=dict)  # task -> (C,) probabilities
    masks: dict = field(default_factory=dict)  # task -> (H, W) uint8 in {0, 1}
    saliency: dict = field(default_factory=dict)  # task -> (H, W) float32, maximum 1
    gradcam: dict = field(default_factory=dict)  # task -> (H, W) float32 in [0, 1]
    denoised: dict = field(default_factory=dict)  # task -> (H, W) float32 in [0, 1]


def _feature_layer(model: keras.Model) -> str | None:
    name = feature_layer(model)
    names = {layer.name for layer in model.layers}
    for kind in predictors.RUN_KINDS.values():
        if name is None and kind.feature_layer in names:
            name = kind.feature_layer
    return name


def _cam(model: keras.Model, key: str | None):
    """``(single-output classifier, feature layer)`` for Grad-CAM, or None where the feature
    layer is not at the model's top level (e.g. the CXR baseline wraps a nested denoiser)."""
    if key is not None:
        try:
            model = keras.Model(model.inputs[0], model.get_layer(f"{key}.out").output)
        except ValueError:
            return None
    layer = _feature_layer(model)
    return (model, layer) if layer else None


# --------------------------------------------------------------------------- the run folder

def _read_json(path: Path) -> dict:
    try:
        body = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise RunFolderError(f"{path}: cannot read ({e})") from None
    if not isinstance(body, dict):
        raise RunFolderError(f"{path}: not a JSON object")
    return body


def output_folder(out, name: str, command: str) -> Path:
    """``--out`` of ``command`` (predict, denoise): a new folder (default ``runs/<name>-<time>``) or
    an earlier output of the same command (reused); another command's run folder is refused."""
    own = out is not None and Path(out).is_dir() and run_command(Path(out)) == command
    return run_dir(out, name, command, resume=own)


def run_command(folder: Path) -> str | None:
    """The command that made ``folder``: args.json's ``command``, else results.json's."""
    if (folder / "args.json").is_file():
        cmd = _read_json(folder / "args.json").get("command")
        if cmd:
            return cmd
    if (folder / "results.json").is_file():
        cmd = str(_read_json(folder / "results.json").get("command", ""))
        for full in predictors.RUN_KINDS:
            if cmd.startswith(full) or cmd.startswith(full.split(".")[-1] + " "):
                return full
    return None


def _locate(path: Path):
    """``(run folder, model file or None, the path given)`` for ``--model`` given as a run folder,
    a folder inside one (e.g. a seed's), or a model file inside one."""
    model_file = None
    if not path.exists():
        raise RunFolderError(f"{path}: no such run folder or model file")
    if path.is_file():
        model_file, path = path, path.parent
    for folder in (path, path.parent):
        if (folder / model_config.FILE).is_file() or run_command(folder):
            return folder, model_file, path
    what = f"{model_file}: a model file outside a run folder" if model_file else f"{path}: not a run folder"
    raise RunFolderError(f"{what} (no args.json or results.json naming one of "
                         f"{', '.join(predictors.RUN_KINDS)})")


def _normalizer(run: Path, name: str = "normalizer.json") -> MeanNormalizer:
    path = run / name
    if path.is_file():
        try:
            return MeanNormalizer.from_json(path.read_text())
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise RunFolderError(f"{path}: not a normaliser ({type(e).__name__}: {e})") from None
    if name != "normalizer.json":
        raise RunFolderError(f"{path}: not found; the run folder lacks that fold's normaliser")
    prepared = None
    if (run / "results.json").is_file():
        prepared = _read_json(run / "results.json").get("config", {}).get("prepared")
    stats = Path(prepared) / "stats.json" if isinstance(prepared, str) else None
    if stats is None or not stats.is_file():
        raise RunFolderError(f"{path}: not found, and the prepared data the run used is not in the cache either; "
                             "the run folder lacks its normaliser")
    log.warning("%s: not found (a run made before its command wrote it); using %s", path, stats)
    return MeanNormalizer.from_json(stats.read_text())


def _input_shape(model: keras.Model, path: Path) -> tuple:
    shape = tuple(model.inputs[0].shape[1:]) if len(model.inputs) == 1 else ()
    if len(shape) != 3 or shape[-1] != 1 or None in shape:
        raise ModelFileError(f"{path}: expected one gray image input (H, W, 1), got {shape or len(model.inputs)}")
    return int(shape[0]), int(shape[1])


def _check_output(head: Head, path: Path) -> None:
    out = head.model.output[head.key] if head.key is not None else head.model.output
    if isinstance(out, (dict, list, tuple)):
        raise ModelFileError(f"{path}: several outputs; expected one for task {head.task.name}")
    t = head.task
    last = out.shape[-1]
    ok = (last == len(t.classes) and len(out.shape) == 2) if t.kind == "classification" \
        else (len(out.shape) == 4 and last == 1)
    if not ok:
        what = f"{len(t.classes)} class probabilities" if t.kind == "classification" else "an (H, W, 1) map"
        raise ModelFileError(f"{path}: output {head.key or 'of the model'} has shape {tuple(out.shape)}, "
                             f"not {what} for task {t.name}")


def fold_model_file(fold: int, task: str | None = None) -> str:
    """The file name ``ums_rep.finetune`` saves fold ``fold``'s model under: ``model.keras`` (one
    output per task) or, for the baseline's model of ``task``, ``model_<task>.keras`` for fold 0
    (the name a run had before every fold's model was saved); ``model_fold<k>.keras`` /
    ``model_<task>_fold<k>.keras`` for fold k ≥ 1.

    Args:
        fold: the cross-validation fold (0 for a ``--folds 1`` hold-out).
        task: the task of a one-task (baseline) model; None for the shared model.

    Returns:
        The file name, relative to the run folder.
    """
    return f"model{'_' + task if task else ''}{f'_fold{fold}' if fold else ''}.keras"


def fold_normalizer_file(fold: int) -> str:
    """The normaliser of fold ``fold``'s model(s) in a finetune run folder: ``normalizer.json``
    (fold 0's, the same as its ``normalizer_fold0.json``) or ``normalizer_fold<k>.json``.

    Args:
        fold: the cross-validation fold.

    Returns:
        The file name, relative to the run folder.
    """
    return "normalizer.json" if fold == 0 else f"normalizer_fold{fold}.json"


def _parse_model_file(stem: str) -> tuple:
    """``(task or None, fold)`` of a finetune model file's stem (see :func:`fold_model_file`)."""
    base, fold = re.fullmatch(r"(.*?)(?:_fold(\d+))?", stem).groups()
    return (base[len("model_"):] if base.startswith("model_") else None), int(fold or 0)


def _finetune_tasks(run: Path) -> tuple:
    set_name = _read_json(run / "args.json").get("tasks") if (run / "args.json").is_file() else None
    if set_name is None and (run / "results.json").is_file():
        set_name = _read_json(run / "results.json").get("config", {}).get("tasks")
    if set_name not in TASK_SETS:
        raise RunFolderError(f"{run}: unknown task set {set_name!r} in args.json (expected one of {sorted(TASK_SETS)})")
    return set_name, {s.task.name: s.task for s in TASK_SETS[set_name]["tasks"]}


def _fold_files(run: Path, fold: int, tasks) -> list:
    """Fold ``fold``'s model files in a finetune run: the shared model, else the baseline's per task."""
    shared = run / fold_model_file(fold)
    if shared.exists():
        return [shared]
    return [run / fold_model_file(fold, t) for t in tasks if (run / fold_model_file(fold, t)).exists()]


def _run_folds(run: Path) -> int:
    """How many folds a finetune run trained: ``results.json``'s ``config.folds``, else (an
    unfinished run) its ``normalizer_fold<k>.json`` files, else 1."""
    if (run / "results.json").is_file():
        folds = _read_json(run / "results.json").get("config", {}).get("folds")
        if isinstance(folds, int) and folds >= 1:
            return folds
    return max(1, len(list(run.glob("normalizer_fold*.json"))))


def _finetune_members(run: Path, model_file: Path | None, fold: int | None) -> list:
    """The model sets a finetune run predicts with: every fold's (the fold ensemble), the one fold
    ``fold`` (or ``model_file``) names, or, for a run saved before every fold's model was, fold 0's."""
    set_name, tasks = _finetune_tasks(run)
    n = _run_folds(run)
    if model_file is not None:
        named = _parse_model_file(model_file.stem)[1]
        if fold is not None and fold != named:
            raise RunFolderError(f"{model_file}: fold {named}'s model file, but fold {fold} was asked for")
        plan = {named: [model_file]}
    elif fold is not None:
        if not 0 <= fold < n:
            raise RunFolderError(f"{run}: no fold {fold}; the run trained {n} fold(s), 0..{n - 1}")
        plan = {fold: _fold_files(run, fold, tasks)}
        if not plan[fold]:
            raise RunFolderError(f"{run}: no model file of fold {fold} ({fold_model_file(fold)} or "
                                 f"{fold_model_file(fold, '<task>')}; an unfinished run?)")
    else:
        plan = {k: _fold_files(run, k, tasks) for k in range(n)}
        if not plan[0]:
            raise RunFolderError(f"{run}: no model.keras or model_<task>.keras (an unfinished run?)")
        missing = [k for k, files in plan.items() if not files]
        if n > 1 and missing == list(range(1, n)) and (run / "results.json").is_file():
            log.warning("%s: scored with its %d-fold ensemble, but only fold 0's model was saved (a run made "
                        "before every fold's was); predicting with fold 0's model alone", run, n)
            plan = {0: plan[0]}
        elif missing:
            raise RunFolderError(f"{run}: fold(s) {missing} of {n} have no model file (an unfinished run?); "
                                 "--fold K predicts with one fold's model")
    members = []
    for k, files in plan.items():
        heads = _finetune_heads(files, tasks, set_name)
        if members and sorted(h.task.name for h in heads) != sorted(h.task.name for h in members[0].heads):
            raise RunFolderError(f"{run}: fold {k}'s model(s) predict {sorted(h.task.name for h in heads)}, "
                                 f"fold {members[0].fold}'s {sorted(h.task.name for h in members[0].heads)}")
        members.append(Member(heads, _normalizer(run, fold_normalizer_file(k)), k))
    return members


def _finetune_heads(files: list, tasks: dict, set_name: str) -> list:
    heads = []
    for f in files:
        model = load_model(f)
        if isinstance(model.output, dict):
            unknown = sorted(set(model.output) - set(tasks))
            if unknown:
                raise ModelFileError(f"{f}: outputs {unknown} are not tasks of {set_name} ({sorted(tasks)})")
            heads += [Head(tasks[k], model, k, file=f) for k in model.output]
        else:
            name = _parse_model_file(f.stem)[0]
            if name not in tasks:
                raise ModelFileError(f"{f}: one output, and the file name names no task of {set_name} "
                                     f"(expected model_<task>.keras, tasks {sorted(tasks)})")
            heads.append(Head(tasks[name], model, file=f))
    return heads


def _pretrain_heads(run: Path, model_file: Path | None) -> list:
    f = model_file or run / "model.keras"
    model = load_model(f, expect="encoder")
    try:
        record = backbone_registry.of_run(run, model)
    except ValueError as e:
        raise RunFolderError(str(e)) from None
    if record is None:
        raise ModelFileError(f"{f}: a pretrain run's model of no registered backbone "
                             f"({', '.join(backbone_registry.BACKBONES)})")
    return [Head(record.pretraining_target, model, file=f)]


def _config_tasks(run: Path, config: dict) -> dict:
    """``{name: Task}`` of a ``model_config.json`` (kind and classes: what predict needs)."""
    try:
        return {name: Task(name, t["kind"], tuple(t.get("classes") or ())) for name, t in config["tasks"].items()}
    except (AttributeError, KeyError, TypeError) as e:
        raise RunFolderError(f"{run / model_config.FILE}: bad tasks ({type(e).__name__}: {e})") from None


def _relative(path: Path, run: Path) -> str | None:
    """``path`` relative to the run folder, as ``model_config.json`` names files; None: outside it."""
    try:
        return path.relative_to(run).as_posix()
    except ValueError:
        return None


def config_members(run: Path, config: dict, model_file: Path | None, fold: int | None,
                   given: Path | None = None) -> list:
    """The model sets of a run folder, as its ``model_config.json`` describes them
    (:mod:`ums_rep.model_config`): every fold's (a cross-validated run's fold ensemble), or fold
    ``fold``'s, or ``model_file``'s fold's with that file alone. Entries without a fold are
    alternatives (e.g. the seeds of a run, each model file in its own folder): the first predicts,
    or the one whose model files lie in ``given`` (a folder inside the run).

    Args:
        run: The run folder.
        config: Its ``model_config.json``.
        model_file: The model file given, or None.
        fold: The fold asked for, or None.
        given: The path given, where a folder inside the run names its entry; or None.

    Returns:
        One :class:`Member` per fold (one, with fold None, for a run without folds).

    Raises:
        RunFolderError: No such fold, or a model file or normaliser the configuration names is
            missing.
        ModelFileError: A model file that cannot be loaded, or lacks an output it should have.
    """
    tasks = _config_tasks(run, config)
    entries = list(config["folds"])
    if model_file is not None:
        name = _relative(model_file, run)
        owner = next((e for e in entries if name in e["models"]), None)
        if owner is None:
            raise RunFolderError(f"{model_file}: not one of the model files of {run / model_config.FILE}")
        if fold is not None and fold != owner["fold"]:
            raise RunFolderError(f"{model_file}: fold {owner['fold']}'s model file, but fold {fold} was asked for")
        entries = [{**owner, "models": {name: owner["models"][name]}}]
    elif given is not None and given.is_dir() and _relative(given, run) not in (None, "."):
        inside = _relative(given, run) + "/"
        entries = [e for e in entries if all(f.startswith(inside) for f in e["models"])]
        if not entries:
            raise RunFolderError(f"{given}: holds none of the model files of {run / model_config.FILE}")
    elif fold is not None:
        by_fold = {e["fold"]: e for e in entries}
        if fold not in by_fold:
            raise RunFolderError(f"{run}: no fold {fold}; the run trained {len(entries)} fold(s), "
                                 f"0..{len(entries) - 1}")
        entries = [by_fold[fold]]
    if len(entries) > 1 and all(e["fold"] is None for e in entries):
        log.info("%s: %d models without folds (e.g. seeds); using %s (give the folder or model file of another)",
                 run, len(entries), ", ".join(entries[0]["models"]))
        entries = entries[:1]
    missing = [e["fold"] for e in entries if any(not (run / f).is_file() for f in e["models"])]
    if missing:
        raise RunFolderError(f"{run}: fold(s) {missing} lack a model file {model_config.FILE} names "
                             "(moved or deleted?)")
    members = []
    for e in entries:
        heads = []
        for name, outputs in e["models"].items():
            model = load_model(run / name)
            for task, key in outputs.items():
                if task not in tasks:
                    raise RunFolderError(f"{run / model_config.FILE}: {name} predicts {task!r}, not one of its tasks")
                if key is not None and (not isinstance(model.output, dict) or key not in model.output):
                    raise ModelFileError(f"{run / name}: no output {key!r} (task {task})")
                heads.append(Head(tasks[task], model, key, file=run / name))
        members.append(Member(heads, _normalizer(run, e["normalizer"]), e["fold"]))
    return members


def finetune_members(run: Path, model_file: Path | None, given: Path, fold: int | None) -> list:
    """The model sets of an ``ums_rep.finetune`` run (:data:`ums_rep.predictors.RUN_KINDS`):
    every fold's, the fold ensemble; or fold ``fold``'s, or ``model_file``'s.

    Args:
        run: The run folder.
        model_file: The model file given, or None.
        given: The path given.
        fold: The fold asked for, or None.

    Returns:
        One :class:`Member` per fold."""
    return _finetune_members(run, model_file, fold)


def pretrain_members(run: Path, model_file: Path | None, given: Path, fold: int | None) -> list:
    """The one model set of an ``ums_rep.pretrain`` run (:data:`ums_rep.predictors.RUN_KINDS`),
    its normaliser left to :meth:`Predictor.from_run`.

    Args:
        run: The run folder.
        model_file: The model file given, or None.
        given: The path given.
        fold: None (a pretrain run has no folds).

    Returns:
        ``[Member]``."""
    return [Member(_pretrain_heads(run, model_file), None)]


# --------------------------------------------------------------------------- the predictor

class Predictor:
    """A trained model, or a fold ensemble of them, with its run's preprocessing; :meth:`predict`
    maps gray images in [0, 1] to :class:`Prediction`s.

    ``heads`` and ``normalizer`` are the (first) model set's; ``members``, where given, are all
    the model sets (:class:`Member`), whose outputs are averaged (:data:`FOLD_ENSEMBLE`).
    :meth:`from_run` builds one from a run folder; the constructor is for models in hand.

    Example:
        ```python
        from ums_rep.inference import Predictor

        predictor = Predictor.from_run("runs/finetune-cxr-hetero-joint-20261124-101500")
        [p.probs["abnormal"] for p in predictor.predict(images)]  # gray images in [0, 1]
        ```

    Args:
        heads: The model set's heads (:class:`Head`: a task, its model and output key).
        normalizer: The run's ``(x - mean) / std`` normaliser.
        geometry: How images are resized to the model's input and back (:class:`Geometry`).
        run: The run folder the models come from.
        command: The command that made the run (``ums_rep.finetune``, ``ums_rep.pretrain``,
            or one another package registered: :data:`ums_rep.predictors.RUN_KINDS`).
        model_files: The model files used, for ``predict.json``.
        gradcam: Whether classification heads get a Grad-CAM heatmap.
        members: Every model set of a fold ensemble (default: one, of ``heads`` and
            ``normalizer``).
    """

    def __init__(self, heads: list, normalizer: MeanNormalizer, geometry: Geometry, *, run: Path | None = None,
                 command: str | None = None, model_files=(), gradcam: bool = True, members=None):
        plugins.load()  # the feature layers other packages' run kinds name (Grad-CAM)
        self.members = list(members) if members else [Member(heads, normalizer)]
        self.heads, self.normalizer = self.members[0].heads, self.members[0].normalizer
        self.geometry = geometry
        self.run, self.command, self.model_files = run, command, [Path(f) for f in model_files]
        for i, m in enumerate(self.members):
            for h in m.heads:
                if gradcam and h.task.kind == "classification" and h.cam is None:
                    h.cam = _cam(h.model, h.key)
                    if h.cam is None and i == 0:
                        log.info("%s: no Grad-CAM (the model has no encoder feature layer at its top level)",
                                 h.task.name)

    @classmethod
    def from_run(cls, path, *, gradcam: bool = True, fold: int | None = None) -> "Predictor":
        """The model(s) and preprocessing of a run folder (or a model file or a seed folder inside
        one), as its ``model_config.json`` describes them (:func:`config_members`); a folder
        without one (an older run) is read by the command that made it, one of
        :data:`ums_rep.predictors.RUN_KINDS` (every package's, once :func:`ums_rep.plugins.load`
        has run).

        Args:
            path: the run folder, a ``.keras`` file inside one, or a folder inside one that holds
                a ``model.keras`` (e.g. a seed's).
            gradcam: whether classification heads get a Grad-CAM heatmap.
            fold: a cross-validated ``ums_rep.finetune`` run's fold whose model(s) (with that
                fold's normaliser) predict; None: every fold's, the fold ensemble its test set
                was scored with (UMS-Rep Sections 4.1.2 and 4.2). Other runs take none.

        Returns:
            The predictor; ``folds`` names the finetune folds it runs.

        Raises:
            RunFolderError, ModelFileError: with a one-line message.
        """
        path = Path(path)
        plugins.load()
        try:
            run, model_file, given = _locate(path)
        except RunFolderError:
            if path.is_file():
                load_model(path)  # a file that is no model is reported as such
            raise
        try:
            config = model_config.read(run)
        except ValueError as e:
            raise RunFolderError(str(e)) from None
        if config is not None:  # the run says what its models are
            command, geometry_method = config["command"], config["input"].get("geometry", "resize")
            if fold is not None and not config.get("cross_validated"):
                raise RunFolderError(f"{run}: a run folder of {command} without folds; --fold picks a fold of a "
                                     "cross-validated run")
            members = config_members(run, config, model_file, fold, given)
        else:  # a run folder made before model_config.json (or unfinished): read as its command's
            command = run_command(run)
            kind = predictors.RUN_KINDS.get(command)
            if fold is not None and not (kind and kind.folds):
                raise RunFolderError(f"{run}: a run folder of {command}; --fold picks a fold of a cross-validated "
                                     "ums_rep.finetune run")
            if kind is None:
                raise RunFolderError(f"{run}: a run folder of {command}; predict runs the models that "
                                     f"{', '.join(predictors.RUN_KINDS)} save")
            members, geometry_method = kind.read(run, model_file, given, fold), kind.geometry
        heads = [h for m in members for h in m.heads]
        if not heads:
            raise ModelFileError(f"{model_file or run}: predicts none of the run's tasks")
        shapes = {_input_shape(h.model, h.file) for h in heads}
        if len(shapes) != 1:
            raise RunFolderError(f"{run}: its models take different input sizes {sorted(shapes)}")
        for h in heads:
            _check_output(h, h.file)
        files = list(dict.fromkeys(h.file for h in heads))
        geometry = Geometry(geometry_method, shapes.pop())
        for m in members:
            if m.normalizer is None:
                m.normalizer = _normalizer(run)
        pred = cls(members[0].heads, members[0].normalizer, geometry, run=run, command=command, model_files=files,
                   gradcam=gradcam, members=members)
        log.info("%s (%s): %s; input %s, %s", run, command,
                 ", ".join(f"{h.task.name} ({h.task.kind})" for h in members[0].heads), geometry.describe(),
                 "; ".join(("" if m.fold is None else f"fold {m.fold} ")
                           + f"normalised (x - {m.normalizer.mean:.4f}) / {m.normalizer.std:.4f}" for m in members))
        if len(members) > 1:
            log.info("predicting with the %d-fold ensemble (mean of the folds' probabilities)", len(members))
        return pred

    @property
    def tasks(self) -> list:
        return [h.task for h in self.heads]

    @property
    def folds(self) -> list | None:
        """The finetune folds whose models predict (None: not a finetune run's model)."""
        folds = [m.fold for m in self.members]
        return None if all(f is None for f in folds) else folds

    def preprocess(self, image: np.ndarray, member: int = 0):
        """``(model input (H, W, 1) float32, Letterbox or None)`` for a gray image in [0, 1],
        normalised with model set ``member``'s normaliser (an index into ``members``)."""
        small, lb = self.geometry.forward(np.asarray(image, np.float32))
        return self.members[member].normalizer(small)[..., None].astype(np.float32), lb

    def predict(self, images) -> list:
        """One :class:`Prediction` per gray image (2-D, values in [0, 1], any size).

        Args:
            images: Gray images, each a 2-D array with values in [0, 1], at any size.

        Returns:
            One :class:`Prediction` per image, its maps at the image's own size; a fold
            ensemble averages its members' probabilities (a mask: the mean probability map,
            thresholded at 0.5).
        """
        return [self._one(np.asarray(img, np.float32)) for img in images]

    def _outputs(self, member: Member, x: np.ndarray) -> dict:
        """Task -> the member's output for one model input (a reconstruction back in [0, 1] units)."""
        cache, outs = {}, {}
        for h in member.heads:
            if id(h.model) not in cache:  # (a model saved with a list of one input is called with one)
                cache[id(h.model)] = h.model([x] if isinstance(h.model.input, list) else x, training=False)
            out = cache[id(h.model)]
            out = np.asarray(out[h.key] if h.key is not None else out)[0]
            if h.task.kind == "reconstruction":
                out = out * member.normalizer.std + member.normalizer.mean
            outs[h.task.name] = out
        return outs

    def _one(self, image: np.ndarray) -> Prediction:
        small, lb = self.geometry.forward(image)
        xs = [m.normalizer(small)[None, ..., None].astype(np.float32) for m in self.members]
        outs = [self._outputs(m, x) for m, x in zip(self.members, xs)]
        pred = Prediction(tuple(image.shape))
        for h in self.heads:
            kind, name = h.task.kind, h.task.name
            out = np.mean([o[name] for o in outs], axis=0)  # one model: its own output
            if kind == "classification":
                pred.probs[name] = out.astype(np.float64)
                cams = [(m.head(name).cam, x) for m, x in zip(self.members, xs) if m.head(name).cam is not None]
                if cams:
                    heat = np.mean([grad_cam(cam[0], x, cam[1], class_index=int(np.argmax(out)))[0]
                                    for cam, x in cams], axis=0)
                    pred.gradcam[name] = np.clip(self.geometry.back(heat, image.shape, lb), 0, 1)
            elif kind == "segmentation":
                prob = self.geometry.back(out[..., 0], image.shape, lb)
                pred.masks[name] = (prob > 0.5).astype(np.uint8)
            elif kind == "saliency":
                sal = self.geometry.back(out[..., 0], image.shape, lb)
                pred.saliency[name] = (sal / sal.max() if sal.max() > 0 else sal).astype(np.float32)
            elif kind == "reconstruction":
                pred.denoised[name] = np.clip(self.geometry.back(out[..., 0], image.shape, lb, "bicubic"), 0, 1)
        return pred


# --------------------------------------------------------------------------- files

def image_files(args) -> list:
    """The image paths: files as given, and every image file (by suffix, or a DICOM header)
    directly inside a folder, sorted. A folder without any raises ``ValueError``."""
    paths = []
    for a in map(Path, args):
        if a.is_dir():
            found = sorted(p for p in a.iterdir() if p.is_file() and not p.name.startswith(".")
                           and (p.suffix.lower() in IMAGE_SUFFIXES or (not p.suffix and _dicom_magic(p))))
            if not found:
                raise ValueError(f"{a}: no image files (PNG, JPEG, TIFF, BMP, DICOM) in this folder")
            paths += found
        else:
            paths.append(a)
    return paths


def _dicom_magic(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def heat_overlay(image: np.ndarray, heat: np.ndarray, alpha: float = 0.4) -> np.ndarray:
    """A heatmap in [0, 1] (jet) over the gray image, BGR uint8."""
    gray = cv2.cvtColor(gray8(image), cv2.COLOR_GRAY2BGR)
    colour = cv2.applyColorMap(gray8(heat), cv2.COLORMAP_JET)
    return cv2.addWeighted(colour, alpha, gray, 1 - alpha, 0)


def mask_overlay(image: np.ndarray, mask: np.ndarray, alpha: float = 0.35) -> np.ndarray:
    """The mask tinted red over the gray image, outlined; BGR uint8."""
    gray = cv2.cvtColor(gray8(image), cv2.COLOR_GRAY2BGR)
    red = np.zeros_like(gray)
    red[..., 2] = 255
    out = np.where(mask[..., None] > 0, cv2.addWeighted(red, alpha, gray, 1 - alpha, 0), gray)
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(out, contours, -1, (0, 0, 255), max(1, round(min(mask.shape) / 300)))
    return out


def _name(stem: str, task: str, kind: str) -> str:
    return f"{stem}_{kind}.png" if task == kind else f"{stem}_{task}_{kind}.png"


def write_prediction(out: Path, stem: str, image: np.ndarray, pred: Prediction) -> list:
    """The PNGs of one image's prediction under ``out``; returns their names."""
    files = []

    def put(task, kind, arr):
        name = _name(stem, task, kind)
        write_png(out / name, arr)
        files.append(name)

    for task, mask in pred.masks.items():
        put(task, "mask", mask * 255)
        put(task, "overlay", mask_overlay(image, mask))
    for task, sal in pred.saliency.items():
        put(task, "saliency", gray8(sal))
        put(task, "overlay", heat_overlay(image, sal))
    for task, heat in pred.gradcam.items():
        put(task, "gradcam", heat_overlay(image, heat))
    for task, img in pred.denoised.items():
        name = f"{stem}_denoised.png"
        write_png(out / name, gray8(img))
        files.append(name)
    return files


def _row(path: Path, stem: str, pred: Prediction, tasks: dict) -> dict:
    row = {"file": str(path), "output": stem, "height": pred.shape[0], "width": pred.shape[1]}
    for name, p in pred.probs.items():
        classes = tasks[name].classes
        row.update({f"{name}_p_{c}": float(v) for c, v in zip(classes, p)})
        row[f"{name}_pred"] = classes[int(np.argmax(p))]
    for name, m in pred.masks.items():
        row[f"{name}_fraction"] = float(m.mean())
    return row


def read_images(paths, failures: list):
    """``(path, gray image)`` for every path :func:`data_prep.io.read_image` can read; one that
    it cannot is logged in one line and appended to ``failures`` as ``(path, message)``."""
    for path in map(Path, paths):
        try:
            image = read_image(path)
        except ImageReadError as e:
            log.error("%s", e)
            failures.append((str(path), str(e)))
            continue
        yield path, image


def unique_stem(path: Path, used: set) -> str:
    """The file name stem outputs are written under, made unique among ``used`` (and added to it):
    ``x.png`` and ``x.dcm`` become ``x`` and ``x_dcm``."""
    stem = path.stem
    if stem in used:
        stem = f"{path.stem}_{path.suffix.lstrip('.').lower() or 'noext'}"
        n = 2
        while stem in used:
            stem, n = f"{path.stem}_{n}", n + 1
    used.add(stem)
    return stem


def predict_files(predictor: Predictor, paths, out) -> tuple:
    """Predict every image of ``paths``, writing the PNGs and ``predictions.csv`` under ``out``.
    An image that cannot be read is logged (one line) and skipped.

    Args:
        predictor: The model(s) and preprocessing (:meth:`Predictor.from_run`).
        paths: Image files (DICOM, PNG, JPEG, TIFF, BMP); see :func:`image_files` for folders.
        out: The output folder.

    Returns:
        ``(table, failures)``: the ``predictions.csv`` rows (a ``pandas.DataFrame``) and
        ``[(path, message)]`` for the images that could not be read.
    """
    out = Path(out)
    tasks = {t.name: t for t in predictor.tasks}
    rows, failures, used = [], [], set()
    for path, image in read_images(paths, failures):
        stem = unique_stem(path, used)
        pred = predictor.predict([image])[0]
        files = write_prediction(out, stem, image, pred)
        row = _row(path, stem, pred, tasks)
        rows.append(row)
        summary = ", ".join(f"{k} {row[f'{k}_pred']} ({max(p):.2f})" for k, p in pred.probs.items())
        log.info("%s (%dx%d): %s", path, *pred.shape, "; ".join(x for x in (summary, ", ".join(files)) if x))
    table = pd.DataFrame(rows)
    if rows:
        atomic_write_text(out / "predictions.csv", table.to_csv(index=False))
    return table, failures
