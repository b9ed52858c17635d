"""``python -m benchmarks.run [--quick] [--mixed] [--out FILE.json] [--markdown FILE.md]``: training
throughput, hardware efficiency, input-pipeline speed, and the compute saving of a shared
representation (UMS-Rep's headline: up to 86% less training time, ~81% fewer parameters).

Every figure is the median of ``--repeats`` timed blocks after warm-up; ratios compare numbers
measured in the same run on the same machine.

* **matmul** — dense ``tf.matmul`` FLOP/s (2N³ per product, float32): the machine's reference.
* **training** — images/s of the CDAE (256², batch 16), the echo encoder (256², batch 16) and
  MT-UNet (quick preset shape, and the paper's width at 320×208) trained three ways: Keras
  ``model.fit``; the package's custom loop (:class:`ums_rep.engine.Engine`); the custom loop
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
* **prepare** (issue 19) — :func:`data_prep.preparation.prepare` of RSNA-layout phantoms (1024² DICOMs,
  16 bits allocated, 12 or 13 stored, written once by :func:`data_prep.phantoms.layouts.generate` outside
  the timed part) to 256² PNGs, at three dataset sizes, single-process and on every core, each run
  in its own subprocess: images/s, peak RSS (the largest of the run's process and its pool
  workers), the speed-up over one process, the line fitted to time vs dataset size and the
  spread of peak RSS across the sizes.
* **latency** — one shared forward pass for all heads of a task set vs the separate
  one-model-per-task baselines (random weights: latency does not depend on them).
* **compute saving** — for each task set, ``finetune`` runs every strategy and the baseline
  with the same epochs (``--saving-epochs``): total training seconds and trainable
  parameters of the best shared strategy (highest mean of each task's accuracy or IoU) over
  the baseline's, beside the paper's ratios.
"""
from __future__ import annotations

import argparse
import contextlib
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
    # the tiny/quick presets' echo encoder: layers 2-3 strided (the paper's does not stride)
    "echo-strided": {"shape": (256, 256), "batch": 16, "strides": 2, "quick": ((64, 64), 8)},
    "mtunet-quick": {"shape": (96, 64), "batch": 8, "base": 8, "quick": ((64, 48), 4)},
    "mtunet-paper": {"shape": (320, 208), "base": 64, "batch": 2, "quick": ((64, 48), 2), "steps": 2},
}
# the prepare case: dataset sizes (images), the phantoms' side and the prepared side; (sizes, side) with --quick
PREPARE = {"sizes": (400, 800, 1600), "side": 1024, "out_side": 256, "quick": ((32, 48, 64), 256)}
SETS = ("cxr-hetero", "cxr-homo", "echo-hetero", "echo-homo")
SHARED_STRATEGIES = ("independent", "alternating", "joint")
BENCH = "BENCH "  # a child process's result line: this prefix, then JSON


# --------------------------------------------------------------------------- helpers

