"""``python -m benchmarks.keras_jax [--quick] [--out FILE.json] [--markdown FILE.md]``: the
benchmark models of :mod:`benchmarks.run`, built by the package's own builders, trained by Keras 3
on its JAX backend — GPU figures where TensorFlow cannot be installed.

Why a second harness: the GPU machines lent to this project have CUDA 13, PyTorch and JAX but no
TensorFlow and no package index; TensorFlow's GPU build and the CUDA 12 libraries it links are
gigabytes, far over what can be carried there. Keras 3 runs the same Functional models on JAX
(``ums_rep.layers.BatchNorm`` falls back to Keras' own batch norm there), so the models' speed on
a GPU can still be measured. The package's training loops (:class:`ums_rep.engine.Engine`)
are TensorFlow code and are not what is timed here; the two modes are

* **fit** — Keras ``model.fit`` on in-memory arrays (its JAX trainer jit-compiles the step);
* **jit step** — one ``jax.jit``-compiled step (``stateless_call`` + ``value_and_grad`` +
  ``optimizer.stateless_apply``, the pattern of Keras' "training loop from scratch in JAX"
  guide) on a batch already on the device, with the state's buffers donated: what a custom
  XLA-compiled loop reaches.

Each runs in float32 and with the ``mixed_bfloat16`` policy (bfloat16 compute, float32
variables; no loss scaling needed). FLOPs per step are counted by XLA's cost analysis of the
step compiled for the CPU; efficiency is that × steps/s ÷ a dense ``jnp.matmul`` measured in the same run at
the same precision (float32 under JAX's default precision, which lets both the matmul and the
convolutions use TF32 tensor cores on NVIDIA GPUs; and bfloat16). Every figure is the median of
``--repeats`` timed blocks after a warm-up block; each case runs in its own subprocess, so its
peak RSS and peak device memory are its own.
"""
from __future__ import annotations

import os

os.environ["KERAS_BACKEND"] = "jax"  # this harness is the JAX backend, whatever the shell exports
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # peak memory = what the case used

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402

from benchmarks.run import (BENCH, add_common_options, case_models, case_size, child_result, median_time,  # noqa: E402
                            synthetic_batch, write_report)

log = logging.getLogger("benchmarks.keras_jax")
POLICIES = ("float32", "mixed_bfloat16")
# the issue's batch, and a larger one that fills a GPU (a 256² CDAE step at batch 16 is ~1 ms there)
LARGE_BATCH = {"cdae": 128, "echo": 128, "mtunet-quick": 64, "mtunet-paper": 16}


def matmul_tflops(dtype: str, n: int, repeats: int) -> float:
    import jax
    import jax.numpy as jnp
    a = jax.random.normal(jax.random.key(0), (n, n), dtype)
    b = jax.random.normal(jax.random.key(1), (n, n), dtype)
    f = jax.jit(lambda a, b: jnp.matmul(a, b))
    return 2 * n ** 3 / median_time(lambda: f(a, b).block_until_ready(), repeats, warmup=2) / 1e12


def _loss(tasks):
    """Sum over tasks of the batch-mean task loss (the joint objective with unit weights)."""
    from keras import ops

    def loss(y, y_pred):
        if not isinstance(y_pred, dict):
            y_pred = {next(iter(tasks)): y_pred}
        return sum(ops.mean(t.loss(y[n], y_pred[n])) for n, t in tasks.items())
    return loss


def _jit_step(model, tasks, optimizer):
    """A compiled training step over (trainable, non-trainable, optimizer) state."""
    import jax
    loss_fn = _loss(tasks)

    def compute(trainable, non_trainable, x, y):
        y_pred, non_trainable = model.stateless_call(trainable, non_trainable, x, training=True)
        return loss_fn(y, y_pred), non_trainable

    grad = jax.value_and_grad(compute, has_aux=True)

    def step(state, x, y):
        trainable, non_trainable, opt_vars = state
        (loss, non_trainable), grads = grad(trainable, non_trainable, x, y)
        trainable, opt_vars = optimizer.stateless_apply(opt_vars, grads, trainable)
        return loss, (trainable, non_trainable, opt_vars)

    return jax.jit(step, donate_argnums=0)


def _flops(step, *args) -> float:
    """XLA's FLOP count of the step compiled for the CPU. Compiled for a GPU, the convolutions are
    cuDNN custom calls that XLA's cost analysis counts as zero FLOPs (and JAX gives no analysis of
    the un-compiled module there); the count does not depend on the device."""
    import jax
    cpu = jax.devices("cpu")[0]
    cost = step.lower(*jax.device_put(args, cpu)).compile().cost_analysis()
    if isinstance(cost, (list, tuple)):  # older JAX: one dict per device
        cost = cost[0]
    return float(cost["flops"])


