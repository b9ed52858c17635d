"""Numeric precision of training: ``--precision {auto,float32,mixed}`` (issue 19).

:func:`set_precision` sets Keras' global dtype policy and returns the policy it applied; call it
*before* building models (a layer takes the policy in force when it is created).

* ``float32`` — everything in float32, the default of every command (the documented figures are
  float32; mixed matched them on the quick presets, and is slower for the small
  widths of the quick presets' saliency models on a CPU: "Mixed precision: accuracy parity" in ``docs/gpu.md``);
* ``mixed`` — float32 variables, computations in a 16-bit type:

  - ``mixed_bfloat16`` on CPUs with native bfloat16 (``/proc/cpuinfo`` flags ``avx512_bf16`` or
    ``amx_bf16``) and on GPUs of compute capability ≥ 8.0 (Ampere and later);
  - ``mixed_float16`` on older GPUs, with loss scaling: :func:`loss_scaled` wraps optimizers in
    ``keras.optimizers.LossScaleOptimizer`` (the custom loop's steps, :mod:`ums_rep.engine`, do
    so, and scale their losses with ``optimizer.scale_loss``);
  - on a CPU without native bfloat16, ``mixed`` still applies ``mixed_bfloat16`` (emulated, slow;
    logged as a warning) so that its numerics can be checked anywhere;
* ``auto`` — ``mixed`` where the hardware computes 16-bit types natively (bfloat16 CPUs, GPUs
  of compute capability ≥ 7.0), ``float32`` elsewhere.

What must stay float32 does: the package's output layers (heads, the CDAE's reconstruction)
are built with ``dtype="float32"``, losses cast predictions to float32, and the σ of the
uncertainty weighting are float32 variables. Variables are float32 under every policy, so
checkpoints load in either precision; :func:`follow_policy` rebuilds a ``.keras`` model saved
under a mixed policy to the policy in force (``ums_rep.runs.load_model`` applies it), so a model
saved under ``mixed_bfloat16`` predicts in float32 under ``float32``. A model saved under
``float32`` keeps float32 layers when loaded under a mixed policy (its saved layers do not say
which of them must stay float32): correct, but not faster.
"""
from __future__ import annotations

import logging
from pathlib import Path

import keras

log = logging.getLogger(__name__)

MODES = ("auto", "float32", "mixed")
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_bf16(cpuinfo: str | Path = "/proc/cpuinfo") -> bool:
    """Whether the CPU computes bfloat16 natively (AVX512-BF16 or AMX-BF16 in ``cpuinfo``'s flags)."""
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return False
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags") and ":" in line:
            flags.update(line.split(":", 1)[1].split())
    return any(f in flags for f in CPU_BF16_FLAGS)


def gpu_capability() -> tuple | None:
    """Compute capability ``(major, minor)`` of the first visible GPU; ``None`` without a GPU."""
    import tensorflow as tf
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return None
    details = tf.config.experimental.get_device_details(gpus[0])
    return tuple(details.get("compute_capability") or (0, 0))


def choose(mode: str) -> tuple[str, str]:
    """``(policy, reason)`` for ``mode`` on this machine's hardware (nothing is set)."""
    if mode not in MODES:
        raise ValueError(f"unknown precision {mode!r}; expected one of {MODES}")
    if mode == "float32":
        return "float32", "requested"
    cc = gpu_capability()
    if cc is not None:
        if cc >= (8, 0):
            return "mixed_bfloat16", f"GPU compute capability {cc[0]}.{cc[1]} has bfloat16 tensor cores"
        if mode == "mixed" or cc >= (7, 0):
            return "mixed_float16", f"GPU compute capability {cc[0]}.{cc[1]}: float16 with loss scaling"
        return "float32", f"GPU compute capability {cc[0]}.{cc[1]} has no 16-bit tensor cores"
    if cpu_bf16():
        return "mixed_bfloat16", "CPU has native bfloat16 (" + "/".join(CPU_BF16_FLAGS) + ")"
    if mode == "mixed":
        return "mixed_bfloat16", "requested, but this CPU has no native bfloat16: emulated, slower than float32"
    return "float32", "no native bfloat16 on this CPU and no GPU"


def set_precision(mode: str = "float32") -> str:
    """Set Keras' global dtype policy for ``mode`` (:data:`MODES`) and return its name
    (``float32``, ``mixed_bfloat16`` or ``mixed_float16``). Call before models are built."""
    policy, reason = choose(mode)
    keras.mixed_precision.set_global_policy(policy)
    (log.warning if "slower" in reason else log.info)("precision %s: %s (%s)", mode, policy, reason)
    return policy


def clear_session() -> None:
    """``keras.backend.clear_session()`` keeping the dtype policy in force (Keras' own resets the
    global policy to float32, which silently turned a multi-seed command's ``--precision mixed`` into float32)."""
    policy = current()
    keras.backend.clear_session()
    keras.mixed_precision.set_global_policy(policy)


def current() -> str:
    """The name of the global dtype policy in force."""
    return keras.mixed_precision.global_policy().name


def loss_scaled(optimizer):
    """``optimizer`` wrapped in ``keras.optimizers.LossScaleOptimizer`` when the global policy
    is ``mixed_float16`` (float16 gradients underflow without loss scaling); else unchanged."""
    if current() != "mixed_float16" or isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        return optimizer
    return keras.optimizers.LossScaleOptimizer(optimizer)


def _retarget(obj, policy: str):
    """A copy of a layer config tree with every ``mixed_*`` dtype policy replaced by ``policy``."""
    if isinstance(obj, dict):
        if obj.get("class_name") == "DTypePolicy" and str(obj.get("config", {}).get("name", "")).startswith("mixed_"):
            return {**obj, "config": {**obj["config"], "name": policy}}
        return {k: _retarget(v, policy) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_retarget(v, policy) for v in obj]
    return obj  # (a bare string may be a layer name: Keras' InceptionResNetV2 has "mixed_5b")


def follow_policy(model: keras.Model, policy: str | None = None) -> keras.Model:
    """``model`` with its mixed-precision layers set to ``policy`` (default: the global policy),
    weights copied: a model built or saved under ``mixed_bfloat16`` computes in float32 under
    ``float32``. A model without mixed layers, or already under ``policy``, is returned as is."""
    policy = policy or current()
    mixed = {layer.dtype_policy.name for layer in model._flatten_layers(include_self=False)
             if layer.dtype_policy.name.startswith("mixed_")}
    if not mixed or mixed == {policy}:
        return model
    clone = model.__class__.from_config(_retarget(model.get_config(), policy))
    clone.set_weights(model.get_weights())
    log.info("%s: layers saved under %s rebuilt under %s", model.name, "/".join(sorted(mixed)), policy)
    return clone
