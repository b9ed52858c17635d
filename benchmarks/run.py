"""``python -m benchmarks.run [--quick] [--mixed] [--out FILE.json] [--markdown FILE.md]``: training
throughput, hardware efficiency, input-pipeline speed, and the compute saving of a shared
representation (UMS-Rep's headline: up to 86% less training time, ~81% fewer parameters).

Every figure is the median of ``--repeats`` timed blocks after warm-up; ratios compare numbers
measured in the same run on the same machine.

* **matmul** — dense ``tf.matmul`` FLOP/s (2N³ per product, float32): the machine's reference.
* **training** — images/s of the CDAE (256², batch 16), the echo encoder (256², batch 16) and
  MT-UNet (quick preset shape, and the paper's width at 320×208) trained three ways: Keras
  ``model.fit``; the package's custom loop (:class:`ums_rep.strategies.Engine`); the custom loop
  with XLA; on a GPU also XLA + mixed precision; with ``--mixed`` the custom loop with and
  without XLA under the mixed policy ``--precision mixed`` picks (bfloat16 on CPUs with
  AVX512-BF16/AMX and on GPUs ≥ 8.0, float16 with loss scaling on older GPUs), beside float32 in
  the same run, with a matmul reference in that 16-bit type too (on a GPU machine without TensorFlow,
  :mod:`benchmarks.keras_jax` times the same models on Keras' JAX backend). Each model runs in
  its own subprocess, so its peak RSS (and GPU memory) is its own. FLOPs per training step are
  *counted* by TensorFlow's profiler on the forward + backward graph; efficiency = FLOPs ×
  steps/s ÷ matmul FLOP/s.
* **convolution ceiling** — every Conv2D of the model timed alone (forward and the gradients a
  training step needs, same shapes, strides and dilations), summed: the efficiency TensorFlow's
  convolution kernels reach on these shapes, an upper bound for any training loop around them.
* **input pipeline** — images/s of :func:`data_prep.pipeline.make_dataset` decoding prepared
  PNGs (no cache), against the CDAE's training images/s (it must stay ≥ 3× faster).
* **latency** — one shared forward pass for all heads of a task set vs the separate
  one-model-per-task baselines (random weights: latency does not depend on them).
* **compute saving** — for each task set, ``finetune`` runs every strategy and the baseline
  with the same epochs (``--saving-epochs``): total training seconds and trainable
  parameters of the best shared strategy (highest mean of each task's accuracy or IoU) over
  the baseline's, beside the paper's ratios.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

log = logging.getLogger("benchmarks.run")

# name -> input (H, W) and batch at full size, and (shape, batch) with --quick; MT-UNet's base width
CASES = {
    "cdae": {"shape": (256, 256), "batch": 16, "quick": ((64, 64), 8)},
    "echo": {"shape": (256, 256), "batch": 16, "quick": ((64, 64), 8)},
    "mtunet-quick": {"shape": (96, 64), "batch": 8, "base": 8, "quick": ((64, 48), 4)},
    "mtunet-paper": {"shape": (320, 208), "base": 64, "batch": 2, "quick": ((64, 48), 2), "steps": 2},
}
SETS = ("cxr-hetero", "cxr-homo", "echo-hetero", "echo-homo")
SHARED_STRATEGIES = ("independent", "alternating", "joint")
BENCH = "BENCH "  # a child process's result line: this prefix, then JSON


# --------------------------------------------------------------------------- helpers

def _median_time(fn, repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def add_common_options(parser: argparse.ArgumentParser) -> None:
    """The options both harnesses (this one and :mod:`benchmarks.keras_jax`) take."""
    parser.add_argument("--quick", action="store_true", help="small shapes: seconds, for tests and smoke runs")
    parser.add_argument("--out", type=Path, default=None, metavar="FILE.json", help="write the report JSON here")
    parser.add_argument("--markdown", type=Path, default=None, metavar="FILE.md", help="write the tables here")
    parser.add_argument("--repeats", type=int, default=None, metavar="N",
                        help="timed blocks per figure, the median reported (default 5; 2 with --quick)")
    parser.add_argument("--cases", nargs="+", choices=sorted(CASES), default=list(CASES),
                        help="the models to time (default: all)")
    parser.add_argument("--case", default=None, help=argparse.SUPPRESS)  # internal: one case, JSON on stdout


def child_result(cmd: list, what: str, env=None) -> dict:
    """Run one benchmark case in its own process (so its peak memory is its own) and return the
    JSON it printed after ``BENCH``; a failure raises with the end of the child's stderr."""
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith(BENCH)), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"benchmark {what} failed:\n{done.stderr[-3000:]}")
    return json.loads(line[len(BENCH):])


