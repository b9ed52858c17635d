"""Pretraining the shared representation (UMS-Rep Sections 4.1.1 and 4.2.1): the library behind
``python -m ums_rep.pretrain``. What a backbone is pretrained on and for is its record's
(:mod:`ums_rep.backbone_registry`); the protocol follows the record's target:

* a reconstruction target, e.g. ``cdae`` — the denoising autoencoder on RSNA-layout data
  (UMS-Rep 4.1.1): inputs corrupted on
  the fly (Gaussian σ ∈ {10..50} on the 0–255 scale, or Poisson), clean target, MSE, RMSprop
  1e-3, reduce-on-plateau, early stopping, batch 16, patient-level 70/20/10 split. The test
  split is scored per noise level (Table 2) for the noisy input, the CDAE, and two classical
  denoisers from scikit-image (non-local means and BayesShrink wavelets) on the *same* noisy
  images; a figure shows noisy / denoised / clean.
* a classification target, e.g. ``echo`` — the dilated encoder on Doppler flow types (UMS-Rep
  4.2, 4.2.1) with the patient-level train split (70%, its fold 0 validating); CCE, Adam; scored
  on the test split.

:func:`pretrain` writes ``model.keras``, ``normalizer.json`` (the statistics its inputs were
normalised with), ``history.csv``, ``results.json``, ``model_config.json`` (what the model is:
:mod:`ums_rep.model_config`; what ``predict`` reads) (and ``denoising.png``) in its run folder;
:func:`pretrain_encoder` is what ``finetune`` and ``scan`` call for their encoder.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import tensorflow as tf

from ums_rep.options import TrainingOptions
from data_prep.io import atomic_write_text, read_image
from data_prep.noise import NOISE_LEVELS, apply as add_noise, random_training_noise
from data_prep.pipeline import make_dataset
from data_prep.plotting import pyplot
from ums_rep import backbone_registry, metrics, model_config, presets
from ums_rep.denoising import classical
from ums_rep.runs import (discard_worker_folder, history_csv, image_side, prepared_data, results, save_model, start,
                          trainable_params, write_json)
from ums_rep.strategies import ALL_TASKS, FitConfig, fit

log = logging.getLogger("ums_rep.pretrain")  # the command's messages


def load_params(path) -> dict:
    """Hyper-parameters from a Talos ``best.json`` (``--params``): a flat JSON object."""
    if path is None:
        return {}
    try:
        params = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: cannot read parameters ({e})") from e
    if not isinstance(params, dict):
        raise ValueError(f"{path}: parameters must be a JSON object, got {type(params).__name__}")
    return params


def build(backbone, image: int, params: dict, preset: dict | None = None):
    """The backbone model and its pretraining task, from the record's defaults overridden by
    ``params``.

    Args:
        backbone: A registered backbone's name or record (:mod:`ums_rep.backbone_registry`).
        image: The image side.
        params: Hyper-parameters (a Talos ``best.json``); keys the record's defaults lack are
            ignored.
        preset: The ``pretrain`` stage's preset the builder may read (e.g. ``echo_strides``).

    Returns:
        ``(model, task, params used)``: the task is the record's pretraining target with the
        optimizer and learning rate used.

    Raises:
        ValueError: An unknown backbone.
    """
    record = backbone_registry.get(backbone)
    p = {**record.defaults, **{k: v for k, v in params.items() if k in record.defaults}}
    model = record.builder()(image, p, dict(preset or {}))
    task = replace(record.pretraining_target, optimizer=p["optimizer"], learning_rate=p["learning_rate"])
    return model, task, p


def _noise_map(norm):
    def fn(image, targets, seed):
        noisy = random_training_noise(image, seed=seed)
        return (noisy - norm.mean) / norm.std, {**targets, "clean": (image - norm.mean) / norm.std}
    return fn


def evaluate_denoising(model, clean: np.ndarray, norm, seed: int, batch: int = 16,
                       name: str = "cdae") -> tuple[dict, dict]:
    """Table 2 rows: quality of noisy, CDAE, NLM and wavelet outputs against the clean images,
    for each noise level, with noise drawn from a fixed stateless seed.

    Args:
        model: The CDAE (normalised image in, normalised image out).
        clean: Clean test images, ``(n, H, W)`` in [0, 1].
        norm: The run's normaliser (``mean``, ``std``).
        seed: Seeds the noise: the same seed gives the same noisy images.
        batch: Images per forward pass.
        name: The model's row (its backbone's name).

    Returns:
        ``(table, examples)``: ``{noise level: {"noisy" | name | "nlm" | "wavelet": {"psnr",
        "ssim", "ms_ssim"}}}`` and ``{noise level: (noisy, denoised)}``, three images each, for
        the figure.
    """
    table, examples = {}, {}
    x = tf.convert_to_tensor(clean[..., None], tf.float32)
    for i, level in enumerate(NOISE_LEVELS):
        noisy = add_noise(x, level, seed=tf.constant([seed, i], tf.int64)).numpy()
        pred = model.predict((noisy - norm.mean) / norm.std, batch_size=batch, verbose=0)
        denoised = np.clip(pred * norm.std + norm.mean, 0, 1)
        rows = {"noisy": metrics.image_quality(clean, noisy[..., 0]),
                name: metrics.image_quality(clean, denoised[..., 0])}
        for method, out in classical(noisy[..., 0]).items():
            rows[method] = metrics.image_quality(clean, out)
        table[level] = rows
        examples[level] = (noisy[:3, ..., 0], denoised[:3, ..., 0])
    return table, examples


def _figure(path, clean, examples) -> None:
    plt = pyplot()
    levels = ["gaussian10", "gaussian30", "gaussian50", "poisson"]
    fig, axes = plt.subplots(len(levels), 3, figsize=(7.5, 2.6 * len(levels)))
    for row, level in zip(axes, levels):
        noisy, den = examples[level]
        for ax, img, title in zip(row, (noisy[0], den[0], clean[0]), ("noisy", "denoised (CDAE)", "clean")):
            ax.imshow(img, cmap="gray", vmin=0, vmax=1)
            ax.set_title(f"{level}: {title}", fontsize=8)
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


@dataclass
class PretrainOptions(TrainingOptions):
    """What ``python -m ums_rep.pretrain`` is told (its options, typed).

    The common fields (``preset``, ``seed``, ``data``, ``out``, ``deterministic``,
    ``precision``, ``distribute``, ``resume``, ``no_progress``) are
    :class:`ums_rep.options.TrainingOptions`'.

    Attributes:
        backbone: A registered backbone's name (:data:`ums_rep.backbone_registry.BACKBONES`):
            ``"cdae"`` (the CXR denoising autoencoder) or ``"echo"`` (the dilated echo encoder).
        params: A hyper-parameters JSON file (a Talos ``best.json``).
        epochs: Epochs to train; None: the preset's.
    """

    backbone: str = "cdae"  # a name of ums_rep.backbone_registry.BACKBONES
    params: Path | None = None  # hyper-parameters JSON (a Talos best.json)
    epochs: int | None = None  # the preset's when None


def pretrain_encoder(modality: str, out: Path, *, preset: str, seed: int, data=None, params=None,
                     deterministic: bool = False, no_progress: bool = False, precision: str = "float32",
                     distribute: str = "none", backbone: str | None = None) -> Path:
    """The shared encoder of ``modality`` (by default its default backbone: ``"cxr"`` the CDAE,
    ``"echo"`` the echo encoder), pretrained into ``out`` as ``python -m ums_rep.pretrain`` would
    with these options (finished: reused; interrupted: resumed). Returns its ``model.keras``; what
    ``finetune`` and ``scan`` train on.

    Args:
        modality: The task set's modality, e.g. ``"cxr"`` or ``"echo"``.
        out: The pretraining run folder.
        preset: ``"tiny"``, ``"quick"`` or ``"paper"``.
        seed: The random seed.
        data: A folder with one subfolder per dataset; None: phantoms.
        params: A hyper-parameters JSON file (a Talos ``best.json``).
        deterministic: Deterministic kernels (bit-identical reruns and resumes).
        no_progress: No progress bars.
        precision: ``"float32"``, ``"mixed"`` or ``"auto"``.
        distribute: ``"none"``, ``"mirrored"``, ``"multiworker"`` or ``"auto"``.
        backbone: A registered backbone of ``modality``; None: the modality's default
            (:func:`ums_rep.backbone_registry.default_for`).

    Returns:
        The path of the pretrained ``model.keras``.

    Raises:
        RuntimeError: Pretraining did not finish (a non-finite loss).
        ValueError: The backbone is unknown or of another modality.
    """
    out = Path(out)
    record = backbone_registry.default_for(modality) if backbone is None else backbone_registry.get(backbone)
    if record.modality != modality:
        raise ValueError(f"backbone {record.name!r} encodes {record.modality} images, not {modality}")
    if not (out / "results.json").is_file():
        options = PretrainOptions(backbone=record.name, preset=preset, params=params,
                                  seed=seed, out=out, data=data, deterministic=deterministic,
                                  no_progress=no_progress, precision=precision, distribute=distribute,
                                  resume=out if (out / "args.json").is_file() else None)
        if pretrain(options) != 0:
            raise RuntimeError(f"{out}: pretraining the encoder failed")
    return out / "model.keras"


def pretrain(args: PretrainOptions) -> int:
    """Pretrain ``args.backbone`` into a run folder (UMS-Rep 4.1.1 / 4.2.1); 0, or 3 when a
    non-finite loss stopped it (the restored weights' outputs are written).

    Example:
        ```python
        from ums_rep.pretraining import PretrainOptions, pretrain

        pretrain(PretrainOptions(backbone="cdae", preset="tiny", out="runs/pretrain-tiny"))
        ```

    Args:
        args: The command's options; ``args.resume`` continues an interrupted run.

    Returns:
        The exit code: 0, or 3 when a non-finite loss stopped training.

    Raises:
        ValueError: An unknown backbone (:data:`ums_rep.backbone_registry.BACKBONES`).
    """
    started = start(args, "ums_rep.pretrain", lambda a: f"pretrain-{a.backbone}",
                    check=lambda a: (presets.preset(a.preset, "pretrain", epochs=a.epochs or None),
                                     load_params(a.params), backbone_registry.get(a.backbone)))
    args, out, resume, dist, policy = started.options, started.out, started.resume, started.dist, started.policy
    preset, params, record = started.checked  # the record: a resumed run's own backbone
    dataset = record.pretraining_data
    side = image_side(preset, record.modality)
    data = prepared_data(dataset, args.data, size=side, seed=args.seed,
                         phantom_n=preset["n"][dataset], phantom_size=preset["phantom_size"])
    batch = int(params.get("batch_size", preset["batch"]))
    with dist.scope():
        model, task, used = build(record, side, params, preset)
    norm = data.normalizer
    atomic_write_text(out / "normalizer.json", norm.to_json())  # the run folder holds its preprocessing
    denoising = task.kind == "reconstruction"
    if denoising:  # noisy input, clean target: the dataset's own splits
        train_rows, val_rows, test_rows = data.rows("train"), data.rows("val"), data.rows("test")
        kw = dict(normalize=False, map_fn=_noise_map(norm))
    else:  # the encoder uses the 70% train split; its fold 0 validates, the test split scores
        train_all = data.rows("train")
        train_rows, val_rows, test_rows = train_all[train_all.fold != 0], train_all[train_all.fold == 0], data.rows("test")
        kw = dict(label_column=record.pretraining_label, classes=task.classes)
    train = make_dataset(data, train_rows, batch_size=batch, shuffle=True, seed=args.seed, repeat=True,
                         drop_remainder=True, **kw)
    val = make_dataset(data, val_rows, batch_size=batch, **kw)
    config = FitConfig(epochs=preset["epochs"], steps_per_epoch={task.name: max(1, len(train_rows) // batch)},
                       lr_patience=preset["lr_patience"], stop_patience=preset["stop"], lr_factor=0.1,
                       checkpoint_dir=out / "checkpoints", resume=resume, on_nonfinite="stop",
                       progress=not args.no_progress, label=f"{args.backbone} pretraining")
    log.info("pretraining %s on %d/%d/%d images (%s), %d parameters", args.backbone, len(train_rows),
             len(val_rows), len(test_rows), "phantom" if data.info.get("phantom") else "real", model.count_params())
    t0 = time.perf_counter()
    fitted = fit("joint", {task.name: model}, {task.name: task}, {task.name: train}, {task.name: val}, config,
                 dist=dist)
    seconds = time.perf_counter() - t0
    save_model(model, out / "model.keras")
    history_csv(out / "history.csv", fitted["history"])

    eval_rows = test_rows if preset["eval_images"] is None else test_rows.head(preset["eval_images"])
    extra = {}
    if denoising:
        clean = np.stack([read_image(data.root / p) for p in eval_rows.image])
        table, examples = evaluate_denoising(model, clean, norm, args.seed, name=record.name)
        _figure(out / "denoising.png", clean, examples)
        task_metrics = {f"{level}_{k}": v for level, rows in table.items() for k, v in rows[record.name].items()
                        if k != "ms_ssim_scales"}
        extra["table2"] = table
    else:
        ds = make_dataset(data, eval_rows, batch_size=batch, label_column=record.pretraining_label,
                          classes=task.classes)
        prob = model.predict(ds.map(lambda x, y: x), verbose=0)
        truth = eval_rows[record.pretraining_label].map({c: i for i, c in enumerate(task.classes)}).to_numpy()
        task_metrics = metrics.classification(truth, prob.argmax(1))
    body = results(f"pretrain --backbone {args.backbone}",
                   {"preset": args.preset, **preset, "image": side, "params": used, "batch_size": batch,
                    "precision": policy,
                    "data": "phantom" if data.info.get("phantom") else str(args.data), "prepared": data.info["prepared"],
                    "n_train": len(train_rows), "n_val": len(val_rows), "n_test": len(eval_rows),
                    "best_epoch": fitted["best_epoch"][ALL_TASKS], "stopped": fitted["stopped"][ALL_TASKS]},
                   {task.name: {"metrics": task_metrics, "train_seconds": seconds,
                                "trainable_params": trainable_params(model.trainable_variables)}},
                   args.seed, **extra)
    model_config.write(out, model_config.describe(
        "ums_rep.pretrain", body["command"], record, (side, side, 1), {task.name: task},
        [model_config.fold_entry(None, "normalizer.json", {"model.keras": {task.name: None}})]))
    write_json(out / "results.json", body)
    log.info("wrote %s (%.1f s of training)", out, seconds)
    discard_worker_folder(out, dist)
    if fitted["stopped"][ALL_TASKS].startswith("non-finite"):
        log.error("%s: %s; the outputs above are those of the restored weights", out, fitted["stopped"][ALL_TASKS])
        return 3
    return 0