def median_time(fn, repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def add_common_options(parser: argparse.ArgumentParser, extra_cases=()) -> None:
    """The options both harnesses (this one and :mod:`benchmarks.keras_jax`) take; ``extra_cases``:
    cases beside the models of :data:`CASES` that only this harness runs."""
    parser.add_argument("--quick", action="store_true", help="small shapes: seconds, for tests and smoke runs")
    parser.add_argument("--out", type=Path, default=None, metavar="FILE.json", help="write the report JSON here")
    parser.add_argument("--markdown", type=Path, default=None, metavar="FILE.md", help="write the tables here")
    parser.add_argument("--repeats", type=int, default=None, metavar="N",
                        help="timed blocks per figure, the median reported (default 5; 2 with --quick)")
    parser.add_argument("--cases", nargs="+", choices=sorted(CASES) + list(extra_cases),
                        default=list(CASES) + list(extra_cases),
                        help="the cases to time (default: all)" + (
                            f"; {', '.join(extra_cases)} alone skips the training cases, the matmul reference, "
                            "the input pipeline, latency and the compute saving" if extra_cases else ""))
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
    seconds = median_time(lambda: f().numpy(), repeats, warmup=2)
    return 2 * n ** 3 / seconds / 1e9


def own_peak_rss_mib() -> float:
    """This process's peak RSS since it started: ``VmHWM`` of ``/proc/self/status``. Not
    ``getrusage(RUSAGE_SELF).ru_maxrss``: Linux keeps that across ``execve``, so a child started by
    ``subprocess`` (vfork + exec) reports at least its parent's peak (a parent holding TensorFlow made
    a 180 MiB ``prepare`` run read 772 MiB). ``ru_maxrss`` where ``/proc`` is missing."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 / (1024 if sys.platform == "darwin" else 1)


def peak_memory() -> dict:
    import tensorflow as tf
    out = {"peak_rss_mib": own_peak_rss_mib()}
    if tf.config.list_physical_devices("GPU"):
        out["peak_gpu_mib"] = tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2 ** 20
    return out


def case_size(case: str, quick: bool, batch: int | None = None):
    """A case's input (H, W), its batch (``batch`` overrides it) and MT-UNet's base width (None
    for the other models)."""
    spec = CASES[case]
    shape, default_batch = spec["quick"] if quick else (spec["shape"], spec["batch"])
    batch = batch or default_batch
    base = (16 if case == "mtunet-paper" else 4) if quick and "base" in spec else spec.get("base")
    return tuple(shape), batch, base


def case_models(case: str, shape, base=None):
    """A model and its training task for a benchmark case."""
    from ums_rep.backbones import FLOW_CLASSES, cdae, echo_encoder
    from ums_rep.tasks import Task
    if case == "cdae":
        return {"denoise": cdae(shape + (1,))}, {"denoise": Task("denoise", "reconstruction", optimizer="rmsprop")}, None
    if case.startswith("echo"):
        return ({"flow": echo_encoder(shape + (1,), strides=CASES[case].get("strides", 1))},
                {"flow": Task("flow", "classification", classes=FLOW_CLASSES)}, None)
    from mt_unet.model import build
    from mt_unet.tasks import TASKS
    net, tasks = build("mtunet", shape + (1,), 3, base)
    return {"model": net}, {t: TASKS[t] for t in tasks}, net


def synthetic_batch(case, shape, batch, tasks):
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


def conv_layers(models):
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
    for layer, grad_x in conv_layers(models):
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
        seconds += median_time(lambda: float(tf.reduce_sum(step(x)[-1])), repeats)
    return {"seconds_per_step": seconds, "flops_per_step": flops}


TRAIN_MODES = ("fit", "custom", "custom+xla", "custom+mixed", "custom+xla+mixed")


def train_case(case: str, quick: bool, steps: int, repeats: int, mixed: bool = False, only=None,
               batch: int | None = None) -> dict:
    """Images/s of one model trained by model.fit, the custom loop and the custom loop + XLA;
    ``mixed``: also the custom loop with and without XLA under the mixed policy; ``only``: just
    these modes (for models whose steps take seconds); ``batch``: instead of the case's."""
    import keras
    import tensorflow as tf
    from ums_rep.precision import choose
    from ums_rep.engine import Engine
    from ums_rep.strategies import make_optimizer
    shape, batch, base = case_size(case, quick, batch)
    steps = steps if quick else min(steps, CASES[case].get("steps", steps))  # seconds-long steps: fewer per block
    gpu = bool(tf.config.list_physical_devices("GPU"))
    modes = ["fit", "custom", "custom+xla"] + (["custom+mixed", "custom+xla+mixed"] if mixed else
                                               ["custom+xla+mixed"] if gpu else [])
    modes = [m for m in modes if only is None or m in only]
    mixed_policy = choose("mixed")[0]
    out = {"case": case, "input": list(shape), "batch": batch, "base_filters": base, "steps_per_block": steps,
           "modes": {}, "mixed_policy": mixed_policy}
    for mode in modes:
        keras.backend.clear_session()
        keras.mixed_precision.set_global_policy(mixed_policy if mode.endswith("mixed") else "float32")
        keras.utils.set_random_seed(0)
        models, tasks, joint = case_models(case, shape, base)
        x, y = synthetic_batch(case, shape, batch, tasks)
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
        seconds = median_time(run, repeats, warmup=1)
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
    seconds = median_time(lambda: [None for _ in ds], repeats, warmup=1)
    return {"images": len(rows), "side": size, "images_per_s": len(rows) / seconds}


def rsna_sources(folder: Path, sizes, side: int) -> dict:
    """RSNA-layout phantom folders of each size in ``sizes`` (images), ``side``² 16-bit DICOMs
    written by the package's generator: the largest once, the others a class-stratified subset of
    it (every class from 3 images on, as ``prepare`` requires; the label tables cut to it, the
    DICOMs hard-linked, copied where links fail)."""
    import shutil

    import pandas as pd

    from data_prep.phantoms.layouts import generate
    largest = max(sizes)
    full = folder / f"rsna-n{largest}-px{side}"
    if not (full / "stage_2_detailed_class_info.csv").is_file():  # a kept --prepare-dir's are reused
        generate("rsna", full, n=largest, size=side, progress=False)
    out = {largest: full}
    labels = pd.read_csv(full / "stage_2_train_labels.csv")
    info = pd.read_csv(full / "stage_2_detailed_class_info.csv")
    # patients by their rank within their class over the class's size: any first n hold the classes'
    # mix, and the first 3 one patient of each class
    cls = info.drop_duplicates("patientId").set_index("patientId")["class"]
    pids = list(dict.fromkeys(labels.patientId))  # the generator's order
    seen, key = {}, {}
    for pid in pids:
        rank = seen[cls[pid]] = seen.get(cls[pid], -1) + 1
        key[pid] = (rank + 0.5) / int((cls.loc[pids] == cls[pid]).sum())
    order = sorted(pids, key=key.get)
    for n in sorted(set(sizes) - {largest}):
        sub = folder / f"rsna-n{n}-px{side}"
        shutil.rmtree(sub, ignore_errors=True)
        keep = set(order[:n])
        (sub / "stage_2_train_images").mkdir(parents=True)
        labels[labels.patientId.isin(keep)].to_csv(sub / "stage_2_train_labels.csv", index=False)
        info[info.patientId.isin(keep)].to_csv(sub / "stage_2_detailed_class_info.csv", index=False)
        for pid in keep:
            a, b = full / "stage_2_train_images" / f"{pid}.dcm", sub / "stage_2_train_images" / f"{pid}.dcm"
            try:
                os.link(a, b)
            except OSError:
                shutil.copy2(a, b)
        out[n] = sub
    return out


def prepare_run(src: Path, out: Path, workers: int, out_side: int) -> dict:
    """One timed :func:`data_prep.preparation.prepare` into the new folder ``out`` (run in a process
    of its own: its peak RSS, and its pool workers', are this run's)."""
    from data_prep.preparation import prepare
    t0 = time.perf_counter()
    manifest = prepare("rsna", src, out, size=(out_side, out_side), workers=workers, progress=False)
    seconds = time.perf_counter() - t0
    own = own_peak_rss_mib()
    # the pool's workers, joined by now: the largest one's ru_maxrss (0 when prepare ran in-process;
    # a spawned worker's starts at this process's RSS when it was started, no more than ``own``)
    pool = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    info = json.loads((out / "prepare.json").read_text())
    return {"images": len(manifest), "workers": workers, "pool": pool > 0, "seconds": seconds,
            "image_seconds": info["seconds"], "images_per_s": len(manifest) / seconds,
            "peak_rss_mib": max(own, pool), "peak_rss_main_mib": own, "peak_rss_worker_mib": pool,
            "images_written": len(list((out / "images").glob("*.png"))), "manifest_rows": len(manifest)}


def line_fit(xs, ys) -> dict:
    """Least-squares line ``y = intercept + slope·x`` and the line through the origin, each with
    the largest relative deviation of a point from it (|y − line| / y)."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx else 0.0
    intercept = my - slope * mx
    origin = sum(x * y for x, y in zip(xs, ys)) / sum(x * x for x in xs)
    return {"slope": slope, "intercept": intercept,
            "max_dev_fit": max(abs(y - intercept - slope * x) / y for x, y in zip(xs, ys)),
            "slope_origin": origin, "max_dev_origin": max(abs(y - origin * x) / y for x, y in zip(xs, ys))}


def prepare_case(sizes, side: int, out_side: int, workers, folder: Path, repeats: int = 1) -> dict:
    """Phantoms of each size written once (not timed), then each (size, workers) prepared in its own
    subprocess ``repeats`` times, the rounds interleaved (so a noisy minute hits every setting
    alike), the run of median seconds kept: images/s, peak RSS, speed-up over one worker, time vs
    size, RSS spread."""
    import shutil

    import pydicom
    t0 = time.perf_counter()
    sources = rsna_sources(folder, sizes, side)
    generate_s = time.perf_counter() - t0
    headers = [pydicom.dcmread(f, stop_before_pixels=True)
               for f in sorted((sources[max(sizes)] / "stage_2_train_images").glob("*.dcm"))]
    out = {"input": sorted({(int(d.Rows), int(d.Columns)) for d in headers})[0],
           "bits_allocated": sorted({int(d.BitsAllocated) for d in headers}),
           "bits_stored": sorted({int(d.BitsStored) for d in headers}), "output_side": out_side,
           "sizes": list(sizes), "workers": list(workers), "generate_seconds": generate_s,
           "rss": "max of the prepare process's peak RSS (VmHWM) and its largest pool worker's "
                  "(getrusage RUSAGE_CHILDREN ru_maxrss): one process, not their sum",
           "runs": []}
    timed = {}
    for _ in range(repeats):
        for n in sizes:
            for w in workers:
                dest = folder / f"prepared-n{n}-w{w}"
                if dest.exists():  # prepare skips finished images: every timed run starts empty
                    shutil.rmtree(dest)
                cmd = [sys.executable, "-m", "benchmarks.run", "--prepare-run", str(sources[n]), str(dest), str(w),
                       str(out_side)]
                r = child_result(cmd, f"prepare n={n} workers={w}")
                timed.setdefault((n, w), []).append({**r, "out": str(dest)})
                log.info("prepare %d images, %d worker(s): %.1f images/s, %.2f s, peak RSS %.0f MiB", n, w,
                         r["images_per_s"], r["seconds"], r["peak_rss_mib"])
    for (n, w), rs in timed.items():
        median = sorted(rs, key=lambda r: r["seconds"])[(len(rs) - 1) // 2]
        out["runs"].append({**median, "seconds_all": [r["seconds"] for r in rs]})
    runs = {(r["images"], r["workers"]): r for r in out["runs"]}
    lo, hi = min(workers), max(workers)
    out["speedup"] = [{"images": n, "workers": hi, "over_workers": lo,
                       "x": runs[n, hi]["images_per_s"] / runs[n, lo]["images_per_s"]} for n in sizes]
    out["fits"] = []
    for w in workers:
        times = [runs[n, w]["seconds"] for n in sizes]
        rss = [runs[n, w]["peak_rss_mib"] for n in sizes]
        out["fits"].append({"workers": w, **line_fit(list(sizes), times), "rss_spread": max(rss) / min(rss) - 1})
    return out


def prepare_table(p: dict) -> list:
    """The prepare case's lines of the markdown report."""
    from ums_rep.reporting import markdown_table
    bits = lambda v: "/".join(map(str, v))  # noqa: E731
    lines = ["", f"Prepare (`data_prep.prepare rsna`): {p['input'][0]}×{p['input'][1]} DICOMs "
             f"({bits(p['bits_allocated'])} bits allocated, {bits(p['bits_stored'])} stored) → "
             f"{p['output_side']}² PNGs; "
             f"phantoms written in {p['generate_seconds']:.0f} s, not timed. Seconds: the whole `prepare` call "
             "(reading the tables, the split, the images, the statistics, the manifest), the median run of "
             f"{len(p['runs'][0].get('seconds_all', [0]))} (all runs' seconds beside it); image phase: the images alone "
             f"(a pool starts while the split runs). Peak RSS: {p['rss']}.", ""]
    lines += markdown_table(
        ["images", "workers", "pool", "seconds (image phase)", "all runs, s", "images/s", "peak RSS MiB (main, worker)"],
        [[r["images"], r["workers"], "yes" if r["pool"] else "no", f"{r['seconds']:.2f} ({r['image_seconds']:.2f})",
          ", ".join(f"{x:.2f}" for x in r.get("seconds_all", [r["seconds"]])), f"{r['images_per_s']:.1f}",
          f"{r['peak_rss_mib']:.0f} ({r['peak_rss_main_mib']:.0f}, {r['peak_rss_worker_mib']:.0f})"]
         for r in p["runs"]])
    lines += [""] + markdown_table(["images", "speed-up: most workers / fewest"],
                                   [[s["images"], f"{s['workers']} / {s['over_workers']}: **{s['x']:.2f}×**"]
                                    for s in p["speedup"]])
    lines += [""] + markdown_table(
        ["workers", "fitted line: s/image, intercept s, largest deviation", "through the origin: s/image, largest deviation",
         "peak RSS spread (max/min − 1)"],
        [[f["workers"], f"{f['slope'] * 1e3:.1f} ms, {f['intercept']:.2f} s, {f['max_dev_fit']:.1%}",
          f"{f['slope_origin'] * 1e3:.1f} ms, {f['max_dev_origin']:.1%}", f"{f['rss_spread']:.1%}"] for f in p["fits"]])
    return lines


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
    shared_s = median_time(lambda: shared.predict_on_batch(x), repeats, warmup=2)
    separate_s = median_time(lambda: [m.predict_on_batch(x) for m in separate], repeats, warmup=2)
    return {"set": set_name, "side": size, "shared_ms": shared_s * 1e3, "separate_ms": separate_s * 1e3,
            "ratio": shared_s / separate_s}


def _primary(task_result: dict) -> float | None:
    m = task_result.get("metrics", {})
    return m.get("iou", m.get("accuracy"))


def _paper_ratio(set_name: str) -> str:
    """The paper's shared / baseline totals (Tables 4, 6, 8, 10; ums_rep.paper_results.PAPER)."""
    from ums_rep.paper_results import PAPER
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


def speed_ratio(modes: dict, a: str, b: str) -> str:
    """Mode ``a``'s images/s over mode ``b``'s, where both were timed (``--modes`` may leave some out)."""
    return f"{modes[a]['images_per_s'] / modes[b]['images_per_s']:.2f}" if a in modes and b in modes else ""


def rate(images_per_s: float) -> str:
    """Images/s with two decimals under 10 (the paper-width models train at 0.4-2 images/s)."""
    return f"{images_per_s:.1f}" if images_per_s >= 10 else f"{images_per_s:.2f}"


def markdown(report: dict) -> str:
    from ums_rep.reporting import markdown_table
    head = (f"Machine: {report['machine']['processor']}, {report['machine']['cpus']} CPUs, "
            f"GPUs {report['machine']['gpus'] or 'none'}; TensorFlow {report['machine']['tensorflow']}; "
            f"{'quick' if report['quick'] else 'full'} run.")
    if "training" not in report:  # --cases prepare alone
        return "\n".join([head] + prepare_table(report["prepare"])) + "\n"
    mm = report["matmul_gflops"]
    lines = [f"{head} Dense matmul: **{mm:.0f} GFLOP/s**.", ""]
    rows = []
    for t in report["training"]:
        for mode, r in t["modes"].items():
            gflops = t["flops_per_step"] / r["step_s"] / 1e9
            rows.append([t["case"], f"{t['input'][0]}×{t['input'][1]} × {t['batch']}", f"{t['flops_per_step'] / 1e9:.1f}",
                         mode, rate(r["images_per_s"]), f"{gflops:.0f}", f"{gflops / mm:.2f}", f"{t['peak_rss_mib']:.0f}"])
    lines += markdown_table(["model", "input × batch", "GFLOP/step (counted)", "mode", "images/s", "GFLOP/s", "of matmul",
                             "peak RSS MiB"], rows)

    rows = []
    for t in report["training"]:
        m, cc = t["modes"], t["conv_ceiling"]
        fastest = min(r["step_s"] for r in m.values())
        conv = cc["flops_per_step"] / cc["seconds_per_step"] / 1e9
        rows.append([t["case"], speed_ratio(m, "custom", "fit"), speed_ratio(m, "custom+xla", "custom"),
                     f"{t['flops_per_step'] / fastest / 1e9 / mm:.2f}", f"{conv:.0f}, {conv / mm:.2f}",
                     f"{cc['seconds_per_step'] / fastest:.2f}"])
    lines += [""] + markdown_table(["model", "custom loop / model.fit", "XLA / custom loop", "best mode of matmul",
                                    "its convolutions alone: GFLOP/s, of matmul", "convolution time / best step time"],
                                   rows)
    lines += mixed_table(report)
    ip = report["input_pipeline"]
    ratio = report["input_vs_training"]
    lines += ["", f"Input pipeline: {ip['images_per_s']:.0f} images/s decoding {ip['side']}² PNGs"
              + (f" = **{ratio:.1f}×** the CDAE's custom-loop training rate." if ratio else "."), ""]
    lines += markdown_table(["task set", "shared forward ms", "separate models ms", "ratio"],
                            [[r["set"], f"{r['shared_ms']:.1f}", f"{r['separate_ms']:.1f}", f"{r['ratio']:.2f}"]
                             for r in report["latency"]])
    if report.get("compute_saving"):
        lines += [""] + markdown_table(
            ["task set", "best shared", "time: shared / baseline", "params: shared / baseline", "paper"],
            [[r["set"], r["best_shared"],
              f"{r['shared_seconds']:.0f} s / {r['baseline_seconds']:.0f} s = **{r['time_ratio']:.2f}**",
              f"{r['shared_params']:,} / {r['baseline_params']:,} = **{r['param_ratio']:.2f}**", r["paper"]]
             for r in report["compute_saving"]])
    if report.get("prepare"):
        lines += prepare_table(report["prepare"])
    return "\n".join(lines) + "\n"


def mixed_table(report: dict) -> list:
    """``--mixed``: each case's mixed modes over float32 in the same run, and the fraction of the
    matmul rate each reaches, of its own 16-bit type and of float32 (no lines without mixed modes)."""
    from ums_rep.reporting import markdown_table
    mm, mm16 = report["matmul_gflops"], report.get("matmul_gflops_mixed")
    cases = [t for t in report["training"] if "custom+mixed" in t["modes"]]
    if not cases:
        return []
    rows = []
    for t in cases:
        for mode in ("custom+mixed", "custom+xla+mixed"):
            over_float32 = speed_ratio(t["modes"], mode, mode.replace("+mixed", ""))
            if not over_float32:
                continue
            r = t["modes"][mode]
            gflops = t["flops_per_step"] / r["step_s"] / 1e9
            rows.append([t["case"], mode, rate(r["images_per_s"]), f"**{over_float32}×**",
                         f"{gflops / mm16:.2f}" if mm16 else "", f"{gflops / mm:.2f}"])
    return ["", f"Mixed precision ({report.get('mixed_policy', cases[0].get('mixed_policy'))}; its matmul: "
            + (f"**{mm16:.0f} GFLOP/s**" if mm16 else "not measured") + ")", ""] + markdown_table(
        ["model", "mode", "images/s", "over float32, same loop", "of its matmul", "of float32 matmul"], rows)


def case_batch_arg(text: str) -> tuple:
    """``CASE=N`` of ``--batch``."""
    case, _, n = text.partition("=")
    if case not in CASES or not n.isdigit() or int(n) < 1:
        raise argparse.ArgumentTypeError(f"expected CASE=N with CASE one of {sorted(CASES)}, got {text!r}")
    return case, int(n)


def build_parser() -> argparse.ArgumentParser:
    from data_prep.cli import describe
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=describe(__doc__))
    add_common_options(parser, extra_cases=("prepare",))
    parser.add_argument("--prepare-sizes", nargs=3, type=int, default=None, metavar="N",
                        help="prepare: the three dataset sizes in images (default %s; %s with --quick)"
                             % ("/".join(map(str, PREPARE["sizes"])), "/".join(map(str, PREPARE["quick"][0]))))
    parser.add_argument("--prepare-side", type=int, default=None, metavar="PX",
                        help="prepare: side of the phantom DICOMs (default %d, RSNA's; %d with --quick)"
                             % (PREPARE["side"], PREPARE["quick"][1]))
    parser.add_argument("--prepare-workers", nargs="+", type=int, default=None, metavar="W",
                        help="prepare: worker counts to time, each at every size (default: 1 and all cores)")
    parser.add_argument("--prepare-dir", type=Path, default=None, metavar="DIR",
                        help="prepare: write the phantoms and prepared folders here and keep them "
                             "(default: a temporary folder, removed after the run)")
    parser.add_argument("--prepare-run", nargs=4, default=None, help=argparse.SUPPRESS)  # internal: one timed run
    parser.add_argument("--modes", nargs="+", choices=TRAIN_MODES, default=None, metavar="MODE",
                        help="time only these training modes (default: every mode; choices %s)" % ", ".join(TRAIN_MODES))
    parser.add_argument("--batch", nargs="+", type=case_batch_arg, default=[], metavar="CASE=N",
                        help="a training case's batch instead of its default, e.g. mtunet-paper=4")
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
        print(BENCH + json.dumps(train_case(args.case, args.quick, steps, repeats, args.mixed, args.modes,
                                            dict(args.batch).get(args.case))))
        return 0
    if args.prepare_run:  # child process: one timed prepare
        src, dest, workers, side = args.prepare_run
        print(BENCH + json.dumps(prepare_run(Path(src), Path(dest), int(workers), int(side))))
        return 0
    from ums_rep.runs import versions
    report = {"quick": args.quick, "repeats": repeats, "steps_per_block": steps, "machine": versions()}
    if "prepare" in args.cases:
        sizes, side = PREPARE["quick"] if args.quick else (PREPARE["sizes"], PREPARE["side"])
        sizes, side = tuple(args.prepare_sizes or sizes), args.prepare_side or side
        workers = tuple(args.prepare_workers or sorted({1, os.cpu_count() or 1}))
        with contextlib.ExitStack() as stack:
            folder = args.prepare_dir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ums_prepare_")))
            folder.mkdir(parents=True, exist_ok=True)
            report["prepare"] = prepare_case(sizes, side, PREPARE["out_side"], workers, folder, repeats)
        if args.prepare_dir is None:
            for r in report["prepare"]["runs"]:
                r.pop("out")  # removed with the temporary folder
        if args.cases == ["prepare"]:
            text = markdown(report)
            write_report(report, text, args.out, args.markdown)
            print(text)
            return 0
    report["matmul_gflops"] = matmul_gflops(1024 if args.quick else 2048, repeats)
    log.info("matmul: %.0f GFLOP/s", report["matmul_gflops"])
    if args.mixed:
        from ums_rep.precision import choose
        report["mixed_policy"] = choose("mixed")[0]
        report["matmul_gflops_mixed"] = matmul_gflops(1024 if args.quick else 2048, repeats,
                                                      report["mixed_policy"].split("_")[1])
        log.info("matmul %s: %.0f GFLOP/s", report["mixed_policy"], report["matmul_gflops_mixed"])
    report["training"] = []
    for case in (c for c in args.cases if c != "prepare"):
        cmd = [sys.executable, "-m", "benchmarks.run", "--case", case, "--repeats", str(repeats)] + \
              (["--quick"] if args.quick else []) + (["--mixed"] if args.mixed else []) + \
              (["--modes", *args.modes] if args.modes else []) + \
              (["--batch", *(f"{c}={n}" for c, n in args.batch)] if args.batch else [])
        report["training"].append(child_result(cmd, case, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}))
        log.info("%s: %s", case, {m: round(r["images_per_s"], 1) for m, r in report["training"][-1]["modes"].items()})
    report["input_pipeline"] = input_pipeline(args.quick, repeats)
    cdae = next((t for t in report["training"] if t["case"] == "cdae"), {"modes": {}})
    custom = cdae["modes"].get("custom")  # None without the cdae case, or where --modes left the custom loop out
    report["input_vs_training"] = report["input_pipeline"]["images_per_s"] / custom["images_per_s"] if custom else None
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
