"""Talos hyper-parameter scans (UMS-Rep Sections 4 and 4.2.1): the library behind ``python -m
ums_rep.scan`` — the scans' data (split by patient), the round function Talos trains, the winner
in the keys ``--params`` reads, Talos' box plots, and the parts of a scan split over machines
(``DistributeParamSpace``) merged back into the one-machine scan. The search spaces are
:data:`ums_rep.presets.SCAN_SPACES`; ``ums_rep.scan``'s docstring describes the outputs.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from ums_rep.options import TrainingOptions
from data_prep.io import atomic_write_bytes, atomic_write_text
from data_prep.noise import random_training_noise
from data_prep.pipeline import make_dataset
from data_prep.plotting import pyplot
from ums_rep import backbone_registry, presets, pretraining
from ums_rep.backbones import encoder as encoder_of
from ums_rep.heads import classification_head
from ums_rep.presets import PAPER_ECHO_CHOICE, SCAN_OBJECTIVES, SCAN_SPACES
from ums_rep.runs import image_side, load_model, prepared_data, results, run_dir, start, write_json
from ums_rep.strategies import make_optimizer
from ums_rep.tasks import CLASSIFICATION_TASKS, TASK_SETS, cross_validation

log = logging.getLogger("ums_rep.scan")  # the command's messages


# --------------------------------------------------------------------------- data

def phantom_counts(preset: str) -> dict:
    """Phantom images per dataset: those ``pretrain`` and ``finetune`` use with ``preset``, so a
    scan sees their data (every dataset of every task set)."""
    return {**presets.UMS_REP[preset]["pretrain"]["n"], **presets.UMS_REP[preset]["finetune"]["n"]}


def _arrays(prepared, rows, **kw):
    ds = make_dataset(prepared, rows, batch_size=64, cache=False, **kw)
    xs, ys = [], []
    for x, y in ds:
        xs.append(x.numpy())
        ys.append(y["label"].numpy() if "label" in y else None)
    return np.concatenate(xs), (np.concatenate(ys) if ys[0] is not None else None)


def scan_modality(model: str, args) -> str:
    """The modality a scan trains on: the backbone's (its record's), or the head's task set's."""
    if model == "head":
        return TASK_SETS[CLASSIFICATION_TASKS[args.task][0]]["modality"]
    return backbone_registry.get(model).modality


def scan_data(model: str, args, preset: dict):
    """``(x_train, y_train, x_val, y_val, info)`` as arrays, split by patient."""
    size = image_side(preset, scan_modality(model, args))

    def data(name):
        return prepared_data(name, args.data, size=size, seed=args.seed, phantom_n=preset["n"][name],
                             phantom_size=preset["phantom_size"], progress=not args.no_progress)

    record = backbone_registry.get(model) if model != "head" else None
    if record and record.pretraining_target.kind == "classification":  # as pretrain: the 70% train split, its
        p = data(record.pretraining_data)                               # fold 0 validates
        rows = p.rows("train")
        kw = dict(label_column=record.pretraining_label, classes=record.pretraining_target.classes)
        xt, yt = _arrays(p, rows[rows.fold != 0], **kw)
        xv, yv = _arrays(p, rows[rows.fold == 0], **kw)
        return xt, yt, xv, yv, {"dataset": record.pretraining_data, "phantom": p.info.get("phantom"),
                                "prepared": p.info["prepared"]}
    if record:  # a reconstruction target: noisy → clean pairs, noise drawn once with a fixed seed
        p = data(record.pretraining_data)
        norm = p.normalizer
        clean_t, _ = _arrays(p, p.rows("train"), normalize=False)
        clean_v, _ = _arrays(p, p.rows("val"), normalize=False)
        keras.utils.set_random_seed(args.seed)
        noisy_t, noisy_v = (np.asarray(random_training_noise(c)) for c in (clean_t, clean_v))
        z = lambda a: ((a - norm.mean) / norm.std).astype("float32")  # noqa: E731
        return z(noisy_t), z(clean_t), z(noisy_v), z(clean_v), {"dataset": record.pretraining_data,
                                                                 "phantom": p.info.get("phantom"),
                                                                 "prepared": p.info["prepared"]}
    # head: features of the frozen shared encoder for one classification task
    set_name, spec = CLASSIFICATION_TASKS[args.task]
    sdef = TASK_SETS[set_name]
    p = data(sdef["train"])
    test_p = data(sdef["test"]) if sdef["test"] != sdef["train"] else p
    # the hold-out fold of finetune --folds 1: the same images train and validate
    train_rows, val_rows = cross_validation(set_name, p.manifest, test_p.manifest, 1, args.seed).fold(0)
    kw = dict(label_column=spec.label_column, classes=spec.task.classes)
    xt, yt = _arrays(p, spec.select(train_rows), **kw)
    xv, yv = _arrays(p, spec.select(val_rows), **kw)
    encoder = frozen_encoder(args, sdef["modality"])
    ft, fv = (encoder.predict(a, batch_size=32, verbose=0) for a in (xt, xv))
    return ft, yt, fv, yv, {"dataset": sdef["train"], "task": args.task, "set": set_name,
                            "phantom": p.info.get("phantom"),
                            "prepared": sorted({p.info["prepared"], test_p.info["prepared"]})}


def frozen_encoder(args: "ScanOptions", modality: str) -> keras.Model:
    """The shared encoder a head scan trains on, frozen: ``--encoder``, or one pretrained now into
    ``out/encoder`` with the scan's preset (as ``finetune`` does)."""
    path = args.encoder
    if path is None:  # pretrain one with the matching preset, as finetune does
        path = pretraining.pretrain_encoder(modality, Path(args.out) / "encoder", preset=args.preset,
                                            seed=args.seed, data=args.data, deterministic=args.deterministic,
                                            no_progress=args.no_progress, precision=args.precision)
    backbone = load_model(path, expect="encoder")
    enc = encoder_of(backbone)  # up to its record's feature layer
    enc.trainable = False
    return enc