def peak_memory() -> dict:
    import jax
    out = {"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    stats = jax.devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        out["peak_device_mib"] = stats["peak_bytes_in_use"] / 2 ** 20
    return out


def train_case(case: str, batch: int, quick: bool, steps: int, repeats: int, policies=POLICIES) -> dict:
    """Images/s of one model at one batch size: fit and the jit step, in each dtype policy."""
    import jax
    import keras
    shape, _, base = case_size(case, quick)  # the batch is this run's own
    out = {"case": case, "input": list(shape), "batch": batch, "base_filters": base, "steps_per_block": steps,
           "device": str(jax.devices()[0].device_kind), "modes": {}}
    for policy in policies:
        for mode in ("fit", "jit step"):
            keras.backend.clear_session()
            keras.mixed_precision.set_global_policy(policy)
            keras.utils.set_random_seed(0)
            models, tasks, joint = case_models(case, shape, base)
            model = joint if joint is not None else next(iter(models.values()))
            optimizer = type(keras.optimizers.get(next(iter(tasks.values())).optimizer))(learning_rate=1e-4)
            out.setdefault("params", int(model.count_params()))
            x, targets = synthetic_batch(case, shape, batch, tasks)
            y = {n: targets[t.target] for n, t in tasks.items()}
            if mode == "fit":
                xs = x.repeat(steps, axis=0)
                ys = {n: v.repeat(steps, axis=0) for n, v in y.items()}
                if len(tasks) == 1:
                    ys = next(iter(ys.values()))
                    loss = next(iter(tasks.values())).loss
                else:
                    loss = {n: t.loss for n, t in tasks.items()}
                model.compile(optimizer=optimizer, loss=loss)
                run = lambda: model.fit(xs, ys, batch_size=batch, epochs=1, verbose=0, shuffle=False)  # noqa: E731
            else:
                optimizer.build(model.trainable_variables)
                step = _jit_step(model, tasks, optimizer)
                xd, yd = jax.device_put(x), jax.device_put(y)
                state = [([v.value for v in model.trainable_variables],
                          [v.value for v in model.non_trainable_variables],
                          [v.value for v in optimizer.variables])]
                out["flops_per_step"] = out.get("flops_per_step") or _flops(step, state[0], x, y)

                def run(state=state, step=step, xd=xd, yd=yd):
                    for _ in range(steps):
                        loss, state[0] = step(state[0], xd, yd)
                    loss.block_until_ready()
            seconds = median_time(run, repeats, warmup=1)
            out["modes"][f"{mode}, {policy}"] = {"images_per_s": batch * steps / seconds, "step_s": seconds / steps}
            log.info("%s b%d %s %s: %.1f images/s", case, batch, mode, policy, batch * steps / seconds)
    keras.mixed_precision.set_global_policy("float32")
    out.update(peak_memory())
    return out


def markdown(report: dict) -> str:
    # joined by hand, not by ums_rep.reporting.markdown_table: this harness runs on accelerator machines
    # that have JAX but neither pandas nor tabulate
    mm = report["matmul_tflops"]
    lines = [f"Device: {report['device']}; JAX {report['jax']}, Keras {report['keras']}; "
             f"{'quick' if report['quick'] else 'full'} run. Dense matmul: **{mm['float32']:.0f} TFLOP/s** float32 "
             f"(default precision: TF32 on NVIDIA), **{mm['bfloat16']:.0f} TFLOP/s** bfloat16.", "",
             "| model | input × batch | GFLOP/step (XLA count) | mode | policy | images/s | TFLOP/s | of matmul "
             "| peak device MiB |", "|---|---|---|---|---|---|---|---|---|"]
    for t in report["training"]:
        for key, r in t["modes"].items():
            mode, policy = key.split(", ")
            tflops = t["flops_per_step"] / r["step_s"] / 1e12
            ref = mm["bfloat16" if "bfloat16" in policy else "float32"]
            memory = f"{t['peak_device_mib']:.0f}" if "peak_device_mib" in t else "–"  # none on CPU
            lines.append(f"| {t['case']} | {t['input'][0]}×{t['input'][1]} × {t['batch']} | "
                         f"{t['flops_per_step'] / 1e9:.1f} | {mode} | {policy} | {r['images_per_s']:.0f} | "
                         f"{tflops:.1f} | {tflops / ref:.3f} | {memory} |")
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    from data_prep.cli import describe
    parser = argparse.ArgumentParser(prog="python -m benchmarks.keras_jax", description=describe(__doc__))
    add_common_options(parser)
    parser.add_argument("--steps", type=int, default=None, metavar="N",
                        help="training steps per timed block (default 20; 2 with --quick)")
    parser.add_argument("--batches", choices=("issue", "large", "both"), default="both",
                        help="the issue's batch sizes, larger ones that fill a GPU, or both")
    parser.add_argument("--policies", nargs="+", choices=POLICIES, default=list(POLICIES),
                        help="Keras dtype policies to time")
    parser.add_argument("--batch", type=int, default=None, help=argparse.SUPPRESS)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    repeats = args.repeats or (2 if args.quick else 5)
    steps = args.steps or (2 if args.quick else 20)
    if args.case:  # child process: one model at one batch size
        print(BENCH + json.dumps(train_case(args.case, args.batch, args.quick, steps, repeats, args.policies)))
        return 0
    import jax
    import keras
    report = {"quick": args.quick, "repeats": repeats, "steps_per_block": steps, "device": jax.devices()[0].device_kind,
              "jax": jax.__version__, "keras": keras.__version__,
              "matmul_tflops": {d: matmul_tflops(d, 1024 if args.quick else 8192, repeats)
                                for d in ("float32", "bfloat16")},
              "training": []}
    log.info("matmul: %s TFLOP/s", {d: round(v, 1) for d, v in report["matmul_tflops"].items()})
    for case in args.cases:
        issue_batch = case_size(case, args.quick)[1]
        batches = {"issue": [issue_batch], "large": [LARGE_BATCH[case]],
                   "both": [issue_batch, LARGE_BATCH[case]]}[args.batches]
        for batch in (batches[:1] if args.quick else batches):
            cmd = [sys.executable, "-m", "benchmarks.keras_jax", "--case", case, "--batch", str(batch),
                   "--repeats", str(repeats), "--steps", str(steps), "--policies", *args.policies] + \
                  (["--quick"] if args.quick else [])
            report["training"].append(child_result(cmd, f"{case} at batch {batch}"))
            log.info("%s b%d: %s", case, batch,
                     {m: round(r["images_per_s"], 1) for m, r in report["training"][-1]["modes"].items()})
            write_report(report, "", args.out, None)  # what is measured so far survives a stopped run
    text = markdown(report)
    write_report(report, text, args.out, args.markdown)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
