"""Pretraining the shared representation (UMS-Rep Sections 4.1.1 and 4.2.1): the library behind
``python -m ums_rep.pretrain``.

* ``cdae`` — the denoising autoencoder on RSNA-layout data (UMS-Rep 4.1.1): inputs corrupted on
  the fly (Gaussian σ ∈ {10..50} on the 0–255 scale, or Poisson), clean target, MSE, RMSprop
  1e-3, reduce-on-plateau, early stopping, batch 16, patient-level 70/20/10 split. The test
  split is scored per noise level (Table 2) for the noisy input, the CDAE, and two classical
  denoisers from scikit-image (non-local means and BayesShrink wavelets) on the *same* noisy
  images; a figure shows noisy / denoised / clean.
* ``echo`` — the dilated encoder on Doppler flow types (UMS-Rep 4.2) with the patient-level
  train split (70%); CCE, Adam; scored on the test split.

:func:`pretrain` writes ``model.keras``, ``normalizer.json`` (the statistics its inputs were
normalised with), ``history.csv``, ``results.json`` (and ``denoising.png``) in its run folder;
:func:`pretrain_encoder` is what ``finetune`` and ``scan`` call for their encoder.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

from ums_rep.options import TrainingOptions
from data_prep.io import atomic_write_text, read_image
from data_prep.noise import NOISE_LEVELS, apply as add_noise, random_training_noise
from data_prep.pipeline import make_dataset
from data_prep.plotting import pyplot
from ums_rep import metrics, presets
from ums_rep.backbones import CDAE_FILTERS, ECHO_FILTERS, FLOW_CLASSES, cdae, echo_encoder
from ums_rep.denoising import classical
from ums_rep.precision import set_precision
from ums_rep.runs import (discard_worker_folder, distribution, history_csv, image_side, prepared_data, results,
                          resume_args, run_dir, save_args, save_model, set_seed, trainable_params, write_json)
from ums_rep.strategies import ALL_TASKS, FitConfig, fit
from ums_rep.tasks import Task

log = logging.getLogger("ums_rep.pretrain")  # the command's messages

DEFAULTS = {
    "cdae": {"filters": list(CDAE_FILTERS), "optimizer": "rmsprop", "learning_rate": 1e-3},
    "echo": {"filters": list(ECHO_FILTERS), "optimizer": "adam", "learning_rate": 1e-3, "kernel_size": 3,
             "dilation": 2, "dropout": 0.5, "fc_units": 256},
}


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


def build(backbone: str, image: int, params: dict, echo_strides: int = 1):
    """The backbone model and its pretraining task, from defaults overridden by ``params``
    (``echo_strides``: see :func:`ums_rep.backbones.echo_encoder`)."""
    p = {**DEFAULTS[backbone], **{k: v for k, v in params.items() if k in DEFAULTS[backbone]}}
    if backbone == "cdae":
        model = cdae((image, image, 1), filters=tuple(p["filters"]))
        task = Task("denoise", "reconstruction", optimizer=p["optimizer"], learning_rate=p["learning_rate"])
    else:
        model = echo_encoder((image, image, 1), filters=tuple(p["filters"]), kernel_size=int(p["kernel_size"]),
                             dilation=int(p["dilation"]), dropout=float(p["dropout"]), fc_units=int(p["fc_units"]),
                             strides=echo_strides)
        task = Task("flow", "classification", classes=FLOW_CLASSES, optimizer=p["optimizer"],
                    learning_rate=p["learning_rate"])
    return model, task, p


def _noise_map(norm):
    def fn(image, targets, seed):
        noisy = random_training_noise(image, seed=seed)
        return (noisy - norm.mean) / norm.std, {**targets, "clean": (image - norm.mean) / norm.std}
    return fn


def evaluate_denoising(model, clean: np.ndarray, norm, seed: int, batch: int = 16) -> tuple[dict, dict]:
    """Table 2 rows: quality of noisy, CDAE, NLM and wavelet outputs against the clean images,
    for each noise level, with noise drawn from a fixed stateless seed.

    Args:
        model: The CDAE (normalised image in, normalised image out).
        clean: Clean test images, ``(n, H, W)`` in [0, 1].
        norm: The run's normaliser (``mean``, ``std``).
        seed: Seeds the noise: the same seed gives the same noisy images.
        batch: Images per forward pass.

    Returns:
        ``(table, examples)``: ``{noise level: {"noisy" | "cdae" | "nlm" | "wavelet": {"psnr",
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
                "cdae": metrics.image_quality(clean, denoised[..., 0])}
        for name, out in classical(noisy[..., 0]).items():
            rows[name] = metrics.image_quality(clean, out)
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
        backbone: ``"cdae"`` (the CXR denoising autoencoder) or ``"echo"`` (the dilated echo
            encoder).
        params: A hyper-parameters JSON file (a Talos ``best.json``).
        epochs: Epochs to train; None: the preset's.
    """

    backbone: str = "cdae"  # "cdae": the CXR denoising autoencoder; "echo": the dilated echo encoder
    params: Path | None = None  # hyper-parameters JSON (a Talos best.json)
    epochs: int | None = None  # the preset's when None


def pretrain_encoder(modality: str, out: Path, *, preset: str, seed: int, data=None, params=None,
                     deterministic: bool = False, no_progress: bool = False, precision: str = "float32",
                     distribute: str = "none") -> Path:
    """The shared encoder of ``modality`` ("cxr": the CDAE, "echo": the echo encoder), pretrained
    into ``out`` as ``python -m ums_rep.pretrain`` would with these options (finished: reused;
    interrupted: resumed). Returns its ``model.keras``; what ``finetune`` and ``scan`` train on.

    Args:
        modality: ``"cxr"`` (the CDAE) or ``"echo"`` (the echo encoder).
        out: The pretraining run folder.
        preset: ``"tiny"``, ``"quick"`` or ``"paper"``.
        seed: The random seed.
        data: A folder with one subfolder per dataset; None: phantoms.
        params: A hyper-parameters JSON file (a Talos ``best.json``).
        deterministic: Deterministic kernels (bit-identical reruns and resumes).
        no_progress: No progress bars.
        precision: ``"float32"``, ``"mixed"`` or ``"auto"``.
        distribute: ``"none"``, ``"mirrored"``, ``"multiworker"`` or ``"auto"``.

    Returns:
        The path of the pretrained ``model.keras``.

    Raises:
        RuntimeError: Pretraining did not finish (a non-finite loss).
    """
    out = Path(out)
    if not (out / "results.json").is_file():
        options = PretrainOptions(backbone="cdae" if modality == "cxr" else "echo", preset=preset, params=params,
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
    """
    args = resume_args(args, "ums_rep.pretrain")
    dist = distribution(args.distribute)  # first: a multi-worker strategy starts before any tensor
    preset = presets.preset(args.preset, "pretrain", epochs=args.epochs or None)
    params = load_params(args.params)
    set_seed(args.seed, args.deterministic)
    policy = set_precision(args.precision)  # before any model is built
    resume = bool(args.resume)
    out = run_dir(args.out, f"pretrain-{args.backbone}", "ums_rep.pretrain", resume=resume, dist=dist)
    if not resume:
        save_args(args, out)
    dataset = "rsna" if args.backbone == "cdae" else "doppler"
    side = image_side(preset, "cxr" if args.backbone == "cdae" else "echo")
    data = prepared_data(dataset, args.data, size=side, seed=args.seed,
                         phantom_n=preset["n"][dataset], phantom_size=preset["phantom_size"])
    batch = int(params.get("batch_size", preset["batch"]))
    with dist.scope():
        model, task, used = build(args.backbone, side, params, preset["echo_strides"])
    norm = data.normalizer
    atomic_write_text(out / "normalizer.json", norm.to_json())  # the run folder holds its preprocessing
    if args.backbone == "cdae":
        train_rows, val_rows, test_rows = data.rows("train"), data.rows("val"), data.rows("test")
        kw = dict(normalize=False, map_fn=_noise_map(norm))
    else:  # the encoder uses the 70% train split; its fold 0 validates, the test split scores
        train_all = data.rows("train")
        train_rows, val_rows, test_rows = train_all[train_all.fold != 0], train_all[train_all.fold == 0], data.rows("test")
        kw = dict(label_column="flow_type", classes=FLOW_CLASSES)
    train = make_dataset(data, train_rows, batch_size=batch, shuffle=True, seed=args.seed, repeat=True,
                         drop_remainder=True, **kw)
    val = make_dataset(data, val_rows, batch_size=batch, **kw)
    config = FitConfig(epochs=preset["epochs"], steps_per_epoch={task.name: max(1, len(train_rows) // batch)},
                       lr_patience=preset["lr_patience"], stop_patience=preset["stop"], lr_factor=0.1,
                       checkpoint_dir=out / "checkpoints", resume=resume, on_nonfinite="stop",
                       progress=not args.no_progress, label=f"{args.backbone} pretraining")
    log.info("pretraining %s on %d/%d/%d images (%s), %d parameters", args.backbone, len(train_rows),
             len(val_rows), len(test_rows), "phantom" if data.info.get("phantom") else "real", model.count_params())
    start = time.perf_counter()
    fitted = fit("joint", {task.name: model}, {task.name: task}, {task.name: train}, {task.name: val}, config,
                 dist=dist)
    seconds = time.perf_counter() - start
    save_model(model, out / "model.keras")
    history_csv(out / "history.csv", fitted["history"])

    eval_rows = test_rows if preset["eval_images"] is None else test_rows.head(preset["eval_images"])
    extra = {}
    if args.backbone == "cdae":
        clean = np.stack([read_image(data.root / p) for p in eval_rows.image])
        table, examples = evaluate_denoising(model, clean, norm, args.seed)
        _figure(out / "denoising.png", clean, examples)
        task_metrics = {f"{level}_{k}": v for level, rows in table.items() for k, v in rows["cdae"].items()
                        if k != "ms_ssim_scales"}
        extra["table2"] = table
    else:
        ds = make_dataset(data, eval_rows, batch_size=batch, label_column="flow_type", classes=FLOW_CLASSES)
        prob = model.predict(ds.map(lambda x, y: x), verbose=0)
        truth = eval_rows.flow_type.map({c: i for i, c in enumerate(FLOW_CLASSES)}).to_numpy()
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
    write_json(out / "results.json", body)
    log.info("wrote %s (%.1f s of training)", out, seconds)
    discard_worker_folder(out, dist)
    if fitted["stopped"][ALL_TASKS].startswith("non-finite"):
        log.error("%s: %s; the outputs above are those of the restored weights", out, fitted["stopped"][ALL_TASKS])
        return 3
    return 0