def write_report(report: dict, text: str, out: Path | None, markdown_path: Path | None) -> None:
    from data_prep.io import atomic_write_text
    if out:
        atomic_write_text(out, json.dumps(report, indent=1) + "\n")
    if markdown_path:
        atomic_write_text(markdown_path, text)


def matmul_gflops(n: int = 2048, repeats: int = 5, dtype: str = "float32") -> float:
    import tensorflow as tf
    a = tf.cast(tf.random.normal((n, n)), dtype)
    b = tf.cast(tf.random.normal((n, n)), dtype)
    f = tf.function(lambda: tf.reduce_sum(tf.matmul(a, b)))
    seconds = _median_time(lambda: f().numpy(), repeats, warmup=2)
    return 2 * n ** 3 / seconds / 1e9


def peak_memory() -> dict:
    import tensorflow as tf
    out = {"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if tf.config.list_physical_devices("GPU"):
        out["peak_gpu_mib"] = tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2 ** 20
    return out


def case_size(case: str, quick: bool):
    """A case's input (H, W), its batch and MT-UNet's base width (None for the other models)."""
    spec = CASES[case]
    shape, batch = spec["quick"] if quick else (spec["shape"], spec["batch"])
    base = (16 if case == "mtunet-paper" else 4) if quick and "base" in spec else spec.get("base")
    return tuple(shape), batch, base


def _model_and_task(case: str, shape, base=None):
    """A model and its training task for a benchmark case."""
    from ums_rep.backbones import FLOW_CLASSES, cdae, echo_encoder
    from ums_rep.tasks import Task
    if case == "cdae":
        return {"denoise": cdae(shape + (1,))}, {"denoise": Task("denoise", "reconstruction", optimizer="rmsprop")}, None
    if case == "echo":
        return ({"flow": echo_encoder(shape + (1,))},
                {"flow": Task("flow", "classification", classes=FLOW_CLASSES)}, None)
    from mt_unet.model import TASKS, build
    net, tasks = build("mtunet", shape + (1,), 3, base)
    return {"model": net}, {t: TASKS[t] for t in tasks}, net


def _batch(case, shape, batch, tasks):
    import numpy as np
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch, *shape, 1)).astype("float32")
    y = {"clean": x.copy(), "label": np.eye(3, dtype="float32")[rng.integers(0, 3, batch)]}
    sal = rng.random((batch, *shape, 1)).astype("float32")
    y["saliency"] = sal / sal.sum(axis=(1, 2, 3), keepdims=True)
    return x, y


def count_train_flops(models, tasks, joint, x, y) -> float:
    """FLOPs of one forward + backward pass, counted by TensorFlow's profiler."""
    import tensorflow as tf
    from tensorflow.python.profiler import model_analyzer, option_builder
    variables = [v for m in models.values() for v in m.trainable_variables]

    def step(x, y):
        with tf.GradientTape() as tape:
            if joint is not None:
                preds = joint(x, training=True)
                loss = tf.add_n([tf.reduce_mean(t.loss(y[t.target], preds[n])) for n, t in tasks.items()])
            else:
                (name, model), = models.items()
                loss = tf.reduce_mean(tasks[name].loss(y[tasks[name].target], model(x, training=True)))
        return tape.gradient(loss, variables)

    concrete = tf.function(step).get_concrete_function(
        tf.TensorSpec(x.shape, tf.float32), {k: tf.TensorSpec(v.shape, tf.float32) for k, v in y.items()})
    opts = option_builder.ProfileOptionBuilder(option_builder.ProfileOptionBuilder.float_operation()) \
        .with_empty_output().build()
    return float(model_analyzer.profile(graph=concrete.graph, options=opts).total_float_ops)


def _convs(models):
    """Each Conv2D of the models, and whether a training step needs its input gradient (the first
    layer needs none: 2 of the 3 convolution passes)."""
    import keras
    for model in models.values():
        for layer in model.layers:
            if type(layer) is keras.layers.Conv2D:
                yield layer, not any(layer.input is i for i in model.inputs)