# --------------------------------------------------------------------------- models

def round_seed(seed: int, params: dict) -> int:
    """The seed a round trains with: from the scan's ``--seed`` and the round's own parameters
    (not its place in the queue, which differs between one machine and ``--shard`` parts)."""
    text = json.dumps({"seed": int(seed), "params": {k: params[k] for k in sorted(params)}}, default=str)
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) % (2 ** 31)


def model_fn(model: str, image: int, epochs: int, echo_strides: int = 1, seed: int | None = None):
    """The Talos round function ``(x, y, x_val, y_val, params) -> (history, model)``; with
    ``seed``, each round first seeds Python, NumPy, TensorFlow and Keras with
    :func:`round_seed`."""
    def round_fn(x_train, y_train, x_val, y_val, params):
        p = dict(params)
        if seed is not None:
            keras.utils.set_random_seed(round_seed(seed, p))
        if model != "head":  # a backbone, as pretrain builds it: its record's target sets the loss
            net, task, _ = pretraining.build(model, image, backbone_params(p), {"echo_strides": echo_strides})
            loss, metrics = (("categorical_crossentropy", ["accuracy"]) if task.kind == "classification"
                             else ("mse", []))
            opt = make_optimizer(task.optimizer, task.learning_rate)  # what pretrain will use
        else:
            inputs = keras.Input(x_train.shape[1:])
            out = classification_head(inputs, y_train.shape[1], "head", units=int(p["head_units"]),
                                      dropout=float(p["head_dropout"]))
            net = keras.Model(inputs, out)
            loss, metrics = "categorical_crossentropy", ["accuracy"]
            opt = make_optimizer(p["head_optimizer"], float(p["head_learning_rate"]))
        net.compile(optimizer=opt, loss=loss, metrics=metrics)
        history = net.fit(x_train, y_train, validation_data=(x_val, y_val), epochs=epochs,
                          batch_size=int(p["batch_size"]), verbose=0)
        return history, net

    return round_fn


def backbone_params(params: dict) -> dict:
    """A round's (or the winner's) parameters in the keys pretraining reads: a space's
    ``base_filters`` b becomes the encoder widths ``[b, 2b, 4b, 8b]`` (the CDAE's doubling)."""
    params = dict(params)
    if "base_filters" in params:
        b = int(params.pop("base_filters"))
        params["filters"] = [b, 2 * b, 4 * b, 8 * b]
    return params


