"""One MT-UNet experiment (MT-UNet Sections 3–5, Tables 1–3): train a model of the comparison
with several seeds on the eye-gaze data of :mod:`mt_unet.data`, score each on the test split
(:mod:`mt_unet.scoring`), write the run folder (``results.json`` with the median and std over
seeds), and compare finished runs. ``python -m mt_unet.train`` is the command-line shell.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import keras
import numpy as np
import pandas as pd

from data_prep.egd import CLASSES
from data_prep.io import atomic_write_text
from mt_unet import data, figures, presets, scoring
from mt_unet.model import build
from mt_unet.naming import label
from mt_unet.reporting import METRICS, compare as compare_runs
from mt_unet.schedule import describe as describe_schedule, fit_config_kwargs
from mt_unet.tasks import DISEASE, SALIENCY, TASKS
from ums_rep import model_config
from ums_rep.options import TrainingOptions
from ums_rep.precision import clear_session
from ums_rep.runs import (discard_worker_folder, history_csv, results, save_model, set_seed, start, trainable_params,
                          write_json)
from ums_rep.strategies import ALL_TASKS, FitConfig, NonFiniteLossError, fit
from ums_rep.weighting import LOSS_FORMS, FixedWeights, get as get_weighting, mtl

log = logging.getLogger("mt_unet.train")


def loss_weighting(scheme: str, task_names, form: str = "paper"):
    """MT-UNet's uncertainty weighting (``mtl1``-``mtl3``, the saliency term in the paper's or the
    authors' ``form``: :func:`ums_rep.weighting.mtl`) or a registered rule (``dwa``); fixed
    weights for a single-task model. Build it inside the distribution strategy's scope."""
    check_loss_form(scheme, task_names, form)
    if len(task_names) != 2:
        return FixedWeights()
    if scheme.startswith("mtl"):
        return mtl(scheme, SALIENCY, DISEASE, form)
    return get_weighting(scheme, tasks=[SALIENCY, DISEASE])


def check_loss_form(scheme: str, task_names, form: str) -> None:
    """``--loss-form authors`` changes the saliency term of MT-UNet's MTL schemes only."""
    if form not in LOSS_FORMS:
        raise ValueError(f"unknown --loss-form {form!r}; expected one of {list(LOSS_FORMS)}")
    if form != "paper" and (len(task_names) != 2 or not scheme.startswith("mtl")):
        raise ValueError(f"--loss-form {form} applies to the MTL schemes of a two-task model only, not "
                         f"--scheme {scheme} with tasks {list(task_names)}")