def conv_train_flops(layer, batch: int, grad_x: bool) -> float:
    """FLOPs of one Conv2D in a training step: 2·outputs·k²·C_in per pass, 3 passes (2 for the first)."""
    outputs = batch * math.prod(layer.output.shape[1:])
    return 2.0 * outputs * math.prod(layer.kernel.shape[:-1]) * (3 if grad_x else 2)


def conv_ceiling(models, batch: int, repeats: int) -> dict:
    """Seconds and FLOPs of the models' Conv2D layers run alone, forward + backward, summed.

    A training step can be no faster than its convolutions; this separates what the kernels of
    TensorFlow (oneDNN/Eigen on CPU, cuDNN on GPU) reach on these shapes from what the loop adds.
    The first layer needs no input gradient (2 of 3 convolution passes), every other layer all 3.
    """
    import tensorflow as tf
    seconds = flops = 0.0
    for layer, grad_x in _convs(models):
        x = tf.random.normal((batch, *layer.input.shape[1:]))
        kernel = tf.Variable(tf.convert_to_tensor(layer.kernel))

        @tf.function
        def step(x, kernel=kernel, layer=layer, grad_x=grad_x):
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = tf.nn.conv2d(x, kernel, layer.strides, layer.padding.upper(), dilations=layer.dilation_rate)
                loss = tf.reduce_sum(y)
            return tape.gradient(loss, [x, kernel] if grad_x else [kernel])

        flops += conv_train_flops(layer, batch, grad_x)
        seconds += _median_time(lambda: float(tf.reduce_sum(step(x)[-1])), repeats)
    return {"seconds_per_step": seconds, "flops_per_step": flops}


def train_case(case: str, quick: bool, steps: int, repeats: int, mixed: bool = False) -> dict:
    """Images/s of one model trained by model.fit, the custom loop and the custom loop + XLA;
    ``mixed``: also the custom loop with and without XLA under the mixed policy."""
    import keras
    import tensorflow as tf
    from ums_rep.precision import choose
    from ums_rep.strategies import Engine, make_optimizer
    shape, batch, base = case_size(case, quick)
    steps = steps if quick else min(steps, CASES[case].get("steps", steps))  # seconds-long steps: fewer per block
    gpu = bool(tf.config.list_physical_devices("GPU"))
    modes = ["fit", "custom", "custom+xla"] + (["custom+mixed", "custom+xla+mixed"] if mixed else
                                               ["custom+xla+mixed"] if gpu else [])
    mixed_policy = choose("mixed")[0]
    out = {"case": case, "input": list(shape), "batch": batch, "base_filters": base, "steps_per_block": steps,
           "modes": {}, "mixed_policy": mixed_policy}
    for mode in modes:
        keras.backend.clear_session()
        keras.mixed_precision.set_global_policy(mixed_policy if mode.endswith("mixed") else "float32")
        keras.utils.set_random_seed(0)
        models, tasks, joint = _model_and_task(case, shape, base)
        x, y = _batch(case, shape, batch, tasks)
        if "flops_per_step" not in out:
            out["flops_per_step"] = count_train_flops(models, tasks, joint, x, y)
            out["params"] = int(sum(m.count_params() for m in models.values()))
        ds = tf.data.Dataset.from_tensors((x, y)).repeat().prefetch(2)
        first = next(iter(tasks.values()))
        if mode == "fit":
            model = joint if joint is not None else next(iter(models.values()))
            if joint is not None:
                loss = {n: (lambda t: (lambda yt, yp: t.loss(yt, yp)))(t) for n, t in tasks.items()}
                data = ds.map(lambda a, b: (a, {n: b[t.target] for n, t in tasks.items()}))
            else:
                loss = lambda yt, yp: first.loss(yt, yp)  # noqa: E731
                data = ds.map(lambda a, b: (a, b[first.target]))
            model.compile(optimizer=make_optimizer(first.optimizer, 1e-4), loss=loss)
            run = lambda: model.fit(data, epochs=1, steps_per_epoch=steps, verbose=0)  # noqa: E731
        else:
            opt = {"joint": make_optimizer(first.optimizer, 1e-4)}
            engine = Engine("joint", models, tasks, opt, joint_model=joint, jit_compile="xla" in mode)
            step = engine.step_fn("joint")
            it = iter(ds)
            batches = (lambda: next(it)) if joint is not None else (lambda: {next(iter(tasks)): next(it)})

            def run():
                for _ in range(steps):
                    losses = step(batches())
                float(next(iter(losses.values())))  # wait for the device
        seconds = _median_time(run, repeats, warmup=1)
        out["modes"][mode] = {"images_per_s": batch * steps / seconds, "step_s": seconds / steps}
    keras.mixed_precision.set_global_policy("float32")
    # the last mode's models give the layer shapes; the timed convolutions are float32 in any policy
    out["conv_ceiling"] = conv_ceiling(models, batch, repeats)
    out.update(peak_memory())
    return out


