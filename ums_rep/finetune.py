"""``python -m ums_rep.finetune --strategy {independent,alternating,joint,baseline} --tasks SET``:
UMS-Rep's central experiment (Sections 4.1.2 and 4.2; Tables 3–10).

The shared encoder (``--encoder model.keras``, or pretrained first with the same preset and
seed) gets one head per task of the set; the strategy trains them (see
:mod:`ums_rep.strategies`); each task is scored on its test images. The ``baseline`` trains one
model per task from random initialisation with the same architecture; for the chest X-ray sets
its inputs first pass through a separately trained denoiser (the pretrained CDAE, frozen,
whose training time and parameters are counted in the baseline's totals, as in Table 4).

Task sets (SPEC "Target tasks"):

=============  =====================================================  ============================
set            tasks                                                  data
=============  =====================================================  ============================
cxr-hetero     lung_seg, abnormal (normal/tb)                          Shenzhen (fold CV), test Montgomery
cxr-homo       bacterial_vs_normal, viral_vs_normal, bacterial_vs_viral Kermany train/val, test
echo-hetero    envelope_seg, flow (MV/MA/TR), quality (low/good)       Doppler 20% pool (fold CV), 10% test
echo-homo      mv_vs_ma, mv_vs_tr, ma_vs_tr                            as echo-hetero
=============  =====================================================  ============================

``--folds K`` trains K models (fold k validates, the others train) and scores the test set with
their averaged probabilities; the quick preset uses one fold. Segmentation images count as
correct for McNemar's test when their Dice ≥ 0.9.

``--compare RUN_DIR...`` prints one table per task set (metrics, train time, parameters) with
McNemar p-values between strategies and against the baseline, and writes ``compare.md``.
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import tensorflow as tf

import keras
from data_prep.cli import add_training_options, base_parser, setup_logging
from data_prep.io import atomic_write_text, read_image
from data_prep.pipeline import make_dataset
from ums_rep import derive, metrics
from ums_rep.backbones import FEATURES, FLOW_CLASSES, encoder as encoder_of
from ums_rep.heads import classification_head, segmentation_head
from ums_rep.runs import (history_csv, load_model, prepared_data, results, resume_args, run_dir, save_args,
                          save_model, set_seed, trainable_params, write_json)
from ums_rep.strategies import STRATEGIES, FitConfig, fit
from ums_rep.tasks import TASK_SETS, Spec
from ums_rep.weighting import FixedWeights

log = logging.getLogger("ums_rep.finetune")

PRESETS = {
    "tiny": {"image": 32, "epochs": 2, "batch": 8, "lr_patience": 1, "stop": 2, "folds": 1,
             "n": {"shenzhen": 40, "montgomery": 20, "kermany": 60, "doppler": 300}, "phantom_size": 64},
    "quick": {"image": 64, "epochs": 15, "batch": 16, "lr_patience": 3, "stop": 5, "folds": 1,
              "n": {"shenzhen": 200, "montgomery": 60, "kermany": 300, "doppler": 600}, "phantom_size": 128},
    "paper": {"image": 256, "epochs": 100, "batch": 16, "lr_patience": 5, "stop": 10, "folds": 10,
              "n": {"shenzhen": 662, "montgomery": 138, "kermany": 5856, "doppler": 2444}, "phantom_size": 256},
}


ALL_STRATEGIES = STRATEGIES + ("baseline",)


# --------------------------------------------------------------------------- models

HEAD_PARAMS = {"head_units": 256, "head_dropout": 0.5}  # classification head; a head scan's best.json


def build_shared(backbone: keras.Model, modality: str, specs, head: dict | None = None) -> tuple[dict, list]:
    """Per-task models sharing the backbone's encoder, and the encoder's layers. ``head`` sets
    the classification heads' ``head_units`` and ``head_dropout``.

    CXR segmentation reuses the whole CDAE with its output layer replaced (paper 4.1.2): the
    head's decoder starts from the CDAE decoder's weights."""
    enc = encoder_of(backbone, modality if modality == "echo" else "cdae")
    feats = enc.output
    filters = tuple(backbone.get_layer(f"cdae.enc{i}.conv").filters for i in range(1, 5)) \
        if modality == "cxr" else tuple(backbone.get_layer(f"echo.conv{i}.conv").filters for i in range(1, 7))
    outputs = {}
    for s in specs:
        t = s.task
        if t.kind == "segmentation":
            outputs[t.name] = segmentation_head(feats, filters, name=t.name, steps=None if modality == "cxr" else 2)
        else:
            h = {**HEAD_PARAMS, **(head or {})}
            outputs[t.name] = classification_head(feats, len(t.classes), name=t.name, units=int(h["head_units"]),
                                                  dropout=float(h["head_dropout"]))
    models = {name: keras.Model(enc.inputs, out, name=name) for name, out in outputs.items()}
    if modality == "cxr":
        for name, m in models.items():
            if any(layer.name.startswith(f"{name}.dec") for layer in m.layers):
                for i in range(1, 5):
                    for part in ("conv", "bn"):
                        m.get_layer(f"{name}.dec{i}.{part}").set_weights(
                            backbone.get_layer(f"cdae.dec{i}.{part}").get_weights())
    return models, list(enc.layers[1:])


def fresh_backbone(backbone: keras.Model) -> keras.Model:
    """The same architecture, randomly initialised (the baseline's starting point)."""
    return keras.Model.from_config(backbone.get_config())


# --------------------------------------------------------------------------- data

def _split_rows(prepared, set_name: str, fold: int, test_prepared):
    df = prepared.manifest
    if set_name.startswith("echo"):
        pool = df[df.split == "val"]  # the 30% not used to build the encoder: 20% train/val ...
        test = df[df.split == "test"]  # ... and 10% test
    elif set_name == "cxr-homo":
        pool, test = df[df.split != "test"], df[df.split == "test"]
    else:
        pool, test = df, test_prepared.manifest
    if set_name == "cxr-homo":
        train, val = pool[pool.split == "train"], pool[pool.split == "val"]
    else:
        folds = sorted(pool.fold.unique())
        k = folds[fold % len(folds)]
        train, val = pool[pool.fold != k], pool[pool.fold == k]
    return train, val, test


# --------------------------------------------------------------------------- evaluation

def _predict(model, ds):
    return model.predict(ds.map(lambda x, y: x), verbose=0)


def evaluate(spec: Spec, probs: np.ndarray, rows: pd.DataFrame, test_root: Path) -> tuple[dict, pd.DataFrame]:
    """Metrics and per-image predictions (with correctness, for McNemar) of one task."""
    t = spec.task
    ids = rows["id"].to_numpy()
    if t.kind == "segmentation":
        truth = np.stack([read_image(test_root / p) for p in rows["mask"]]) > 0.5
        pred = probs[..., 0] > 0.5
        m = metrics.segmentation(truth, pred)
        inter = (truth & pred).reshape(len(pred), -1).sum(1)
        dice = 2 * inter / np.maximum(truth.reshape(len(pred), -1).sum(1) + pred.reshape(len(pred), -1).sum(1), 1)
        return m, pd.DataFrame({"id": ids, "dice": dice, "correct": dice >= 0.9})
    lookup = {c: i for i, c in enumerate(t.classes)}
    y = rows[spec.label_column].astype(str).map(lookup).to_numpy()
    yhat = probs.argmax(1)
    m = metrics.classification(y, yhat)
    if len(np.unique(y)) > 1:
        m.update(metrics.auc(y, probs, t.classes))
    table = pd.DataFrame({"id": ids, "truth": y, "pred": yhat, "correct": y == yhat,
                          **{f"p_{c}": probs[:, i] for i, c in enumerate(t.classes)}})
    return m, table


# --------------------------------------------------------------------------- the run

def run(args) -> int:
    args = resume_args(args, "ums_rep.finetune")
    resume = bool(getattr(args, "resume", None))
    preset = dict(PRESETS[args.preset])
    if args.epochs:
        preset["epochs"] = args.epochs
    folds = args.folds or preset["folds"]
    set_seed(args.seed, args.deterministic)
    out = run_dir(args.out, f"finetune-{args.tasks}-{args.strategy}", "ums_rep.finetune", resume=resume)
    if not resume:
        save_args(args, out)
    sdef = TASK_SETS[args.tasks]
    from ums_rep.pretrain import load_params
    params = load_params(args.params)  # encoder keys go to pretraining, head_* keys to the heads
    head = {k: params[k] for k in HEAD_PARAMS if k in params}
    specs = [s if s.task.kind != "classification" or not ({"head_optimizer", "head_learning_rate"} & set(params))
             else replace(s, task=replace(s.task, optimizer=params.get("head_optimizer", s.task.optimizer),
                                          learning_rate=float(params.get("head_learning_rate", s.task.learning_rate))))
             for s in sdef["tasks"]]
    modality = sdef["modality"]
    size = preset["image"]
    # arguments are checked before any data is prepared or any encoder trained
    weights = json.loads(args.weights) if args.weights else {}
    ratio = json.loads(args.ratio) if args.ratio else {}
    tasks = {s.task.name: s.task for s in specs}
    unknown = sorted((set(weights) | set(ratio)) - set(tasks))
    if unknown:
        raise ValueError(f"--weights/--ratio name unknown task(s) {unknown}; tasks of {args.tasks}: {sorted(tasks)}")

    def data(name):
        return prepared_data(name, args.data, size=size, seed=args.seed, phantom_n=preset["n"][name],
                             phantom_size=preset["phantom_size"])

    train_p = data(sdef["train"])
    test_p = data(sdef["test"]) if sdef["test"] != sdef["train"] else train_p

    # the shared encoder: given, or pretrained now (its time is reported, not added to the heads')
    pretrain_seconds, encoder_path = 0.0, args.encoder
    if encoder_path is None:
        from ums_rep import pretrain
        enc_out = out / "encoder"
        t0 = time.perf_counter()
        if resume and (enc_out / "results.json").is_file():
            log.info("the encoder was pretrained before the interruption: %s", enc_out)
            pretrain_seconds = float(json.loads((enc_out / "results.json").read_text())["total_train_seconds"])
        else:
            pargs = argparse.Namespace(backbone="cdae" if modality == "cxr" else "echo", preset=args.preset,
                                       epochs=None, params=args.params, seed=args.seed, out=enc_out, data=args.data,
                                       deterministic=args.deterministic,
                                       resume=enc_out if resume and (enc_out / "args.json").is_file() else None)
            if pretrain.run(pargs) != 0:
                raise RuntimeError("pretraining the encoder failed")
            pretrain_seconds = time.perf_counter() - t0
        encoder_path = enc_out / "model.keras"
    backbone = load_model(encoder_path)
    if tuple(backbone.input.shape[1:3]) != (size, size):
        raise ValueError(f"{encoder_path}: encoder input {tuple(backbone.input.shape[1:3])} differs from the "
                         f"preset's image size {size}; use the same --preset for pretrain and finetune")

    batch = preset["batch"]
    dist = tf.distribute.get_strategy()
    denoiser_params, denoiser_seconds = 0, 0.0
    if args.strategy == "baseline" and modality == "cxr":
        denoiser = load_model(encoder_path)  # model 1: the separately trained denoiser, frozen
        denoiser.trainable = False
        enc_results = Path(encoder_path).parent / "results.json"
        if enc_results.is_file():
            r = json.loads(enc_results.read_text())
            denoiser_seconds = float(r.get("total_train_seconds", 0.0))
            denoiser_params = int(r.get("total_params", 0))

    per_fold_probs, fold_records, nonfinite = {t: [] for t in tasks}, [], []
    seconds = {t: 0.0 for t in tasks}
    test_rows = {}
    for fold in range(folds):
        keras.utils.set_random_seed(args.seed + fold)
        train_rows, val_rows, pool_test = _split_rows(train_p, args.tasks, fold, test_p)
        with dist.scope():
            if args.strategy == "baseline":
                models = {}
                for s in specs:
                    m, _ = build_shared(fresh_backbone(backbone), modality, [s], head)
                    net = m[s.task.name]
                    if modality == "cxr":
                        inp = keras.Input(net.inputs[0].shape[1:])
                        net = keras.Model(inp, net(denoiser(inp)), name=s.task.name)
                    models[s.task.name] = net
            else:
                models, enc_layers = build_shared(backbone, modality, specs, head)
                if args.strategy == "independent":
                    for layer in enc_layers:
                        layer.trainable = False
        trains, vals = {}, {}
        steps = {}
        for s in specs:
            name = s.task.name
            tr, va = s.select(train_rows), s.select(val_rows)
            test_rows[name] = s.select(pool_test)
            if tr.empty or va.empty or test_rows[name].empty:
                raise ValueError(f"task {name}: no training, validation or test images in fold {fold}")
            kw = dict(label_column=s.label_column if s.task.kind == "classification" else None,
                      classes=s.task.classes or None, mask=s.task.kind == "segmentation")
            trains[name] = make_dataset(train_p, tr, batch_size=batch, shuffle=True, seed=args.seed + fold,
                                        repeat=True, drop_remainder=True, **kw)
            vals[name] = make_dataset(train_p, va, batch_size=batch, **kw)
            steps[name] = max(1, int(np.ceil(len(tr) / batch)))
        config = FitConfig(epochs=preset["epochs"], steps_per_epoch=steps, lr_patience=preset["lr_patience"],
                           stop_patience=preset["stop"], ratio=ratio, progress=not args.no_progress,
                           checkpoint_dir=out / "checkpoints" / f"fold{fold}", resume=resume, on_nonfinite="stop")
        if args.strategy == "baseline":
            fitted = {"history": [], "seconds": {}, "best_epoch": {}}
            for name in tasks:
                f = fit("joint", {name: models[name]}, {name: tasks[name]}, {name: trains[name]}, {name: vals[name]},
                        replace(config, checkpoint_dir=config.checkpoint_dir / name), dist=dist)
                fitted["history"] += [{"task": name, **h} for h in f["history"]]
                fitted["seconds"][name] = f["seconds"][name]
                if f["stopped"].startswith("non-finite"):
                    fitted["stopped"] = f"{name}: {f['stopped']}"
        else:
            fitted = fit(args.strategy, models, tasks, trains, vals, config, dist=dist,
                         weighting=FixedWeights(weights) if args.strategy == "joint" else None)
        for t in tasks:
            seconds[t] += fitted["seconds"][t]
        if str(fitted.get("stopped", "")).startswith("non-finite"):
            nonfinite.append(f"fold {fold}: {fitted['stopped']}")
        history_csv(out / f"history_fold{fold}.csv", fitted["history"])
        for s in specs:
            name = s.task.name
            kw = dict(mask=False, label_column=None)
            ds = make_dataset(test_p, test_rows[name], batch_size=batch, **kw)
            per_fold_probs[name].append(_predict(models[name], ds))
        fold_records.append({"fold": fold, "n_train": {t: int(len(s.select(train_rows))) for s, t in zip(specs, tasks)}})
        if fold == 0:
            if args.strategy == "baseline":
                for name, m in models.items():
                    save_model(m, out / f"model_{name}.keras")
            else:
                shared = keras.Model(models[specs[0].task.name].inputs, {n: m.output for n, m in models.items()})
                save_model(shared, out / "model.keras")

    task_results = {}
    for s in specs:
        name = s.task.name
        probs = np.mean(per_fold_probs[name], axis=0)
        m, table = evaluate(s, probs, test_rows[name], test_p.root)
        atomic_write_text(out / f"predictions_{name}.csv", table.to_csv(index=False))
        # independent: the head only (encoder frozen); alternating/joint: encoder + head
        params = trainable_params(models[name].trainable_variables)
        task_results[name] = {"metrics": m, "train_seconds": seconds[name], "trainable_params": params}
    if args.strategy == "baseline" and modality == "cxr":
        task_results["denoiser"] = {"metrics": {}, "train_seconds": denoiser_seconds,
                                    "trainable_params": denoiser_params}
    _derived(out, args, specs, models, test_p, test_rows, batch, per_fold_probs)
    shared_params = None
    if args.strategy in ("alternating", "joint"):
        # the encoder is shared: count every trainable weight once
        all_vars = {id(v): v for m in models.values() for v in m.trainable_variables}
        shared_params = trainable_params(all_vars.values())
    body = results(f"finetune --strategy {args.strategy} --tasks {args.tasks}",
                   {"strategy": args.strategy, "tasks": args.tasks, "preset": args.preset, **preset,
                    "folds": folds, "weights": weights, "params": params, "ratio": ratio, "encoder": str(encoder_path),
                    "pretrain_seconds": pretrain_seconds,
                    "data": "phantom" if args.data is None else str(args.data), "fold_records": fold_records},
                   task_results, args.seed)
    if shared_params is not None:
        body["total_params"] = shared_params
    write_json(out / "results.json", body)
    log.info("%s on %s: %s", args.strategy, args.tasks,
             "; ".join(f"{t}: " + ", ".join(f"{k} {v:.3f}" for k, v in r["metrics"].items() if k in ("accuracy", "iou", "f_score"))
                       for t, r in task_results.items() if r["metrics"]))
    log.info("wrote %s", out)
    if nonfinite:
        log.error("training stopped on a non-finite loss (%s); the outputs are those of the restored weights",
                  "; ".join(nonfinite))
        return 3
    return 0


def _derived(out, args, specs, models, test_p, test_rows, batch, probs):
    """Grad-CAM overlays for the first classification task; the echo recommendation."""
    cls = [s for s in specs if s.task.kind == "classification"]
    if not cls:
        return
    s = cls[0]
    model = models[s.task.name]
    rows = test_rows[s.task.name].head(4)
    x = np.stack([(read_image(test_p.root / p) - test_p.normalizer.mean) / test_p.normalizer.std for p in rows.image])[..., None]
    names = {l.name for l in model.layers}
    conv_layer = next((FEATURES[k] for k in FEATURES if FEATURES[k] in names), None)
    if conv_layer is not None:  # (a baseline model wrapping a denoiser has no such top-level layer)
        heat = derive.grad_cam(model, x, conv_layer)
        raw = np.stack([read_image(test_p.root / p) for p in rows.image])
        derive.overlay_png(out / f"gradcam_{s.task.name}.png", raw, heat, list(rows[s.label_column].astype(str)))
    if args.tasks == "echo-hetero":
        flow = np.mean(probs["flow"], axis=0)
        quality_model = models["quality"]
        ds = make_dataset(test_p, test_rows["flow"], batch_size=batch)
        q = _predict(quality_model, ds)
        keep = derive.recommend(flow, q, flow=args.recommend_flow)
        rec = pd.DataFrame({"id": test_rows["flow"]["id"].to_numpy(), "flow_pred": np.array(FLOW_CLASSES)[flow.argmax(1)],
                            "p_good": q[:, 1], "recommended": keep})
        atomic_write_text(out / "recommendation.csv", rec.to_csv(index=False))


# --------------------------------------------------------------------------- compare

def compare(run_dirs, out=None, mix_presets: bool = False) -> str:
    """Markdown tables per task set: metrics, time and parameters per strategy, McNemar p-values.
    Folders that are not finetune runs are skipped (logged); see :func:`ums_rep.report.collect`."""
    from ums_rep.report import collect
    runs = collect(run_dirs, ("finetune",), recursive=False, mix_presets=mix_presets)
    by_set = {}
    for d, r in runs:
        by_set.setdefault(r["config"]["tasks"], []).append((d, r))
    lines = []
    for set_name, group in by_set.items():
        order = sorted(group, key=lambda dr: ALL_STRATEGIES.index(dr[1]["config"]["strategy"]))
        tasks = [t for t in order[0][1]["tasks"] if t != "denoiser"]
        lines += [f"## {set_name}", "", "| strategy | task | accuracy | F-score | IoU | MCC | train s | trainable params |",
                  "|---|---|---|---|---|---|---|---|"]
        for d, r in order:
            for t in tasks + (["denoiser"] if "denoiser" in r["tasks"] else []):
                m = r["tasks"][t]["metrics"]
                cells = [f"{m[k]:.3f}" if k in m else "–" for k in ("accuracy", "f_score", "iou", "mcc")]
                lines.append(f"| {r['config']['strategy']} | {t} | " + " | ".join(cells)
                             + f" | {r['tasks'][t]['train_seconds']:.1f} | {r['tasks'][t]['trainable_params']:,} |")
            lines.append(f"| {r['config']['strategy']} | **total** | | | | | {r['total_train_seconds']:.1f} | {r['total_params']:,} |")
        lines += ["", "McNemar p-values (per-image correctness on the test set):", "",
                  "| task | pair | p | discordant (a✓b✗ / a✗b✓) |", "|---|---|---|---|"]
        for t in tasks:
            for i in range(len(order)):
                for j in range(i + 1, len(order)):
                    (da, ra), (db, rb) = order[i], order[j]
                    a = pd.read_csv(da / f"predictions_{t}.csv").set_index("id")
                    b = pd.read_csv(db / f"predictions_{t}.csv").set_index("id")
                    common = a.index.intersection(b.index)
                    res = metrics.mcnemar(a.loc[common, "correct"], b.loc[common, "correct"])
                    lines.append(f"| {t} | {ra['config']['strategy']} vs {rb['config']['strategy']} | "
                                 f"{res['p_value']:.3g} | {res['table'][0][1]} / {res['table'][1][0]} |")
        base = [r for _, r in order if r["config"]["strategy"] == "baseline"]
        shared = [r for _, r in order if r["config"]["strategy"] != "baseline"]
        if base and shared:
            best = max(shared, key=lambda r: np.mean([r["tasks"][t]["metrics"].get("accuracy", 0) for t in tasks]))
            lines += ["", f"Best shared strategy by mean accuracy: **{best['config']['strategy']}** — "
                          f"time ratio {best['total_train_seconds'] / max(base[0]['total_train_seconds'], 1e-9):.2f}, "
                          f"parameter ratio {best['total_params'] / max(base[0]['total_params'], 1):.2f} of the baseline."]
        lines.append("")
    text = "\n".join(lines)
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
        atomic_write_text(Path(out) / "compare.md", text)
    return text


def main(argv=None) -> int:
    parser = base_parser("python -m ums_rep.finetune", "Fine-tune UMS-Rep heads with a strategy, or compare runs.",
                         presets=PRESETS)
    parser.add_argument("--strategy", choices=ALL_STRATEGIES, default="joint")
    parser.add_argument("--tasks", choices=sorted(TASK_SETS), default="cxr-hetero")
    parser.add_argument("--encoder", type=Path, default=None, help="pretrained encoder .keras (default: pretrain one)")
    parser.add_argument("--params", type=Path, default=None, help="hyper-parameters JSON (a Talos best.json): encoder keys "
                        "for pretraining, head_units/head_dropout/head_optimizer/head_learning_rate for the heads")
    parser.add_argument("--folds", type=int, default=None, help="cross-validation folds (default per preset)")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--weights", default=None, help='joint loss weights, JSON: {"lung_seg": 1, "abnormal": 0.5}')
    parser.add_argument("--ratio", default=None, help='alternating batch ratio, JSON: {"lung_seg": 2, "abnormal": 1}')
    parser.add_argument("--recommend-flow", default="TR", choices=FLOW_CLASSES)
    add_training_options(parser)
    parser.add_argument("--compare", nargs="+", type=Path, default=None, metavar="RUN_DIR",
                        help="compare finished runs instead of training (other folders are skipped)")
    parser.add_argument("--mix-presets", action="store_true", help="with --compare: allow runs of different presets")
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    try:
        if args.compare:
            print(compare(args.compare, args.out, args.mix_presets))
            return 0
        return run(args)
    except (ValueError, FileNotFoundError, json.JSONDecodeError) as e:
        log.error("%s", e)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
