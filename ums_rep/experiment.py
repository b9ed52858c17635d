"""UMS-Rep's fine-tuning experiment (Sections 4.1.2 and 4.2; Tables 3-10): one strategy on one task
set, fold by fold — the settings checked before any work, the shared encoder (given or pretrained
now), each fold's models, data, training (:func:`ums_rep.strategies.fit`) and test scoring
(:mod:`ums_rep.evaluation`), and the run folder's ``results.json``. ``python -m ums_rep.finetune``
is the command-line shell over :func:`run`; its docstring describes the protocol.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

import keras
from data_prep.augment import Affine
from ums_rep.options import TrainingOptions
from data_prep.io import atomic_write_text, read_image
from data_prep.pipeline import make_dataset
from data_prep.transforms import MeanNormalizer
from ums_rep import backbone_registry, evaluation, model_config, presets, pretraining
from ums_rep.models import (baseline_model, build_shared, copy_model,
                            head_params, weights_digest)
from ums_rep.runs import (discard_worker_folder, history_csv, image_side, load_model, prepared_data, results,
                          save_model, start, trainable_params, write_json)
from ums_rep.strategies import ALL_TASKS, REGISTRY, FitConfig, fit
from ums_rep.tasks import TASK_SETS, cross_validation
from ums_rep import weighting as weighting_rules
from ums_rep.weighting import FixedWeights

BN_SAMPLE = 128  # training images batch norm is re-estimated on after every epoch (PreciseBN)

log = logging.getLogger("ums_rep.finetune")  # the command's messages


# --------------------------------------------------------------------------- cost

def _source_cost(encoder_path: Path, backbone: keras.Model) -> tuple[float | None, int]:
    """Training seconds and parameters of the source model (Tables 4, 6, 8, 10 count it on the
    shared side, and as the separate denoiser on the CXR baseline's): from the encoder's own
    ``results.json`` when it has one."""
    enc_results = Path(encoder_path).parent / "results.json"
    if enc_results.is_file():
        r = json.loads(enc_results.read_text())
        return float(r.get("total_train_seconds", 0.0)), int(r.get("total_params") or backbone.count_params())
    log.warning("%s: no results.json beside the encoder, so its training time is unknown and not counted",
                encoder_path)
    return None, backbone.count_params()


# --------------------------------------------------------------------------- the run

def _weighting(args, weights: dict, tasks: dict, dist):
    """The joint strategy's loss-weighting rule (:mod:`ums_rep.weighting`); None for the others."""
    if args.strategy != "joint":
        return None
    name = args.weighting
    if name == "fixed":
        return FixedWeights(weights)
    with dist.scope():  # a rule's variables are mirrored
        return weighting_rules.get(name, tasks=list(tasks))


def _bn_images(prepared, specs, train_rows, seed: int):
    """Up to ``BN_SAMPLE`` of the fold's training images (every task's, without augmentation), on
    which :func:`ums_rep.batch_norm.precise_batch_norm` re-estimates batch norm after each epoch."""
    rows = pd.concat([s.select(train_rows) for s in specs]).drop_duplicates("image")
    rows = rows.sample(min(BN_SAMPLE, len(rows)), random_state=seed)
    images, _ = next(iter(make_dataset(prepared, rows, batch_size=len(rows), cache=False)))
    return images


def _fold_normalizer(prepared, rows) -> MeanNormalizer:
    """Mean/std of this fold's training images only (applied to its validation and test images)."""
    return MeanNormalizer.fit(read_image(prepared.root / p) for p in rows.image)


@dataclass
class FinetuneOptions(TrainingOptions):
    """What ``python -m ums_rep.finetune`` is told (its options, typed; ``--weights`` and
    ``--ratio`` as the JSON objects the parser read).

    The common fields are :class:`ums_rep.options.TrainingOptions`'.

    Attributes:
        strategy: ``"independent"``, ``"alternating"``, ``"joint"`` or ``"baseline"`` (a name of
            :data:`ums_rep.strategies.REGISTRY`).
        tasks: The task set: ``"cxr-hetero"``, ``"cxr-homo"``, ``"echo-hetero"`` or
            ``"echo-homo"`` (a name of ``ums_rep.tasks.TASK_SETS``).
        encoder: A pretrained encoder ``.keras``; None: pretrain one beside the run.
        backbone: The backbone to pretrain (a name of
            :data:`ums_rep.backbone_registry.BACKBONES`, of the task set's modality); None: the
            ``--encoder``'s (its run's ``model_config.json``, else the one whose feature layer
            it has), or the modality's default.
        params: A hyper-parameters JSON file (a Talos ``best.json``).
        folds: Cross-validation folds; None: the preset's.
        epochs: Epochs; None: the preset's.
        weights: Fixed joint loss weights by task, e.g. ``{"lung_seg": 1, "abnormal": 0.5}``.
        weighting: The loss-weighting rule (a name of :mod:`ums_rep.weighting`'s registry).
        augment: Augment training images; None: the preset's.
        ratio: ``alternating``: consecutive batches by task.
        recommend_flow: ``echo-hetero``: the flow type whose good-quality images are recommended.
    """

    strategy: str = "joint"  # a name of ums_rep.strategies.REGISTRY
    tasks: str = "cxr-hetero"  # a name of ums_rep.tasks.TASK_SETS
    encoder: Path | None = None  # a pretrained encoder .keras (None: pretrain one)
    backbone: str | None = None  # a name of ums_rep.backbone_registry.BACKBONES (None: the encoder's or the default)
    params: Path | None = None  # hyper-parameters JSON (a Talos best.json)
    folds: int | None = None  # the preset's when None
    epochs: int | None = None  # the preset's when None
    weights: dict | None = None  # joint loss weights by task (fixed weighting)
    weighting: str = "fixed"  # a name of ums_rep.weighting's registry
    augment: bool | None = None  # the preset's when None
    ratio: dict | None = None  # alternating batches by task
    recommend_flow: str = "TR"  # echo-hetero: the flow type whose good-quality images are recommended


def _json_object(value) -> dict:
    """``--weights``/``--ratio``: a dict, or None; a run folder resumed from before they were parsed
    by the command line holds the JSON text."""
    return dict(json.loads(value) if isinstance(value, str) else value or {})


@dataclass
class Settings:
    """What ``run`` trains, from the arguments and the preset; checked before any work starts."""

    preset: dict
    folds: int
    specs: list
    head: dict
    params: dict
    weights: dict
    ratio: dict
    size: int
    backbone: object = None  # the encoder's ums_rep.backbone_registry.Backbone, once it is known

    @property
    def tasks(self) -> dict:
        return {s.task.name: s.task for s in self.specs}


def settings(args) -> Settings:
    """The preset with the command line's overrides, the task specs with ``--params``' head keys,
    and the loss weights / batch ratio (unknown task names refused)."""
    preset = presets.preset(args.preset, "finetune", epochs=args.epochs or None, augment=args.augment)
    sdef = TASK_SETS[args.tasks]
    params = pretraining.load_params(args.params)  # encoder keys go to pretraining, head_* keys to the heads
    head = {k: params[k] for k in backbone_registry.DEFAULT_HEADS if k in params}
    # the classification heads' optimizer: --params' head_* keys, else the preset's recipe (a named
    # deviation from Section 4.2's SGD, for every arm alike), else the paper's
    recipe = dict(zip(("head_optimizer", "head_learning_rate"), preset.get("classification_optimizer") or ()))
    recipe.update({k: params[k] for k in ("head_optimizer", "head_learning_rate") if k in params})
    specs = [s if s.task.kind != "classification" or not recipe
             else replace(s, task=replace(s.task, optimizer=recipe.get("head_optimizer", s.task.optimizer),
                                          learning_rate=float(recipe.get("head_learning_rate", s.task.learning_rate))))
             for s in sdef["tasks"]]
    weights, ratio = _json_object(args.weights), _json_object(args.ratio)
    names = {s.task.name for s in specs}
    if weights and args.weighting != "fixed":
        raise ValueError(f"--weights sets fixed loss weights; --weighting {args.weighting} learns its own")
    unknown = sorted((set(weights) | set(ratio)) - names)
    if unknown:
        raise ValueError(f"--weights/--ratio name unknown task(s) {unknown}; tasks of {args.tasks}: {sorted(names)}")
    named = getattr(args, "backbone", None)  # (a run folder resumed from before --backbone: None)
    if named is not None and backbone_registry.get(named).modality != sdef["modality"]:
        raise ValueError(f"--backbone {named} encodes {backbone_registry.get(named).modality} images; "
                         f"{args.tasks} is a {sdef['modality']} task set")
    return Settings(preset, args.folds or preset["folds"], specs, head, params, weights, ratio,
                    image_side(preset, sdef["modality"]))


def shared_encoder(args, out: Path, modality: str, size: int):
    """``(path, model)``: the ``--encoder`` given, or one pretrained now into ``out/encoder``
    (:func:`ums_rep.pretraining.pretrain_encoder` with this run's preset, seed, data and precision)."""
    encoder_path = args.encoder
    if encoder_path is None:
        encoder_path = pretraining.pretrain_encoder(
            modality, out / "encoder", preset=args.preset, seed=args.seed, data=args.data, params=args.params,
            deterministic=args.deterministic, no_progress=args.no_progress,
            precision=args.precision, distribute=args.distribute, backbone=getattr(args, "backbone", None))
    pretrained = load_model(encoder_path, expect="encoder")
    if tuple(pretrained.input.shape[1:3]) != (size, size):
        raise ValueError(f"{encoder_path}: encoder input {tuple(pretrained.input.shape[1:3])} differs from the "
                         f"preset's image size {size}; use the same --preset for pretrain and finetune")
    return encoder_path, pretrained


def encoder_backbone(encoder_path: Path, pretrained, named: str | None, modality: str):
    """The backbone record of the shared encoder (:func:`ums_rep.backbone_registry.of_run` of its
    pretraining run); ``named`` (``--backbone``) must agree, and the modality must be the task set's."""
    record = backbone_registry.of_run(Path(encoder_path).parent, pretrained)
    if record is None:
        raise ValueError(f"{encoder_path}: the encoder has no registered backbone's feature layer "
                         f"({', '.join(r.feature_layer for r in backbone_registry.BACKBONES.values())})")
    if named is not None and named != record.name:
        raise ValueError(f"{encoder_path}: a {record.name} encoder, not --backbone {named}")
    if record.modality != modality:
        raise ValueError(f"{encoder_path}: a {record.name} encoder of {record.modality} images, not {modality}")
    return record


def fold_models(strategy: str, pretrained, kind, specs, head: dict, denoiser, dist):
    """``(models, encoder layers)`` of one fold: the baseline's separate models from fresh random
    weights, or heads on a copy of the pretrained encoder (frozen for ``independent``); ``kind``
    is the encoder's backbone record, name or modality (:func:`ums_rep.models.build_shared`)."""
    declared = REGISTRY[strategy]
    with dist.scope():
        if not declared.shared:
            return {s.task.name: baseline_model(pretrained, kind, s, head, denoiser) for s in specs}, []
        models, enc_layers = build_shared(copy_model(pretrained), kind, specs, head)
        if declared.freeze_encoder:
            for layer in enc_layers:
                layer.trainable = False
    return models, enc_layers


def fold_data(specs, prepared, fold: int, train_rows, val_rows, test_rows: dict, batch: int, seed: int, augment):
    """Per task: training (shuffled, repeated, augmented) and validation datasets, batches per
    epoch and patients per part."""
    trains, vals, steps, counts = {}, {}, {}, {}
    for s in specs:
        name = s.task.name
        tr, va = s.select(train_rows), s.select(val_rows)
        if tr.empty or va.empty:
            raise ValueError(f"task {name}: no training or validation images in fold {fold}")
        kw = dict(label_column=s.label_column if s.task.kind == "classification" else None,
                  classes=s.task.classes or None, mask=s.task.kind == "segmentation")
        trains[name] = make_dataset(prepared, tr, batch_size=batch, shuffle=True, seed=seed,
                                    repeat=True, drop_remainder=True, map_fn=augment, **kw)
        vals[name] = make_dataset(prepared, va, batch_size=batch, **kw)
        steps[name] = max(1, int(np.ceil(len(tr) / batch)))
        counts[name] = {"train": int(tr.patient_id.nunique()), "val": int(va.patient_id.nunique()),
                        "test": int(test_rows[name].patient_id.nunique())}
    return trains, vals, steps, counts


def train_fold(args, models: dict, tasks: dict, trains, vals, config: FitConfig, weights: dict, dist):
    """``(fitted, stopped)``: the strategy's fit (:func:`ums_rep.strategies.fit`) and why each
    part of it stopped."""
    fitted = fit(args.strategy, models, tasks, trains, vals, config, dist=dist,
                 weighting=_weighting(args, weights, tasks, dist))
    # results.json's "stopped": the one rule's reason, or "<task>: <reason>" for each task's rule
    return fitted, [why if group == ALL_TASKS else f"{group}: {why}" for group, why in fitted["stopped"].items()]


@dataclass
class FoldOutcome:
    """What one fold leaves: per task its test probabilities and metrics, its training seconds, the
    quality head's probabilities on the flow test images (echo-hetero), its record, and per task the
    parameters it trains as the paper counts them and all those it updated."""

    probs: dict
    metrics: dict
    seconds: dict
    quality_on_flow: np.ndarray | None
    record: dict
    params: dict
    nonfinite: list


def run_fold(args, cfg: Settings, fold: int, cv, train_p, test_p, test_rows: dict, pretrained, denoiser,
             out: Path, resume: bool, dist) -> FoldOutcome:
    """One fold: its normaliser (from its training images), models, data and training; each head
    scored on its validation fold (did it learn?) and on the test set
    (``predictions_<task>_fold<k>.csv``); the fold's model(s) saved."""
    keras.utils.set_random_seed(args.seed + fold)
    preset, specs, batch = cfg.preset, cfg.specs, cfg.preset["batch"]
    train_rows, val_rows = cv.fold(fold)
    norm = _fold_normalizer(train_p, train_rows)
    atomic_write_text(out / f"normalizer_fold{fold}.json", norm.to_json())
    fold_train, fold_test = replace(train_p, normalizer=norm), replace(test_p, normalizer=norm)
    models, enc_layers = fold_models(args.strategy, pretrained, cfg.backbone, specs, cfg.head, denoiser, dist)
    enc_weights = [w for layer in enc_layers for w in layer.weights]
    start_digest = weights_digest(enc_weights) if enc_weights else None
    trains, vals, steps, counts = fold_data(specs, fold_train, fold, train_rows, val_rows, test_rows, batch,
                                            args.seed + fold, Affine() if preset.get("augment") else None)
    config = FitConfig(epochs=preset["epochs"], steps_per_epoch=steps, lr_patience=preset["lr_patience"],
                       stop_patience=preset["stop"], ratio=cfg.ratio, progress=not args.no_progress,
                       checkpoint_dir=out / "checkpoints" / f"fold{fold}", resume=resume, on_nonfinite="stop",
                       bn_images=(_bn_images(fold_train, specs, train_rows, args.seed + fold)
                                  if preset.get("precise_bn", True) else None),
                       shared_optimizer=tuple(preset["shared_optimizer"]))
    fitted, stopped = train_fold(args, models, cfg.tasks, trains, vals, config, cfg.weights, dist)
    history_csv(out / f"history_fold{fold}.csv", fitted["history"])
    validation = {}  # does every head learn? its validation fold against the majority class (no test image)
    for s in specs:
        name = s.task.name
        val_probs = evaluation.predict(models[name], vals[name])
        validation[name], _ = evaluation.score_task(s, val_probs, s.select(val_rows), train_p.root)
    probs, scores = {}, {}
    for s in specs:
        name = s.task.name
        probs[name] = evaluation.predict(models[name], make_dataset(fold_test, test_rows[name], batch_size=batch))
        scores[name], table = evaluation.score_task(s, probs[name], test_rows[name], test_p.root)
        atomic_write_text(out / f"predictions_{name}_fold{fold}.csv", table.to_csv(index=False))
    quality_on_flow = None
    if args.tasks == "echo-hetero":
        quality_on_flow = evaluation.predict(models["quality"], make_dataset(fold_test, test_rows["flow"],
                                                                              batch_size=batch))
    record = {"fold": fold, "val_fold": fold, "of": cv.n_parts, "patients": counts,
              "encoder_start_sha1": start_digest,
              "encoder_end_sha1": weights_digest(enc_weights) if enc_weights else None, "stopped": stopped,
              "seconds": {t: float(fitted["seconds"][t]) for t in cfg.tasks}, "val_metrics": validation,
              "optimizers": fitted["optimizers"], "updates": fitted["updates"]}
    _save_fold(out, fold, norm, args.strategy, models, specs, fold_test, test_rows, probs)  # every fold's model(s)
    params = {}
    for name, model in models.items():
        if not REGISTRY[args.strategy].shared:  # one end-to-end model per task (its denoiser counted apart)
            own = trainable_params(model.trainable_variables)
        else:  # the task's head; the shared encoder is counted once, in the source model
            own = head_params(model, enc_layers)
        params[name] = {"trainable_params": own, "updated_params": trainable_params(model.trainable_variables)}
    return FoldOutcome(probs, scores, {t: fitted["seconds"][t] for t in cfg.tasks}, quality_on_flow, record,
                       params, [f"fold {fold}: {w}" for w in stopped if "non-finite" in w])


def run(args: FinetuneOptions) -> int:
    """Fine-tune ``args.strategy`` on ``args.tasks`` fold by fold into a run folder; 0, or 3 when
    a non-finite loss stopped a fold (its restored weights' outputs are written).

    Example:
        ```python
        from ums_rep.experiment import FinetuneOptions, run

        run(FinetuneOptions(strategy="joint", tasks="cxr-hetero", preset="tiny", out="runs/ft-tiny"))
        ```

    Args:
        args: The command's options; ``args.resume`` continues an interrupted run.

    Returns:
        The exit code: 0, or 3 when a non-finite loss stopped a fold.
    """
    # settings: arguments are checked before any data is prepared or any encoder trained
    started = start(args, "ums_rep.finetune", lambda a: f"finetune-{a.tasks}-{a.strategy}", check=settings)
    args, out, resume, dist = started.options, started.out, started.resume, started.dist
    policy, cfg = started.policy, started.checked
    sdef = TASK_SETS[args.tasks]
    preset, specs, size, modality = cfg.preset, cfg.specs, cfg.size, sdef["modality"]
    def data(name):
        return prepared_data(name, args.data, size=size, seed=args.seed, phantom_n=preset["n"][name],
                             phantom_size=preset["phantom_size"])

    train_p = data(sdef["train"])
    test_p = data(sdef["test"]) if sdef["test"] != sdef["train"] else train_p
    cv = cross_validation(args.tasks, train_p.manifest, test_p.manifest, cfg.folds, args.seed)  # fails early if too small
    encoder_path, pretrained = shared_encoder(args, out, modality, size)
    cfg.backbone = encoder_backbone(encoder_path, pretrained, getattr(args, "backbone", None), modality)
    source_seconds, source_params = _source_cost(encoder_path, pretrained)
    denoiser = None
    shared = REGISTRY[args.strategy].shared
    if not shared and cfg.backbone.baseline_denoiser:
        denoiser = load_model(encoder_path)  # model 1: the separately trained denoiser, frozen
        denoiser.trainable = False
    test_rows = {s.task.name: s.select(cv.test) for s in specs}
    for name, rows in test_rows.items():
        if rows.empty:
            raise ValueError(f"task {name}: no test images in {sdef['test']}")
    folds = [run_fold(args, cfg, fold, cv, train_p, test_p, test_rows, pretrained, denoiser, out, resume, dist)
             for fold in range(cv.n_runs)]
    task_results = {s.task.name: {**evaluation.fold_ensemble(s, [f.probs[s.task.name] for f in folds],
                                                             [f.metrics[s.task.name] for f in folds],
                                                             test_rows[s.task.name], test_p.root, out),
                                  "train_seconds": sum(f.seconds[s.task.name] for f in folds),
                                  "learned_on_validation": [evaluation.learned(f.record["val_metrics"][s.task.name])
                                                            for f in folds],
                                  **folds[-1].params[s.task.name]} for s in specs}
    # the source model: the shared encoder's pretraining, or the CXR baseline's separate denoiser
    source = None
    if shared or cfg.backbone.baseline_denoiser:
        source = {"role": "shared encoder" if shared else "separate denoiser",
                  "path": str(encoder_path), "train_seconds": source_seconds or 0.0,
                  "trainable_params": source_params, "seconds_known": source_seconds is not None}
    if args.tasks == "echo-hetero":
        evaluation.recommendation(out, test_rows["flow"], [f.probs["flow"] for f in folds],
                                  [f.quality_on_flow for f in folds], args.recommend_flow)
    body = results(f"finetune --strategy {args.strategy} --tasks {args.tasks}",
                   {"strategy": args.strategy, "tasks": args.tasks, "preset": args.preset, **preset, "image": size,
                    "folds": cv.n_runs, "fold_partition": cv.n_parts, "test_score": evaluation.ENSEMBLE,
                    "weights": cfg.weights, "weighting": args.weighting, "params": cfg.params,
                    "ratio": cfg.ratio, "encoder": str(encoder_path),
                    "pretrain_seconds": source_seconds, "precision": policy,
                    "monitor": "each task's own validation loss" if REGISTRY[args.strategy].per_task_schedule
                    else "sum of the tasks' validation losses",
                    "data": "phantom" if args.data is None else str(args.data),
                    "prepared": {"train": str(train_p.root), "test": str(test_p.root)},
                    # what each arm trained with: the same for every strategy of a comparison
                    "optimizers": folds[0].record["optimizers"], "updates": folds[0].record["updates"],
                    "encoder_sha1": weights_digest(pretrained.weights), "folds_sha1": cv.digest(),
                    "fold_records": [f.record for f in folds]},
                   task_results, args.seed, source=source)
    model_config.write(out, _model_config(out, body["command"], args, cfg, cv.n_runs))
    write_json(out / "results.json", body)
    log.info("%s", evaluation.summary(out, args.strategy, args.tasks, body))
    discard_worker_folder(out, dist)
    nonfinite = [w for f in folds for w in f.nonfinite]
    if nonfinite:
        log.error("training stopped on a non-finite loss (%s); the outputs are those of the restored weights",
                  "; ".join(nonfinite))
        return 3
    return 0


def _model_config(out: Path, produced_by: str, args, cfg: Settings, folds: int) -> dict:
    """The run's ``model_config.json`` (:mod:`ums_rep.model_config`): every fold's model file(s)
    as :func:`_save_fold` names them, with the fold's normaliser."""
    from ums_rep.inference import fold_model_file, fold_normalizer_file
    names = list(cfg.tasks)
    entries = []
    for k in range(folds):
        files = ({fold_model_file(k): {t: t for t in names}} if REGISTRY[args.strategy].shared
                 else {fold_model_file(k, t): {t: None} for t in names})
        entries.append(model_config.fold_entry(k, fold_normalizer_file(k), files))
    return model_config.describe("ums_rep.finetune", produced_by, cfg.backbone, (cfg.size, cfg.size, 1), cfg.tasks,
                                 entries, task_set=args.tasks, strategy=args.strategy)


def _save_fold(out: Path, fold: int, norm, strategy: str, models: dict, specs, fold_test, test_rows,
               probs: dict) -> None:
    """Fold ``fold``'s model(s) (beside its ``normalizer_fold<k>.json``), so that ``ums_rep.predict``
    runs the fold ensemble the test set is scored with (Sections 4.1.2 and 4.2): the shared model
    with one output per task, or the baseline's model per task, named by
    :func:`ums_rep.inference.fold_model_file` (fold 0: ``model.keras`` / ``model_<task>.keras``;
    fold k: ``model_fold<k>.keras`` / ``model_<task>_fold<k>.keras``). Fold 0 also writes
    ``normalizer.json`` and the Grad-CAM figure (Section 4.1.3)."""
    from ums_rep.inference import fold_model_file
    if fold == 0:
        atomic_write_text(out / "normalizer.json", norm.to_json())  # travels with fold 0's model(s)
    if not REGISTRY[strategy].shared:
        for name, m in models.items():
            save_model(m, out / fold_model_file(fold, name))
    else:
        shared = keras.Model(models[specs[0].task.name].inputs, {n: m.output for n, m in models.items()})
        save_model(shared, out / fold_model_file(fold))
    if fold == 0:
        evaluation.grad_cam_figure(out, specs, models, fold_test, test_rows, {t: [p] for t, p in probs.items()})