def input_pipeline(quick: bool, repeats: int) -> dict:
    """Images/s decoding prepared 256² PNGs (RSNA phantoms) with normalisation, no cache."""
    from data_prep.pipeline import make_dataset
    from ums_rep.runs import prepared_data
    size = 64 if quick else 256
    p = prepared_data("rsna", None, size=size, phantom_n=40 if quick else 300, phantom_size=size, progress=False)
    rows = p.rows()
    ds = make_dataset(p, rows, batch_size=16, cache=False)
    seconds = _median_time(lambda: [None for _ in ds], repeats, warmup=1)
    return {"images": len(rows), "side": size, "images_per_s": len(rows) / seconds}


def latency(set_name: str, size: int, repeats: int) -> dict:
    """Milliseconds for one batch of 16: the shared model with every head vs separate models."""
    import keras
    import numpy as np
    from ums_rep.backbones import cdae, echo_encoder
    from ums_rep.models import baseline_model, build_shared, fresh_backbone
    from ums_rep.tasks import TASK_SETS
    sdef = TASK_SETS[set_name]
    backbone = cdae((size, size, 1)) if sdef["modality"] == "cxr" else echo_encoder((size, size, 1))
    models, _ = build_shared(backbone, sdef["modality"], sdef["tasks"])
    shared = keras.Model(backbone.inputs, {n: m.output for n, m in models.items()})
    denoiser = fresh_backbone(backbone) if sdef["modality"] == "cxr" else None  # the baseline's, run first
    separate = [baseline_model(backbone, sdef["modality"], s, denoiser=denoiser) for s in sdef["tasks"]]
    x = np.random.default_rng(0).normal(size=(16, size, size, 1)).astype("float32")
    shared_s = _median_time(lambda: shared.predict_on_batch(x), repeats, warmup=2)
    separate_s = _median_time(lambda: [m.predict_on_batch(x) for m in separate], repeats, warmup=2)
    return {"set": set_name, "side": size, "shared_ms": shared_s * 1e3, "separate_ms": separate_s * 1e3,
            "ratio": shared_s / separate_s}


def _primary(task_result: dict) -> float | None:
    m = task_result.get("metrics", {})
    return m.get("iou", m.get("accuracy"))


def _paper_ratio(set_name: str) -> str:
    """The paper's shared / baseline totals (Tables 4, 6, 8, 10; ums_rep.report.PAPER)."""
    from ums_rep.report import PAPER
    c = PAPER["compute"][set_name]
    return f"time {c['shared'][0] / c['baseline'][0]:.2f}, params {c['shared'][1] / c['baseline'][1]:.2f}"


def compute_saving(preset: str, epochs: int, workdir: Path, sets=SETS, strategies=SHARED_STRATEGIES) -> list:
    """Run the shared strategies (default: all three) and the baseline of each task set with the same
    epochs and encoder."""
    out = []
    encoders = {}
    for set_name in sets:
        from ums_rep.tasks import TASK_SETS
        modality = TASK_SETS[set_name]["modality"]
        runs = {}
        for strategy in (*strategies, "baseline"):
            folder = workdir / f"{set_name}-{strategy}"
            cmd = [sys.executable, "-m", "ums_rep.finetune", "--strategy", strategy, "--tasks", set_name,
                   "--preset", preset, "--epochs", str(epochs), "--out", str(folder), "--no-progress"]
            if modality in encoders:
                cmd += ["--encoder", str(encoders[modality])]
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode != 0:
                raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
            if modality not in encoders:
                encoders[modality] = folder / "encoder" / "model.keras"
            runs[strategy] = json.loads((folder / "results.json").read_text())
        base = runs.pop("baseline")
        scores = {s: statistics.mean(v for v in (_primary(t) for t in r["tasks"].values()) if v is not None)
                  for s, r in runs.items()}
        best = max(scores, key=scores.get)
        out.append({"set": set_name, "best_shared": best, "scores": scores,
                    "baseline_score": statistics.mean(v for v in (_primary(t) for t in base["tasks"].values())
                                                      if v is not None),
                    "shared_seconds": runs[best]["total_train_seconds"], "baseline_seconds": base["total_train_seconds"],
                    "shared_params": runs[best]["total_params"], "baseline_params": base["total_params"],
                    "time_ratio": runs[best]["total_train_seconds"] / base["total_train_seconds"],
                    "param_ratio": runs[best]["total_params"] / base["total_params"],
                    "all_strategies": {s: {"seconds": r["total_train_seconds"], "params": r["total_params"]}
                                       for s, r in runs.items()},
                    "paper": _paper_ratio(set_name)})
    return out