def train_one(args, preset: dict, prepared, seed: int, out: Path, dist) -> dict:
    """Train and test one model with one seed; writes its model, history, figures, predictions.
    Resuming, a finished seed is read back and an interrupted one continues from its last epoch."""
    if args.resume and (out / "seed_results.json").is_file():
        log.info("seed %d already finished in %s", seed, out)
        return json.loads((out / "seed_results.json").read_text())
    set_seed(seed, args.deterministic)
    shape = tuple(preset["image"]) + (1,)
    with dist.scope():
        net, task_names = build(args.model, shape, len(CLASSES), preset["base"], args.variant)
        weighting = loss_weighting(args.scheme, task_names, args.loss_form)
        optimizer = keras.optimizers.Adam(learning_rate=preset["lr"])
    tasks = {t: TASKS[t] for t in task_names}
    rows = {s: prepared.rows(s) for s in ("train", "val", "test")}
    data.check_split(prepared, rows, task_names)
    batch = preset["batch"]
    train = data.dataset(prepared, rows["train"], batch, task_names, shuffle=True, seed=seed, repeat=True,
                    drop_remainder=True)
    val = data.dataset(prepared, rows["val"], batch, task_names)
    config = FitConfig(epochs=preset["epochs"], steps_per_epoch={"joint": max(1, len(rows["train"]) // batch)},
                       checkpoint_dir=out / "checkpoints", progress=not args.no_progress,
                       resume=bool(args.resume), on_nonfinite="stop",
                       **fit_config_kwargs(preset["lr_patience"], args.schedule),
                       label=f"{label(args.model, args.variant, args.scheme, args.loss_form)} seed {seed}")
    log.info("%s, seed %d: %d parameters, %d/%d/%d images of %s",
             label(args.model, args.variant, args.scheme, args.loss_form),
             seed, net.count_params(), *(len(rows[s]) for s in ("train", "val", "test")), "x".join(map(str, shape[:2])))
    fitted = fit("joint", {"model": net}, tasks, train, val, config, optimizers={"joint": optimizer},
                 weighting=weighting, dist=dist, joint_model=net)
    history = pd.DataFrame(fitted["history"])
    history_csv(out / "history.csv", fitted["history"])
    figures.training_curves(history, out / "training_curves.png",
                            title=f"{label(args.model, args.variant, args.scheme, args.loss_form)}, seed {seed}")
    save_model(net, out / "model.keras")
    val_m, _, val_arrays = scoring.evaluate(net, prepared, rows["val"], batch)
    chance = scoring.chance_levels(val_arrays["truths"])
    m, table, arrays = scoring.evaluate(net, prepared, rows["test"], batch)
    atomic_write_text(out / "predictions_test.csv", table.to_csv(index=False))
    if SALIENCY in arrays["outputs"]:
        k = min(4, len(table))
        figures.saliency_overlays(out / "saliency_overlays.png", arrays["truths"]["image"][:k],
                                  arrays["truths"]["saliency"][:k], arrays["outputs"][SALIENCY][:k],
                                  titles=list(table["truth"][:k]))
    record = {"seed": seed, "metrics": m, "train_seconds": float(sum(fitted["seconds"].values())),
              "epochs": len(history), "best_epoch": fitted["best_epoch"][ALL_TASKS],
              "stopped": fitted["stopped"][ALL_TASKS], "lr_resets": fitted["schedule"][ALL_TASKS]["events"],
              "final_sigma": weighting.describe(),
              "val_metrics": val_m, "chance_on_validation": chance,
              "learned_on_validation": scoring.learned(val_m, chance)}
    if not all(record["learned_on_validation"].values()):
        log.warning("%s, seed %d did not learn on the validation split (%s; chance: accuracy %.3f, KLD %.3f): "
                    "its claims are not judged", label(args.model, args.variant, args.scheme, args.loss_form), seed,
                    record["learned_on_validation"], chance["accuracy"], chance["kld"])
    if record["stopped"].startswith("non-finite"):
        raise NonFiniteLossError(f"{out}: {record['stopped']}; the model, history and test metrics of the "
                                 "restored weights are written there")
    write_json(out / "seed_results.json", record)
    return record


def summarise(per_seed: list) -> tuple[dict, dict]:
    """Median and standard deviation (ddof=1 when several seeds) of every metric over seeds."""
    keys = sorted({k for r in per_seed for k in r["metrics"]})
    med, std = {}, {}
    for k in keys:
        v = np.array([r["metrics"][k] for r in per_seed if k in r["metrics"]], float)
        med[k] = float(np.median(v))
        std[k] = float(np.std(v, ddof=1)) if len(v) > 1 else 0.0
    return med, std


@dataclass
class MtUnetOptions(TrainingOptions):
    """What ``python -m mt_unet.train`` is told (its options, typed); None (or 0) for a number
    means the preset's value."""

    scheme: str = "mtl3"  # mtl1, mtl2, mtl3 (Eqs. 1, 4, 5) or a registered weighting (dwa)
    variant: str = "full"  # full, bottleneck, top (MT-UNet, -B, -T)
    model: str = "mtunet"  # a name of mt_unet.model.models()
    seeds: int | None = None
    shape: tuple | None = None  # input (H, W)
    epochs: int | None = None
    lr: float | None = None
    patience: int | None = None  # RLRP patience P (Appendix B)
    batch: int | None = None
    # where the paper is silent: the authors' public code's RLRP (monitor the weighted loss, cut on the
    # (P+1)-th bad epoch, reset the optimizer too) or this package's earlier one (mt_unet.schedule.SCHEDULES)
    schedule: str = "authors"
    loss_form: str = "paper"  # the saliency term: KLD/σ² as Eqs. 1, 4, 5 (paper) or KLD/(2σ²) (authors' code)


def settings(args: MtUnetOptions) -> tuple:
    """What :func:`run` trains, from the (resumed) arguments and the preset: ``(preset, seeds,
    label, RLRP rule)``; everything that can be checked is checked before data is prepared or
    the run folder made."""
    if args.resume and "schedule" not in json.loads((Path(args.out) / "args.json").read_text()):
        args.schedule = "package"  # a run started before --schedule existed continues with the rule it began with
    # (as before the preset tables: 0 for a number means the preset's value)
    preset = presets.preset(args.preset, epochs=args.epochs or None, lr=args.lr or None,
                            lr_patience=args.patience or None, batch=args.batch or None, image=args.shape)
    _, task_names = build(args.model, tuple(preset["image"]) + (1,), len(CLASSES), preset["base"], args.variant)
    check_loss_form(args.scheme, task_names, args.loss_form)
    rlrp = describe_schedule(preset["lr_patience"], args.schedule)
    clear_session()
    return preset, args.seeds or preset["seeds"], label(args.model, args.variant, args.scheme, args.loss_form), rlrp


def model_description(produced_by: str, model: str, image, task_names, seeds) -> dict:
    """The run's ``model_config.json`` (:mod:`ums_rep.model_config`, what ``ums_rep.predict``
    reads): one entry per seed, ``seed<k>/model.keras`` with one output per task (keyed by task),
    letter-boxed to ``image`` (H, W) and normalised with the run's ``normalizer.json``.

    Args:
        produced_by: The run's command line, as ``results.json`` names it.
        model: The model of the comparison (``--model``), named as the backbone.
        image: The input (H, W).
        task_names: The tasks the model outputs (:data:`mt_unet.tasks.TASKS`).
        seeds: The seeds trained.

    Returns:
        The JSON object."""
    record = SimpleNamespace(name=model, modality="cxr")  # a model of the comparison, not a ums_rep backbone
    outputs = {t: t for t in task_names}
    return model_config.describe(
        data.TRAIN_COMMAND, produced_by, record, tuple(image) + (1,), {t: TASKS[t] for t in task_names},
        [model_config.fold_entry(None, "normalizer.json", {f"seed{s}/model.keras": outputs}, seed=s) for s in seeds],
        geometry="letterbox")


def run(args: MtUnetOptions) -> int:
    """Train ``args.model`` with every seed into a run folder and score it (Tables 1-3); returns 0,
    raises :class:`~ums_rep.strategies.NonFiniteLossError` when a loss turned non-finite (the
    seed's outputs are written first)."""
    started = start(args, "mt_unet.train", lambda a: f"mt_unet-{a.model}-{a.variant}-{a.scheme}", check=settings)
    args, out, dist, policy = started.options, started.out, started.dist, started.policy
    preset, n_seeds, name, rlrp = started.checked
    prepared = data.egd_data(args.data, args.preset, preset["image"], args.seed)
    atomic_write_text(out / "normalizer.json", prepared.normalizer.to_json())  # for ums_rep.predict
    per_seed = []
    for k in range(n_seeds):
        seed = args.seed + k
        per_seed.append(train_one(args, preset, prepared, seed, out / f"seed{seed}", dist))
        clear_session()
    med, std = summarise(per_seed)
    params = None
    with dist.scope():
        net, task_names = build(args.model, tuple(preset["image"]) + (1,), len(CLASSES), preset["base"], args.variant)
        params = trainable_params(net.trainable_variables)
    entry = {"label": name, "metrics": med, "std": std, "per_seed": per_seed,
             "train_seconds": float(np.median([r["train_seconds"] for r in per_seed])),
             "trainable_params": params}
    produced_by = (f"mt_unet.train --model {args.model} --variant {args.variant} --scheme {args.scheme} "
                   f"--schedule {args.schedule} --loss-form {args.loss_form}")
    body = results(produced_by,
                   {"model": args.model, "variant": args.variant, "scheme": args.scheme, "preset": args.preset,
                    "loss_form": args.loss_form, "rlrp": rlrp,
                    **{k: list(v) if isinstance(v, tuple) else v for k, v in preset.items()}, "seeds": n_seeds,
                    "precision": policy,
                    "data": "phantom" if args.data is None else str(args.data),
                    "prepared": prepared.info["prepared"], "split": "patient-level, class-stratified 70/10/20"},
                   {name: entry}, args.seed)
    write_json(out / "results.json", body)
    model_config.write(out, model_description(produced_by, args.model, preset["image"], task_names,
                                              [args.seed + k for k in range(n_seeds)]))
    log.info("%s over %d seed(s): %s", name, n_seeds,
             ", ".join(f"{k} {med[k]:.3f}±{std[k]:.3f}" for k in METRICS if k in med))
    log.info("wrote %s", out)
    discard_worker_folder(out, dist)
    return 0


def compare(run_dirs, out=None, mix_presets: bool = False) -> str:
    """``mt_unet.train --compare``: :func:`mt_unet.reporting.compare`."""
    return compare_runs(run_dirs, out, mix_presets)