# --------------------------------------------------------------------------- results

def best_params(table: pd.DataFrame, model: str) -> dict:
    """The winning round's parameters in the keys ``--params`` reads (ties: the earlier round)."""
    metric, direction = SCAN_OBJECTIVES[model]
    if metric not in table:
        raise ValueError(f"the scan table has no {metric!r} column (columns: {sorted(table)})")
    order = table[metric].astype(float)
    row = table.loc[order.idxmax() if direction == "max" else order.idxmin()]
    best = {}
    for key, values in SCAN_SPACES[model].items():
        value = row[key]
        best[key] = type(values[0])(value) if not isinstance(values[0], str) else str(value)
    best = backbone_params(best) if model != "head" else best
    best["_score"] = {metric: float(row[metric])}
    return best


def analyze_figures(table_csv: Path, model: str, out: Path) -> list:
    """One box plot per hyper-parameter of the validation metric (Talos ``Analyze``)."""
    plt = pyplot()
    from talos import Analyze
    metric, _ = SCAN_OBJECTIVES[model]
    analysis = Analyze(str(table_csv))
    paths = []
    for key in SCAN_SPACES[model]:
        if analysis.data[key].nunique() < 1:
            continue
        ax = analysis.plot_box(key, metric)
        ax.set_title(f"{metric} by {key}")
        ax.figure.suptitle("")
        buf = io.BytesIO()
        ax.figure.savefig(buf, format="png", dpi=80)
        plt.close(ax.figure)
        path = out / f"analyze_{key}.png"
        atomic_write_bytes(path, buf.getvalue())
        paths.append(path)
    return paths


def param_space(model: str, *, round_limit=None, fraction_limit=None, time_limit=None, seed=0, shard=None):
    """What ``talos.Scan`` gets as ``params``: the search space (a dict: all of it, or the
    ``--round-limit``/``--fraction-limit`` sample Talos draws with ``seed``), or with ``shard``
    ``(I, N)`` Talos' ``DistributeParamSpace`` part I of N of that same sample (a ``ParamSpace``)."""
    space = SCAN_SPACES[model]
    if shard is None:
        return space
    from talos.parameters.DistributeParamSpace import DistributeParamSpace
    i, n = shard
    parts = DistributeParamSpace(space, list(space), fraction_limit=fraction_limit, round_limit=round_limit,
                                 time_limit=time_limit, machines=n, seed=seed)
    return parts.param_spaces[i - 1]


def queue(params) -> list:
    """The rounds a Talos ``ParamSpace`` runs, in order, as parameter dicts (nothing trains)."""
    return [dict(zip(params.param_keys, params.param_space[i])) for i in params.param_index]


def unsplit_queue(model: str, *, round_limit=None, fraction_limit=None, seed=0) -> list:
    """The rounds one machine runs for these arguments, in its order (``talos.Scan``'s
    ``ParamSpace`` with the same limits and seed)."""
    from talos.parameters.ParamSpace import ParamSpace
    space = SCAN_SPACES[model]
    return queue(ParamSpace(space, list(space), fraction_limit=fraction_limit, round_limit=round_limit, seed=seed))


def _key(model: str, params) -> tuple:
    """A round's identity: its parameter values, typed as in :data:`SPACES` (CSV round trips
    turn 16 into 16.0 or "16")."""
    out = []
    for name, values in SCAN_SPACES[model].items():
        v = params[name]
        out.append(str(v) if isinstance(values[0], str) else float(v))
    return tuple(out)


def merge_tables(model: str, tables: list, order: list) -> pd.DataFrame:
    """The shards' result tables as one, rows in ``order`` (the unsplit queue: one machine's
    round order, so ties go to the round one machine would have run first). A round found in
    two tables, or in none of ``order``, raises ValueError."""
    table = pd.concat(tables, ignore_index=True)
    keys = [_key(model, row) for _, row in table.iterrows()]
    position = {_key(model, p): i for i, p in enumerate(order)}
    dup = pd.Series(keys).duplicated()
    if dup.any():
        raise ValueError(f"round {dict(zip(SCAN_SPACES[model], keys[int(dup.idxmax())]))} is in more than one shard")
    stray = [k for k in keys if k not in position]
    if stray:
        raise ValueError(f"round {dict(zip(SCAN_SPACES[model], stray[0]))} is not one of this scan's rounds")
    table["_order"] = [position[k] for k in keys]
    return table.sort_values("_order", kind="stable").drop(columns="_order").reset_index(drop=True)