def markdown(report: dict) -> str:
    mm = report["matmul_gflops"]
    lines = [f"Machine: {report['machine']['processor']}, {report['machine']['cpus']} CPUs, "
             f"GPUs {report['machine']['gpus'] or 'none'}; TensorFlow {report['machine']['tensorflow']}; "
             f"{'quick' if report['quick'] else 'full'} run. Dense matmul: **{mm:.0f} GFLOP/s**.", "",
             "| model | input × batch | GFLOP/step (counted) | mode | images/s | GFLOP/s | of matmul | peak RSS MiB |",
             "|---|---|---|---|---|---|---|---|"]
    for t in report["training"]:
        for mode, r in t["modes"].items():
            gflops = t["flops_per_step"] / r["step_s"] / 1e9
            lines.append(f"| {t['case']} | {t['input'][0]}×{t['input'][1]} × {t['batch']} | "
                         f"{t['flops_per_step'] / 1e9:.1f} | {mode} | {r['images_per_s']:.1f} | {gflops:.0f} | "
                         f"{gflops / mm:.2f} | {t['peak_rss_mib']:.0f} |")
    lines += ["", "| model | custom loop / model.fit | XLA / custom loop | best mode of matmul | its convolutions "
              "alone: GFLOP/s, of matmul | convolution time / best step time |", "|---|---|---|---|---|---|"]
    for t in report["training"]:
        m, cc = t["modes"], t["conv_ceiling"]
        fastest = min(r["step_s"] for r in m.values())
        conv = cc["flops_per_step"] / cc["seconds_per_step"] / 1e9
        lines.append(f"| {t['case']} | {m['custom']['images_per_s'] / m['fit']['images_per_s']:.2f} | "
                     f"{m['custom+xla']['images_per_s'] / m['custom']['images_per_s']:.2f} | "
                     f"{t['flops_per_step'] / fastest / 1e9 / mm:.2f} | {conv:.0f}, {conv / mm:.2f} | "
                     f"{cc['seconds_per_step'] / fastest:.2f} |")
    lines += mixed_table(report)
    ip = report["input_pipeline"]
    lines += ["", f"Input pipeline: {ip['images_per_s']:.0f} images/s decoding {ip['side']}² PNGs "
              f"= **{report['input_vs_training']:.1f}×** the CDAE's custom-loop training rate.", ""]
    lines += ["| task set | shared forward ms | separate models ms | ratio |", "|---|---|---|---|"]
    for r in report["latency"]:
        lines.append(f"| {r['set']} | {r['shared_ms']:.1f} | {r['separate_ms']:.1f} | {r['ratio']:.2f} |")
    if report.get("compute_saving"):
        lines += ["", "| task set | best shared | time: shared / baseline | params: shared / baseline | paper |",
                  "|---|---|---|---|---|"]
        for r in report["compute_saving"]:
            lines.append(f"| {r['set']} | {r['best_shared']} | {r['shared_seconds']:.0f} s / {r['baseline_seconds']:.0f} s"
                         f" = **{r['time_ratio']:.2f}** | {r['shared_params']:,} / {r['baseline_params']:,} = "
                         f"**{r['param_ratio']:.2f}** | {r['paper']} |")
    return "\n".join(lines) + "\n"


