"""``python -m mt_unet.evaluate MODEL.keras [--data DIR] [--preset P] [--split test]``: score a
saved MT-UNet (or UNetS/UNetC/baseline) on the eye-gaze data (MT-UNet Section 5, Tables 1–3).

Saliency: KLD, CC and HS per image, median over images (the authors' code); classification:
accuracy, Hand & Till multi-class AUC and one-vs-rest AUC per class (Y1 normal, Y2 enlarged
heart / CHF, Y3 pneumonia). :func:`evaluate` is what ``mt_unet.train`` calls on its test split.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from data_prep.cli import base_parser, parse_early, setup_logging


def build_parser() -> argparse.ArgumentParser:
    parser = base_parser("python -m mt_unet.evaluate", "Score a saved MT-UNet-family model on the eye-gaze "
                         "data (MT-UNet Section 5, Tables 1-3).")
    parser.add_argument("model", type=Path, help="a .keras file written by mt_unet.train")
    parser.add_argument("--split", choices=("train", "val", "test"), default="test",
                        help="the split of the prepared eye-gaze data to score (default test)")
    parser.add_argument("--batch", type=int, default=8, metavar="N", help="batch size (default 8)")
    return parser


parse_early(__name__, build_parser)  # python -m: --help and usage errors answer before TensorFlow loads

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from data_prep.egd import CLASSES  # noqa: E402
from data_prep.io import atomic_write_text  # noqa: E402
from data_prep.pipeline import make_dataset  # noqa: E402
from mt_unet.model import DISEASE, SALIENCY  # noqa: E402
from ums_rep import metrics  # noqa: E402
from ums_rep.runs import load_model, run_dir, write_json  # noqa: E402

log = logging.getLogger("mt_unet.evaluate")


def dataset(prepared, rows, batch: int, tasks, **kw):
    """The eye-gaze pipeline: image → ``{"label": one-hot, "saliency": map summing to 1}``."""
    return make_dataset(prepared, rows, label_column="label" if DISEASE in tasks else None,
                        classes=CLASSES if DISEASE in tasks else None, saliency=SALIENCY in tasks,
                        batch_size=batch, **kw)


def predict(model, prepared, rows, batch: int = 8):
    """``(outputs, truths)``: the model's outputs per task and the targets, as arrays."""
    tasks = tuple(model.output.keys()) if isinstance(model.output, dict) else ()
    ds = dataset(prepared, rows, batch, tasks=(SALIENCY, DISEASE), cache=False)
    outs, truths = {t: [] for t in tasks}, {"saliency": [], "label": [], "image": []}
    for x, y in ds:
        pred = model(x, training=False)
        for t in tasks:
            outs[t].append(np.asarray(pred[t]))
        truths["saliency"].append(y["saliency"].numpy())
        truths["label"].append(y["label"].numpy().argmax(-1))
        truths["image"].append(x.numpy())
    return {t: np.concatenate(v) for t, v in outs.items()}, {k: np.concatenate(v) for k, v in truths.items()}


def evaluate(model, prepared, rows, batch: int = 8):
    """``(metrics, per_image_table, arrays)`` of ``model`` on ``rows`` of the prepared eye-gaze data."""
    outs, truths = predict(model, prepared, rows, batch)
    table = pd.DataFrame({"id": rows["id"].to_numpy(), "truth": [CLASSES[i] for i in truths["label"]]})
    m = {}
    if SALIENCY in outs:
        m.update(metrics.saliency(truths["saliency"], outs[SALIENCY]))
        per = metrics.saliency_per_image(truths["saliency"], outs[SALIENCY])
        for k, v in per.items():
            table[k] = v
    if DISEASE in outs:
        probs = outs[DISEASE]
        y, yhat = truths["label"], probs.argmax(1)
        m["accuracy"] = metrics.classification(y, yhat)["accuracy"]
        if len(np.unique(y)) == len(CLASSES):
            m.update(metrics.auc(y, probs, CLASSES))
        else:
            log.warning("the evaluated split lacks a class (%s present); AUC not computed",
                        sorted(CLASSES[i] for i in np.unique(y)))
        table["pred"] = [CLASSES[i] for i in yhat]
        table["correct"] = y == yhat
        for i, c in enumerate(CLASSES):
            table[f"p_{c}"] = probs[:, i]
    return m, table, {"outputs": outs, "truths": truths}


def main(argv=None) -> int:
    from mt_unet.train import egd_data
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    try:
        model = load_model(args.model, expect="mt_unet")
        out = run_dir(args.out, "mt_unet-evaluate", "mt_unet.evaluate")
    except ValueError as e:  # ModelFileError, RunFolderError: one line naming the file
        log.error("%s", e)
        return 1
    shape = tuple(int(d) for d in model.input.shape[1:3])
    prepared = egd_data(args.data, args.preset, shape, args.seed)
    rows = prepared.rows(args.split)
    m, table, arrays = evaluate(model, prepared, rows, args.batch)
    atomic_write_text(out / f"predictions_{args.split}.csv", table.to_csv(index=False))
    write_json(out / "results.json", {"command": "mt_unet.evaluate", "model": str(args.model),
                                      "split": args.split, "n_images": len(rows), "metrics": m,
                                      "prepared": prepared.info["prepared"]})
    if SALIENCY in arrays["outputs"]:
        from mt_unet.figures import saliency_overlays
        k = min(4, len(rows))
        saliency_overlays(out / "saliency_overlays.png", arrays["truths"]["image"][:k],
                          arrays["truths"]["saliency"][:k], arrays["outputs"][SALIENCY][:k])
    log.info("%s on %d %s images: %s", args.model, len(rows), args.split,
             ", ".join(f"{k} {v:.3f}" for k, v in m.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