def absolute_time_limit(text: str | None) -> str | None:
    """``HH:MM`` from now → Talos' absolute ``YYYY-MM-DD HH:MM``."""
    if text is None:
        return None
    try:
        hours, minutes = (int(v) for v in text.split(":"))
    except ValueError:
        raise ValueError(f"--time-limit {text!r}: expected HH:MM, e.g. 01:30") from None
    return (datetime.now() + timedelta(hours=hours, minutes=minutes)).strftime("%Y-%m-%d %H:%M")


def _latest_experiment(talos_dir: Path) -> Path | None:
    """The Talos experiment to continue; None if the scan stopped before Talos started one."""
    runs = sorted(p for p in talos_dir.glob("*/") if (p / "metadata.json").is_file())
    if not runs:
        log.warning("%s: no Talos experiment to resume; the scan starts from its first round", talos_dir)
        return None
    return runs[-1]


@dataclass
class ScanOptions(TrainingOptions):
    """What ``python -m ums_rep.scan`` is told (its options, typed).

    The common fields are :class:`ums_rep.options.TrainingOptions`'.

    Attributes:
        model: What to search: ``"echo"`` (the paper's space), ``"cdae"`` or ``"head"`` (keys
            of ``ums_rep.presets.SCAN_SPACES``).
        task: ``model="head"``: the classification task whose head is searched.
        encoder: ``model="head"``: a shared encoder ``.keras`` (None: pretrain one).
        fraction_limit: Run this fraction of the rounds, in (0, 1].
        round_limit: Run at most this many rounds.
        time_limit: ``HH:MM`` from the start.
        epochs: Epochs per round; None: the preset's.
        shard: ``(I, N)``: run the I-th of N disjoint parts of the rounds (one machine's share).
    """

    model: str = "echo"  # a key of SCAN_SPACES
    task: str = "flow"  # --model head: a key of CLASSIFICATION_TASKS
    encoder: Path | None = None  # --model head: a shared encoder .keras (None: pretrain one)
    fraction_limit: float | None = None
    round_limit: int | None = None
    time_limit: str | None = None  # HH:MM from the start
    epochs: int | None = None  # per round; the preset's when None
    shard: tuple | None = None  # (I, N): the I-th of N disjoint parts of the rounds


def settings(args: ScanOptions) -> tuple:
    """What :func:`scan` searches, from the (resumed) arguments and the preset: ``(preset, time
    limit, shard)``; the arguments are checked before the run folder is made.

    Raises:
        ValueError: An unknown model or task, or a fraction limit outside (0, 1].
    """
    if args.model not in SCAN_SPACES:
        raise ValueError(f"unknown model {args.model!r}; expected one of {sorted(SCAN_SPACES)}")
    if args.model == "head" and args.task not in CLASSIFICATION_TASKS:
        raise ValueError(f"--task {args.task!r}: expected one of {sorted(CLASSIFICATION_TASKS)}")
    if args.fraction_limit is not None and not 0 < args.fraction_limit <= 1:
        raise ValueError(f"--fraction-limit must be in (0, 1], got {args.fraction_limit}")
    time_limit = absolute_time_limit(args.time_limit)
    shard = tuple(args.shard) if args.shard else None  # a list once read back from args.json
    preset = {**presets.preset(args.preset, "scan", epochs=args.epochs or None), "n": phantom_counts(args.preset)}
    return preset, time_limit, shard


def _folder_name(args: ScanOptions) -> str:
    return f"scan-{args.model}" + (f"-shard{args.shard[0]}of{args.shard[1]}" if args.shard else "")