def mixed_table(report: dict) -> list:
    """``--mixed``: each case's mixed modes over float32 in the same run, and the fraction of the
    matmul rate each reaches, of its own 16-bit type and of float32 (no lines without mixed modes)."""
    mm, mm16 = report["matmul_gflops"], report.get("matmul_gflops_mixed")
    rows = [t for t in report["training"] if "custom+mixed" in t["modes"]]
    if not rows:
        return []
    lines = ["", f"Mixed precision ({report.get('mixed_policy', rows[0].get('mixed_policy'))}; its matmul: "
             + (f"**{mm16:.0f} GFLOP/s**" if mm16 else "not measured") + ")", "",
             "| model | mode | images/s | over float32, same loop | of its matmul | of float32 matmul |",
             "|---|---|---|---|---|---|"]
    for t in rows:
        for mode in ("custom+mixed", "custom+xla+mixed"):
            if mode not in t["modes"]:
                continue
            r, ref = t["modes"][mode], t["modes"][mode.replace("+mixed", "")]
            gflops = t["flops_per_step"] / r["step_s"] / 1e9
            own = f"{gflops / mm16:.2f}" if mm16 else ""
            lines.append(f"| {t['case']} | {mode} | {r['images_per_s']:.1f} | "
                         f"**{r['images_per_s'] / ref['images_per_s']:.2f}×** | {own} | {gflops / mm:.2f} |")
    return lines


def build_parser() -> argparse.ArgumentParser:
    from data_prep.cli import describe
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=describe(__doc__))
    add_common_options(parser)
    parser.add_argument("--mixed", action="store_true",
                        help="also time the custom loop (with and without XLA) under the mixed precision policy, "
                             "beside float32 in the same run, with a 16-bit matmul reference")
    parser.add_argument("--saving-preset", default=None, metavar="PRESET", help="finetune preset for the compute saving "
                        "(default tiny with --quick, else quick); 'none' skips it")
    parser.add_argument("--saving-epochs", type=int, default=None, metavar="N",
                        help="epochs of every compute-saving run (default 5; 2 with --quick)")
    parser.add_argument("--saving-sets", nargs="+", choices=SETS, default=list(SETS),
                        help="task sets whose compute saving is measured (default: all four)")
    parser.add_argument("--saving-strategies", nargs="+", choices=SHARED_STRATEGIES, default=list(SHARED_STRATEGIES),
                        help="shared strategies the best is chosen from (each is one more training run per set)")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    repeats = args.repeats or (2 if args.quick else 5)
    steps = 2 if args.quick else 5
    if args.case:  # child process: one model, every mode
        print(BENCH + json.dumps(train_case(args.case, args.quick, steps, repeats, args.mixed)))
        return 0
    from ums_rep.runs import versions
    report = {"quick": args.quick, "repeats": repeats, "steps_per_block": steps, "machine": versions(),
              "matmul_gflops": matmul_gflops(1024 if args.quick else 2048, repeats)}
    log.info("matmul: %.0f GFLOP/s", report["matmul_gflops"])
    if args.mixed:
        from ums_rep.precision import choose
        report["mixed_policy"] = choose("mixed")[0]
        report["matmul_gflops_mixed"] = matmul_gflops(1024 if args.quick else 2048, repeats,
                                                      report["mixed_policy"].split("_")[1])
        log.info("matmul %s: %.0f GFLOP/s", report["mixed_policy"], report["matmul_gflops_mixed"])
    report["training"] = []
    for case in args.cases:
        cmd = [sys.executable, "-m", "benchmarks.run", "--case", case, "--repeats", str(repeats)] + \
              (["--quick"] if args.quick else []) + (["--mixed"] if args.mixed else [])
        report["training"].append(child_result(cmd, case, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}))
        log.info("%s: %s", case, {m: round(r["images_per_s"], 1) for m, r in report["training"][-1]["modes"].items()})
    report["input_pipeline"] = input_pipeline(args.quick, repeats)
    cdae = next((t for t in report["training"] if t["case"] == "cdae"), report["training"][0])
    report["input_vs_training"] = report["input_pipeline"]["images_per_s"] / cdae["modes"]["custom"]["images_per_s"]
    report["latency"] = [latency(s, 32 if args.quick else 256, repeats) for s in SETS]
    preset = args.saving_preset or ("tiny" if args.quick else "quick")
    if preset != "none":
        with tempfile.TemporaryDirectory(prefix="ums_saving_") as tmp:
            report["compute_saving"] = compute_saving(preset, args.saving_epochs or (2 if args.quick else 5), Path(tmp),
                                                      args.saving_sets, args.saving_strategies)
    text = markdown(report)
    write_report(report, text, args.out, args.markdown)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