def scan(args: ScanOptions) -> int:
    """A Talos scan of ``args.model`` into a run folder (its table, best parameters, figures,
    ``results.json``); 0, or 130 when interrupted (continue it with ``resume``).

    Example:
        ```python
        from ums_rep.scanning import ScanOptions, scan

        scan(ScanOptions(model="echo", preset="tiny", round_limit=2, out="runs/scan-tiny"))
        ```

    Args:
        args: The command's options; ``args.resume`` continues an interrupted scan.

    Returns:
        The exit code: 0, or 130 when interrupted.

    Raises:
        ValueError: An unknown model or task, or a fraction limit outside (0, 1].
    """
    import talos
    started = start(args, "ums_rep.scan", _folder_name, check=settings)  # --resume RUN_DIR: the scan's own arguments
    args, out, resume = started.options, started.out, started.resume
    preset, time_limit, shard = started.checked
    talos_dir = out / "talos"
    resume_dir = _latest_experiment(talos_dir) if resume else None
    xt, yt, xv, yv, info = scan_data(args.model, args, preset)
    space = SCAN_SPACES[args.model]
    metric, direction = SCAN_OBJECTIVES[args.model]
    params = param_space(args.model, round_limit=args.round_limit, fraction_limit=args.fraction_limit,
                         time_limit=time_limit, seed=args.seed, shard=shard)
    log.info("Talos scan of %s: %d combinations, %s%s; %d training / %d validation images, %d epochs per round",
             args.model, int(np.prod([len(v) for v in space.values()])),
             ", ".join(f"{k}" for k in ("round_limit", "fraction_limit", "time_limit") if getattr(args, k)) or "all",
             f"; shard {shard[0]} of {shard[1]}: {len(params.param_index)} rounds" if shard else "",
             len(xt), len(xv), preset["epochs"])
    options = {"resume": True, "experiment_dir": str(resume_dir)} if resume_dir else {}
    t0 = time.perf_counter()
    image = image_side(preset, scan_modality(args.model, args))
    round_fn = model_fn(args.model, image, preset["epochs"], presets.UMS_REP[args.preset]["pretrain"]["echo_strides"],
                        seed=args.seed)
    talos_scan = talos.Scan(xt, yt, params, round_fn,
                            experiment_name=str(talos_dir), x_val=xv, y_val=yv, seed=args.seed,
                            round_limit=args.round_limit, fraction_limit=args.fraction_limit, time_limit=time_limit,
                            reduction_metric=metric, minimize_loss=direction == "min",
                            disable_progress_bar=args.no_progress, save_weights=False, **options)
    seconds = time.perf_counter() - t0
    experiment = Path(talos_scan.details["run_dir"])
    table = pd.read_csv(experiment / "results.csv")
    if getattr(talos_scan, "status", None) == "paused" and not (time_limit and datetime.now().strftime("%Y-%m-%d %H:%M") >= time_limit):
        # Talos ends a scan stopped by Ctrl-C or SIGTERM as "paused": not a finished scan (no
        # results.json, which would refuse --resume and let --merge take a partial shard)
        log.warning("scan interrupted after %d rounds; continue it with --resume %s", len(table), out)
        return 130
    if table.empty:
        raise RuntimeError(f"{experiment}: the scan finished no round")
    atomic_write_text(out / "scan.csv", table.to_csv(index=False))
    best = best_params(table, args.model)
    write_json(out / "best.json", best)
    figures = analyze_figures(experiment / "results.csv", args.model, out)
    extra = {"paper_choice": PAPER_ECHO_CHOICE} if args.model == "echo" else {}
    body = results(f"scan --model {args.model}",
                   {"model": args.model, "preset": args.preset, **preset, "image": image, "space": space,
                    "round_limit": args.round_limit, "fraction_limit": args.fraction_limit,
                    "time_limit": args.time_limit, "shard": list(shard) if shard else None,
                    "resumed_from": str(resume_dir) if resume_dir else None,
                    "data": info, "objective": {"metric": metric, "direction": direction}},
                   {}, args.seed, rounds=len(table), scan_seconds=seconds, best=best,
                   figures=[p.name for p in figures], talos_experiment=str(experiment), **extra)
    write_json(out / "results.json", body)
    log.info("%d rounds in %.0f s; best %s = %.4f with %s", len(table), seconds, metric,
             best["_score"][metric], {k: v for k, v in best.items() if k != "_score"})
    log.info("wrote %s", out)
    return 0


SHARED_ARGS = ("model", "task", "encoder", "preset", "epochs", "seed", "data", "round_limit", "fraction_limit")


def merge(folders, out=None) -> Path:
    """``--merge DIR...``: the finished ``--shard`` scans in ``folders`` (every part 1..N of one
    scan, once each) as one scan in ``out``: ``scan.csv`` in one machine's round order,
    ``best.json`` picked from it by :func:`best_params`, figures, ``results.json`` (rounds, the
    shards' seconds) and ``args.json``. Parts of different scans, a missing or repeated part, or
    an unfinished part raise ValueError.

    Args:
        folders: The finished ``--shard I/N`` scan folders, every part once.
        out: The merged scan's folder (None: ``runs/scan-<model>-merged-<timestamp>/``).

    Returns:
        The merged scan's folder.

    Raises:
        ValueError: Parts of different scans, a missing, repeated or unfinished part.
    """
    folders = [Path(f) for f in folders]
    parts = []
    for folder in folders:
        for name in ("args.json", "results.json", "scan.csv"):
            if not (folder / name).is_file():
                raise ValueError(f"{folder}: no {name}; --merge takes finished --shard scans "
                                 f"(an interrupted one continues with --resume {folder})")
        saved = json.loads((folder / "args.json").read_text())
        if saved.get("command") != "ums_rep.scan" or not saved.get("shard"):
            raise ValueError(f"{folder}: not a --shard scan of ums_rep.scan")
        parts.append((folder, saved, json.loads((folder / "results.json").read_text()),
                      pd.read_csv(folder / "scan.csv")))
    first = parts[0][1]
    for folder, saved, _, _ in parts[1:]:
        differ = [k for k in SHARED_ARGS if saved.get(k) != first.get(k)]
        if differ or saved["shard"][1] != first["shard"][1]:
            raise ValueError(f"{folder} and {parts[0][0]}: parts of different scans "
                             f"({', '.join(differ) or 'number of shards'} differ)")
    n = first["shard"][1]
    numbers = sorted(saved["shard"][0] for _, saved, _, _ in parts)
    if numbers != list(range(1, n + 1)):
        missing = sorted(set(range(1, n + 1)) - set(numbers))
        repeated = sorted({i for i in numbers if numbers.count(i) > 1})
        raise ValueError(f"--merge needs shards 1 to {n} once each: "
                         + "; ".join(x for x in (f"missing {missing}" if missing else "",
                                                 f"repeated {repeated}" if repeated else "") if x))
    model = first["model"]
    order = unsplit_queue(model, round_limit=first.get("round_limit"), fraction_limit=first.get("fraction_limit"),
                          seed=first.get("seed", 0))
    table = merge_tables(model, [t for *_, t in parts], order)
    out = run_dir(out, f"scan-{model}-merged", "ums_rep.scan")
    write_json(out / "args.json", {"command": "ums_rep.scan", **{k: first.get(k) for k in SHARED_ARGS},
                                   "merge": [str(f) for f in folders], "out": str(out)})
    atomic_write_text(out / "scan.csv", table.to_csv(index=False))
    best = best_params(table, model)
    write_json(out / "best.json", best)
    figures = analyze_figures(out / "scan.csv", model, out)
    metric = SCAN_OBJECTIVES[model][0]
    body = parts[0][2]
    seconds = [r.get("scan_seconds", 0.0) for _, _, r, _ in parts]
    body.update(config={**body["config"], "shard": None, "merged_from": [str(f) for f in folders], "shards": n},
                rounds=len(table), rounds_planned=len(order), scan_seconds=float(sum(seconds)),
                shard_seconds=seconds, best=best, figures=[p.name for p in figures],
                talos_experiment=[r.get("talos_experiment") for _, _, r, _ in parts])
    write_json(out / "results.json", body)
    log.info("merged %d shards: %d of %d rounds, %.0f s of training in all (the longest shard %.0f s); "
             "best %s = %.4f with %s", n, len(table), len(order), sum(seconds), max(seconds), metric,
             best["_score"][metric], {k: v for k, v in best.items() if k != "_score"})
    log.info("wrote %s", out)
    return out
