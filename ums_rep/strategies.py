"""Fine-tuning strategies as custom training loops (UMS-Rep Sections 2.3 and 3.2.3), run under
the active ``tf.distribute`` strategy so one code path serves one CPU, one GPU or several
devices.

All strategies share one engine, :func:`fit`, and differ only in which variables each update
touches and in the order of task batches:

* ``joint`` — every step takes one batch of each task due in it and minimises ``Σ w_i L_i``
  (a weighting rule from :mod:`ums_rep.weighting`) over the whole network;
* ``alternating`` — ``n_i`` batches of task i, then ``n_j`` of task j, …; each update trains the
  shared encoder and head i;
* ``independent`` — the encoder is frozen (its layers' ``trainable = False``, so batch norm runs
  in inference mode); each head is trained on its own task.

* ``baseline`` — no shared encoder: one model per task from random weights, each a ``joint``
  fit of its one task (UMS-Rep's comparison, Tables 4, 6, 8, 10).

Each strategy is one :class:`Strategy` entry of :data:`REGISTRY`, which declares all that makes it
what it is (shared or separate models, frozen encoder, the batch order, one optimizer or one per
task, one plateau rule or one per task); :func:`fit` and :mod:`ums_rep.experiment` read nothing
else. A new strategy is a new entry (and a test).

A comparison of strategies must differ in the strategy alone (UMS-Rep Section 4: the strategies
are compared at equal data and budget). With ``FitConfig.shared_optimizer`` set (what
``ums_rep.finetune`` does), every task's head is trained by its task's own optimizer (kind and
learning rate) and the shared variables by that one optimizer, under every strategy and the
baseline (:func:`variable_groups`, :func:`default_optimizers`); and every task trains on as many
of its own batches per epoch under every strategy (``steps_per_epoch[task]``: a joint epoch runs
``max(steps)`` steps and puts each task in ``steps[task]`` of them, :func:`joint_schedule`).
:func:`fit` returns both (``optimizers``, ``updates``) for ``results.json``.

Where every task labels the *same* images (e.g. one chest X-ray, its saliency map and its class),
``joint_model`` — one model with a dict of outputs keyed by task — replaces the per-task models
in the joint step: one forward pass per batch feeds every task's loss, and the training and
validation data are single datasets whose targets hold every task's target.

Learning-rate schedules (Section 4.1.1: reduce on plateau, early stopping). Every optimizer keeps
its own learning rate: a plateau cut multiplies each optimizer's rate by the factor, so an SGD
head at 1e-2 and an Adam head at 1e-3 go to 1e-3 and 1e-4. In ``independent`` mode each task
also has its own plateau / early-stopping / best-epoch rule on its own validation loss (a task
that stops no longer trains while the others go on, and gets its best epoch back); ``joint``
and ``alternating`` keep one rule on the unweighted sum of the tasks' validation losses
(``FitConfig.monitor="sum"``), or on the weighting rule applied to them (``"weighted"``: the loss
the joint step minimises, σ terms included; as another paper's authors' public code does). A rule that
resets to its best epoch restores that epoch's weights and weighting variables (σ), and with
``FitConfig.reset_optimizer`` its optimizers' state too (moments and iteration count; the
learning rate is the cut's).

Per-example losses are averaged over the *global* batch (``tf.nn.compute_average_loss``) and
gradients summed across replicas, so a step on two devices equals the step on one. Training
datasets must repeat and drop remainders; validation datasets are finite.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from data_prep.io import atomic_write_bytes, atomic_write_text
from ums_rep.precision import loss_scaled
from ums_rep.schedule import PlateauSchedule
from ums_rep.weighting import FixedWeights

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class Strategy:
    """What one fine-tuning strategy declares (UMS-Rep Section 3.2.3).

    ``shared``: heads on one copy of the pretrained encoder (False: one model per task from
    random weights); ``freeze_encoder``: the shared encoder's layers are not trained; ``order``:
    "joint" (every step one batch of every task, one optimizer on the weighted loss sum),
    "alternating" (``ratio[t]`` batches of each task in turn, each task's own optimizer) or
    "interleaved" (one batch of each task in turn, each task's own optimizer, no ratio);
    ``per_task_schedule``: each task its own plateau / early-stop / best-epoch rule on its own
    validation loss (else one rule on the sum).

    Attributes:
        name: The strategy's name, its ``--strategy`` choice and its key in :data:`REGISTRY`.
        order: The batch order: ``"joint"``, ``"alternating"`` or ``"interleaved"``.
        shared: Heads on one shared encoder (False: one model per task, the baseline).
        freeze_encoder: The shared encoder's layers are not trained (``independent``).
        per_task_schedule: Each task its own plateau / early-stop / best-epoch rule.
    """

    name: str
    order: str
    shared: bool = True
    freeze_encoder: bool = False
    per_task_schedule: bool = False


REGISTRY = {s.name: s for s in (
    Strategy("independent", "interleaved", freeze_encoder=True, per_task_schedule=True),
    Strategy("alternating", "alternating"),
    Strategy("joint", "joint"),
    Strategy("baseline", "joint", shared=False, per_task_schedule=True),
)}


class NonFiniteLossError(RuntimeError):
    """Training produced NaN/Inf; the last good weights have been restored."""


@dataclass
class FitConfig:
    """How :func:`fit` trains: epochs, batches, the plateau and early-stopping rule, checkpoints.

    Attributes:
        epochs: The most epochs to train.
        steps_per_epoch: Batches per epoch, ``{task: n}`` (``{"joint": n}`` with a joint model);
            a task not named gets 1.
        lr_patience: Epochs without improvement before the learning rates are cut.
        lr_factor: What a cut multiplies every optimizer's learning rate by.
        min_lr: No learning rate is cut below this.
        stop_patience: Epochs without improvement before training stops (None: never early).
        reset_to_best: A cut also restores the best epoch's weights (and σ), as another paper's RLRP (:mod:`ums_rep.schedule`).
        lr_cut_rule: ``"reach"`` cuts on the ``lr_patience``-th epoch without improvement,
            ``"exceed"`` on the next one (PyTorch's ``ReduceLROnPlateau``).
        monitor: What the shared rule watches: ``"sum"`` (the unweighted sum of the tasks'
            validation losses) or ``"weighted"`` (the weighting rule applied to them).
        reset_optimizer: A reset to the best epoch also restores the optimizers' state.
        restore_best: Restore the best epoch's weights when training ends.
        ratio: ``alternating``: consecutive batches of each task, ``{task: n}`` (default 1).
        checkpoint_dir: Folder of the per-epoch checkpoint (None: no checkpoints).
        resume: Continue from the last completed epoch in ``checkpoint_dir``.
        jit_compile: XLA-compile each replica's step.
        on_nonfinite: ``"raise"`` (:class:`NonFiniteLossError`) or ``"stop"`` (restore the best
            weights and return what there is) on a non-finite loss.
        progress: Show a progress bar per epoch.
        label: What the progress bar says it trains (default: the strategy's name).
        bn_images: A batch of training images: re-estimate batch norm on it after every epoch
            (:func:`precise_batch_norm`); None: keep the moving averages.
        shared_optimizer: ``(kind, learning rate)`` of the shared variables' optimizer: with it,
            every head is trained by its task's own optimizer and the shared encoder by this one
            under every strategy (:func:`default_optimizers`).
    """

    epochs: int = 10
    steps_per_epoch: dict = field(default_factory=dict)  # task -> batches per epoch
    lr_patience: int = 10
    lr_factor: float = 0.1
    min_lr: float = 1e-8
    stop_patience: int | None = 20
    reset_to_best: bool = False
    # the plateau rule (UMS-Rep's fine-tuning keeps the defaults; another paper's package sets
    # its authors' choices): "reach" cuts on the lr_patience-th epoch without improvement, "exceed" on the
    # next (PyTorch's ReduceLROnPlateau); the shared rule watches the unweighted sum of the validation
    # losses ("sum") or the weighting rule applied to them ("weighted"); a reset to the best epoch
    # also restores the optimizers' state (moments, iteration count) with reset_optimizer
    lr_cut_rule: str = "reach"
    monitor: str = "sum"
    reset_optimizer: bool = False
    restore_best: bool = True
    ratio: dict = field(default_factory=dict)  # alternating: task -> consecutive batches
    checkpoint_dir: Path | None = None
    resume: bool = False  # continue from the last completed epoch in checkpoint_dir
    jit_compile: bool = False  # XLA-compile each replica's step
    on_nonfinite: str = "raise"  # or "stop": restore the best weights and return what there is
    progress: bool = True
    label: str | None = None  # what the progress bar says it trains (default: the strategy's name)
    bn_images: object = None  # a batch of training images: re-estimate batch norm on it after every epoch
    # (kind, learning rate) of the shared variables' optimizer: with it, every task's head is trained
    # by its own task's optimizer under every strategy and the shared encoder by this one (see
    # :func:`variable_groups`); None: one optimizer on everything for joint, each task's own otherwise
    shared_optimizer: tuple | None = None


OPTIMIZERS = ("adam", "sgd", "rmsprop")
MONITORS = ("sum", "weighted")  # FitConfig.monitor


def make_optimizer(name: str, learning_rate: float):
    """A Keras optimizer by name (``keras.optimizers.get``) at ``learning_rate``."""
    if name.lower() not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; expected one of {list(OPTIMIZERS)}")
    return keras.optimizers.get({"class_name": name.lower(), "config": {"learning_rate": float(learning_rate)}})


def _unique(variables):
    seen, out = set(), []
    for v in variables:
        if id(v) not in seen:
            seen.add(id(v))
            out.append(v)
    return out


SHARED = "shared"  # the optimizer group of the shared variables: the encoder (and a learned weighting's σ)


def variable_groups(models: dict, extra=()) -> dict:
    """The trainable variables of each task's head (the layers named ``<task>.…``, as
    :mod:`ums_rep.heads` names them) and, under :data:`SHARED`, all the others (the encoder, shared
    or a baseline model's own) plus ``extra``: ``{task: [...], SHARED: [...]}``. A strategy then
    differs from another only in which groups a step updates, not in which optimizer updates them.

    Args:
        models: ``{task: keras.Model}``.
        extra: Further variables of the shared group (a learned weighting's σ).

    Returns:
        ``{task: [variables], SHARED: [variables]}``.
    """
    heads = {t: _unique([v for layer in m._flatten_layers(include_self=False) if layer.name.startswith(f"{t}.")
                         for v in layer.trainable_variables]) for t, m in models.items()}
    in_heads = {id(v) for vs in heads.values() for v in vs}
    shared = _unique([v for m in models.values() for v in m.trainable_variables if id(v) not in in_heads]
                     + list(extra))
    return {**heads, SHARED: shared}


def joint_schedule(tasks, steps: dict) -> list:
    """The tasks of every step of one joint epoch: ``max(steps)`` steps, task ``t`` in
    ``steps[t]`` of them spread evenly over the epoch, so every task gets as many of its own
    batches per epoch as under the other strategies (a task with fewer batches is not cycled)."""
    n = max(int(steps[t]) for t in tasks)
    return [tuple(t for t in tasks if (j + 1) * int(steps[t]) // n > j * int(steps[t]) // n) for j in range(n)]


def alternating_schedule(tasks, ratio: dict, steps: dict) -> list:
    """The task of every batch in one alternating epoch: ``ratio[t]`` consecutive batches of
    each task in turn until every task has had ``steps[t]`` batches."""
    left = {t: int(steps[t]) for t in tasks}
    order = []
    while any(left.values()):
        for t in tasks:
            n = min(int(ratio.get(t, 1)), left[t])
            if ratio.get(t, 1) < 1:
                raise ValueError(f"alternating ratio for {t} must be ≥ 1, got {ratio[t]}")
            order += [t] * n
            left[t] -= n
    return order


class Engine:
    """Compiled steps for a set of per-task models that share layers."""

    def __init__(self, strategy_name: str, models: dict, tasks: dict, optimizers: dict,
                 weighting=None, dist=None, joint_model=None, jit_compile: bool = False):
        if strategy_name not in REGISTRY:
            raise ValueError(f"unknown strategy {strategy_name!r}; expected one of {tuple(REGISTRY)}")
        self.order = REGISTRY[strategy_name].order
        if joint_model is not None and self.order != "joint":
            raise ValueError(f"a multi-output joint_model needs the joint strategy, not {strategy_name!r}")
        self.name, self.models, self.tasks = strategy_name, models, tasks
        self.joint_model = joint_model
        self.jit_compile = jit_compile
        self.dist = dist or tf.distribute.get_strategy()
        self.weighting = weighting or FixedWeights()
        self.n_replicas = self.dist.num_replicas_in_sync
        weighting_vars = list(getattr(self.weighting, "trainable_variables", [])) if self.order == "joint" else []
        self.per_group = SHARED in optimizers  # each head its task's optimizer, the shared variables one
        if self.per_group:
            groups = variable_groups(models, weighting_vars)
            optimizers = {k: o for k, o in optimizers.items() if groups[k]}  # a frozen encoder: no optimizer
            self.variables = {k: groups[k] for k in optimizers}
        elif self.order == "joint":
            self.variables = {"joint": _unique([v for m in models.values() for v in m.trainable_variables]
                                               + weighting_vars)}
        else:
            self.variables = {t: list(m.trainable_variables) for t, m in models.items()}
        # slots must exist before the first tf.function step: under MirroredStrategy, Adam's or
        # RMSprop's first step otherwise fails on a "cond/Placeholder" feed (SGD has no slots)
        with self.dist.scope():
            # under mixed_float16 each optimizer is wrapped for loss scaling (ums_rep.precision); the
            # wrapper holds the caller's optimizer, whose state the checkpoints and schedules keep
            self.optimizers = {k: loss_scaled(o) for k, o in optimizers.items()}
            for key, opt in self.optimizers.items():
                opt.build(self.variables[key])
        self._steps, self._val_steps = {}, {}

    def _loss(self, task, x, y, global_batch, pred=None):
        if pred is None:
            pred = self.models[task](x, training=True)
        per_example = self.tasks[task].loss(y[self.tasks[task].target], pred)
        return tf.nn.compute_average_loss(per_example, global_batch_size=global_batch)

    def groups_of(self, key) -> list:
        """The optimizer groups a step of ``key`` updates: ``"joint"`` or a tuple of tasks (a joint
        step), or one task (an alternating or interleaved step)."""
        tasks = self.tasks if key == "joint" else (key if isinstance(key, tuple) else (key,))
        if not self.per_group:
            return ["joint"] if self.order == "joint" else [key]
        return [k for k in (*tasks, SHARED) if k in self.optimizers]

    def step_fn(self, key):
        """The compiled training step of ``key``: ``"joint"`` (every task; ``joint_model``: one
        batch for all), a tuple of tasks (one joint step on those tasks' batches) or one task."""
        if key in self._steps:
            return self._steps[key]
        groups = self.groups_of(key)
        variables = [v for k in groups for v in self.variables[k]]
        sizes = [len(self.variables[k]) for k in groups]
        scaled_groups = any(isinstance(self.optimizers[k], keras.optimizers.LossScaleOptimizer) for k in groups)

        def replica_step(batch):
            with tf.GradientTape(persistent=scaled_groups) as tape:
                if key == "joint" and self.joint_model is not None:
                    x, y = batch
                    preds = self.joint_model(x, training=True)  # one forward pass for every task
                    global_batch = tf.shape(x)[0] * self.n_replicas
                    losses = {t: self._loss(t, x, y, global_batch, preds[t]) for t in self.tasks}
                    total, _ = self.weighting(losses)
                elif key == "joint" or isinstance(key, tuple):
                    losses = {t: self._loss(t, *batch[t], tf.shape(batch[t][0])[0] * self.n_replicas)
                              for t in batch}
                    total, _ = self.weighting(losses)
                else:
                    x, y = batch
                    losses = {key: self._loss(key, x, y, tf.shape(x)[0] * self.n_replicas)}
                    total = losses[key]
                # × the loss scale under LossScaleOptimizer (mixed_float16; apply_gradients unscales
                # and skips non-finite steps), the loss itself otherwise
                scaled = {k: self.optimizers[k].scale_loss(total) for k in groups}
            if scaled_groups:  # each optimizer its own loss scale
                grads = [g for k in groups for g in tape.gradient(scaled[k], self.variables[k])]
            else:  # scale_loss is the identity: one backward pass for every group
                grads = tape.gradient(total, variables)
            start = 0
            for k, n in zip(groups, sizes):
                pairs = [(g, v) for g, v in zip(grads[start:start + n], variables[start:start + n]) if g is not None]
                start += n
                if pairs:
                    self.optimizers[k].apply_gradients(pairs)
            return losses

        # XLA compiles the replica's step (not the cross-replica function, which XLA cannot take
        # under MirroredStrategy)
        replica = tf.function(replica_step, jit_compile=True) if self.jit_compile else replica_step

        @tf.function
        def step(batch):
            per_replica = self.dist.run(replica, args=(batch,))
            return {k: self.dist.reduce(tf.distribute.ReduceOp.SUM, v, axis=None) for k, v in per_replica.items()}

        self._steps[key] = step
        return step

    def evaluate(self, val_data) -> dict:
        """Mean per-example validation loss of every task (inference mode, one device), each batch
        in a compiled function (1.6x the eager model call for the CDAE at 128 px)."""
        if self.joint_model is not None:  # one dataset carrying every task's target
            totals, count = {t: 0.0 for t in self.tasks}, 0
            for x, y in val_data:
                sums, n = self._val_fn("joint")(x, y)
                for t in self.tasks:
                    totals[t] += float(sums[t])
                count += int(n)
            return self._mean_over_workers({t: v / max(count, 1) for t, v in totals.items()})
        out = {}
        for t, ds in val_data.items():
            total, count = 0.0, 0
            for x, y in ds:
                loss_sum, n = self._val_fn(t)(x, y)
                total += float(loss_sum)
                count += int(n)
            out[t] = total / max(count, 1)
        return self._mean_over_workers(out)

    def _val_fn(self, key):
        """A compiled validation batch: ``(sum of per-example losses, examples)`` of task ``key``,
        or of every task for ``"joint"`` (``joint_model``); one trace per batch shape."""
        if key not in self._val_steps:
            if key == "joint":
                def batch(x, y):
                    preds = self.joint_model(x, training=False)
                    return ({t: tf.reduce_sum(task.loss(y[task.target], preds[t])) for t, task in self.tasks.items()},
                            tf.shape(x)[0])
            else:
                task, model = self.tasks[key], self.models[key]

                def batch(x, y):
                    per_example = task.loss(y[task.target], model(x, training=False))
                    return tf.reduce_sum(per_example), tf.shape(per_example)[0]
            self._val_steps[key] = tf.function(batch, jit_compile=self.jit_compile)
        return self._val_steps[key]

    def _mean_over_workers(self, values: dict) -> dict:
        """Under a multi-worker strategy each worker validates on its own, and the values can
        differ (the CDAE's validation noise is drawn per process); the schedule and early
        stopping must decide alike on every worker (or the workers part), so all take the mean."""
        if not getattr(self.dist.extended, "_in_multi_worker_mode", lambda: False)():
            return values
        keys = sorted(values)
        local = tf.constant([values[k] for k in keys], tf.float32)
        mean = self.dist.reduce(tf.distribute.ReduceOp.MEAN, self.dist.run(lambda: tf.identity(local)), axis=None)
        return dict(zip(keys, (float(v) for v in mean.numpy())))


class _Rule:
    """One plateau / early-stopping / best-epoch rule over some tasks, their optimizers and their
    weights. The schedule tracks the first optimizer's rate; the others keep their ratio to it."""

    def __init__(self, tasks, optimizers: dict, models: dict, config: FitConfig, extra_vars=()):
        """``models``: the models whose weights this rule saves and restores."""
        self.tasks, self.optimizers = list(tasks), optimizers
        self.lr0 = {k: float(o.learning_rate.numpy()) for k, o in optimizers.items()}
        first = next(iter(self.lr0.values()))
        self.schedule = PlateauSchedule(lr=first, patience=config.lr_patience, factor=config.lr_factor,
                                        min_lr=config.min_lr, reset_to_best=config.reset_to_best,
                                        stop_patience=config.stop_patience, cut_rule=config.lr_cut_rule)
        # with reset_optimizer the best epoch's optimizer state is kept (and checkpointed) with its weights
        self.holder = _WeightsHolder(models, extra_vars, optimizers.values() if config.reset_optimizer else ())
        self.holder.save_best()
        self.stopped = False

    def apply_lr(self) -> None:
        scale = self.schedule.lr / next(iter(self.lr0.values()))
        for k, opt in self.optimizers.items():
            opt.learning_rate.assign(self.lr0[k] * scale)

    def lrs(self) -> dict:
        return {k: float(o.learning_rate.numpy()) for k, o in self.optimizers.items()}


def _batch_norm_layers(models) -> list:
    layers = [layer for m in models for layer in m._flatten_layers(include_self=False)
              if isinstance(layer, keras.layers.BatchNormalization)]
    return list({id(layer): layer for layer in layers}.values())  # tasks share the encoder's layers


def precise_batch_norm(models, images, dist=None, chunk: int = 32) -> int:
    """Set every trainable batch-norm layer's moving statistics to those of ``images`` (one batch
    of training images, no augmentation): PreciseBN (Wu & Johnson 2021, "Rethinking 'Batch' in
    BatchNorm", Section 3). The moving averages otherwise hold the last few batches, taken with
    weights that have since moved; with the small target sets of UMS-Rep's tasks (10-20 batches
    an epoch) the validation loss they give swings by a factor of 4 from one epoch to the next
    while its AUC hardly moves, and the plateau and early-stopping rules then act on that noise.
    Frozen layers (``trainable = False``: the independent strategy's encoder) keep theirs.
    The images go through in chunks of ``chunk`` (bounded memory at the paper's 256 px); each
    layer then holds the mean of the chunks' means and of their variances, as PreciseBN does.

    Args:
        models: The Keras models whose batch-norm layers to set (layers shared between them are
            set once).
        images: One batch of training images, ``(n, H, W, C)``, without augmentation.
        dist: The ``tf.distribute`` strategy to run the forward passes under (default: the
            active one).
        chunk: Images per forward pass.

    Returns:
        The number of batch-norm layers set.
    """
    dist = dist or tf.distribute.get_strategy()
    layers = [layer for layer in _batch_norm_layers(models) if layer.trainable]
    if not layers:
        return 0
    momentum = [layer.momentum for layer in layers]
    chunks = [images[i:i + chunk] for i in range(0, int(images.shape[0]), chunk)]
    done = set()
    try:
        for model in models:
            own = {id(layer) for layer in _batch_norm_layers([model]) if layer.trainable}
            if own <= done:  # a shared encoder's layers, already set from the same images
                continue
            done |= own
            for k, part in enumerate(chunks):
                for layer in layers:  # a running mean over the chunks: chunk k weighs 1/(k+1)
                    layer.momentum = k / (k + 1)
                dist.run(lambda x, m=model: m(x, training=True), args=(part,))
    finally:
        for layer, m in zip(layers, momentum):
            layer.momentum = m
    return len(layers)


@contextlib.contextmanager
def _synchronized_batch_norm(dist, models):
    """Over several replicas (several workers, or devices), batch norm normalises with the
    global batch's statistics and every replica keeps the same moving statistics, as on one
    device: Keras' layers otherwise keep each worker's own (their moving statistics have
    ``aggregation="none"``). The flags are restored afterwards, so saved models are unchanged."""
    layers = [layer for layer in _batch_norm_layers(models) if not layer.synchronized] \
        if dist.num_replicas_in_sync > 1 else []
    for layer in layers:
        layer.synchronized = True
    try:
        yield
    finally:
        for layer in layers:
            layer.synchronized = False


def fit(strategy_name: str, models: dict, tasks: dict, train_data, val_data, config: FitConfig, *,
        dist=None, joint_model=None, **kw) -> dict:
    """Train ``models`` with one strategy of :data:`REGISTRY`: the one training loop of both papers.

    The shared strategies train the models (which share the encoder's layers) in one loop; the
    baseline (``shared=False``) fits each task's own model as a ``joint`` fit of that task alone,
    with checkpoints in ``checkpoint_dir/<task>``. Over several replicas batch norm uses the
    global batch's statistics.

    Args:
        strategy_name: A key of :data:`REGISTRY`: ``"independent"``, ``"alternating"``,
            ``"joint"`` or ``"baseline"``.
        models: ``{task: keras.Model}``, sharing the encoder's layers (the baseline: one model per
            task).
        tasks: ``{task: ums_rep.tasks.Task}``: each task's loss, metrics and optimizer.
        train_data: ``{task: tf.data.Dataset}`` of ``(x, y)`` batches that repeat and drop
            remainders (one dataset with ``joint_model``).
        val_data: ``{task: tf.data.Dataset}``, finite (one dataset with ``joint_model``).
        config: Epochs, batches per epoch, the plateau / early-stopping rule, checkpoints.
        dist: The ``tf.distribute`` strategy (default: the active one).
        joint_model: One model whose dict outputs are keyed by task (every task labels
            the same images); then ``train_data``/``val_data`` are single datasets and
            ``config.steps_per_epoch["joint"]`` sets the batches per epoch.
        **kw: ``optimizers`` (``{"joint" | task | SHARED: optimizer}``; default
            :func:`default_optimizers` with ``config.shared_optimizer``), ``weighting`` (a
            :class:`ums_rep.weighting.Weighting`; its ``values()`` are logged every epoch, its
            ``on_epoch_end(epoch, {task: mean training loss})`` called after each and its
            ``state_variables`` checkpointed) and ``on_epoch_end(epoch, record)`` (called after
            each epoch: checkpointing, logging).

    Returns:
        ``{"history": [...], "seconds": {task: s}, "best_epoch": e, "stopped": reason,
        "schedule": state, "optimizers": {group: {"optimizer", "learning_rate"}},
        "updates": {task: batches per epoch}}``. Under a per-task schedule (``independent``,
        ``baseline``) ``best_epoch``, ``stopped`` and ``schedule`` are dicts keyed by task.
        ``seconds`` is every second of the fit (steps, validation, PreciseBN, checkpoints), each
        step's to its tasks and the rest shared evenly by the tasks training in that epoch.

    Raises:
        ValueError: An unknown strategy or ``config.monitor``, or a per-task schedule given an
            optimizer for shared variables.
        NonFiniteLossError: A non-finite loss with ``config.on_nonfinite="raise"``.
    """
    dist = dist or tf.distribute.get_strategy()
    if strategy_name not in REGISTRY:
        raise ValueError(f"unknown strategy {strategy_name!r}; expected one of {tuple(REGISTRY)}")
    if not REGISTRY[strategy_name].shared:
        return _fit_separately(models, tasks, train_data, val_data, config, dist=dist, **kw)
    with _synchronized_batch_norm(dist, [*models.values(), *([joint_model] if joint_model is not None else [])]):
        return _fit(strategy_name, models, tasks, train_data, val_data, config, dist=dist, joint_model=joint_model,
                    **kw)


def _fit(strategy_name: str, models: dict, tasks: dict, train_data, val_data,
         config: FitConfig, *, optimizers: dict | None = None, weighting=None, dist=None,
         on_epoch_end=None, joint_model=None) -> dict:
    """Train ``models`` (``{task: keras.Model}``, sharing layers) and return
    ``{"history": [...], "seconds": {task: s}, "best_epoch": e, "stopped": reason, "schedule": state,
    "optimizers": {group: {"optimizer", "learning_rate"}}, "updates": {task: batches per epoch}}``
    (``independent``: ``best_epoch``, ``stopped`` and ``schedule`` are dicts keyed by task).
    ``seconds`` is every second of the fit (steps, validation, PreciseBN, checkpoints), each
    step's to its tasks and the rest shared evenly by the tasks training in that epoch.

    ``optimizers`` maps ``"joint"`` (one optimizer on everything, joint), each task (its whole
    model), or each task and :data:`SHARED` (each head and the shared variables: see
    :func:`variable_groups`) to an optimizer (default: :func:`default_optimizers` with
    ``config.shared_optimizer``). ``on_epoch_end(epoch, record)``
    is called after each epoch (checkpointing, logging). With ``joint_model`` (a model whose dict
    outputs are keyed by task) ``train_data``/``val_data`` are single datasets and
    ``config.steps_per_epoch["joint"]`` sets the batches per epoch. A weighting rule with
    ``values()`` (e.g. uncertainty σ) has them logged in every epoch's record; its
    ``on_epoch_end(epoch, {task: mean training loss})`` is called after every epoch (epoch-level
    rules such as DWA) and its ``state_variables`` are checkpointed (see
    :class:`ums_rep.weighting.Weighting`)."""
    dist = dist or tf.distribute.get_strategy()
    started = time.perf_counter()
    if config.monitor not in MONITORS:
        raise ValueError(f"FitConfig.monitor must be one of {MONITORS}, got {config.monitor!r}")
    names = list(tasks)
    steps = {t: int(config.steps_per_epoch.get(t, 1)) for t in names}
    if optimizers is None:
        optimizers = default_optimizers(strategy_name, tasks, dist, config.shared_optimizer)
    engine = Engine(strategy_name, models, tasks, optimizers, weighting, dist, joint_model, config.jit_compile)
    optimizers = {k: o for k, o in optimizers.items() if k in engine.variables}  # none for a frozen encoder
    if joint_model is not None:
        steps = {"joint": int(config.steps_per_epoch.get("joint", max(steps.values())))}
        iters = {"joint": iter(dist.experimental_distribute_dataset(train_data))}
    else:
        iters = {t: iter(dist.experimental_distribute_dataset(train_data[t])) for t in names}
    weighting_vars = list(getattr(engine.weighting, "trainable_variables", []))
    spec = REGISTRY[strategy_name]
    per_task = spec.per_task_schedule  # each task its own rule, optimizer and best epoch
    if per_task and SHARED in optimizers:
        raise ValueError(f"{strategy_name}: a per-task schedule cannot also train shared variables "
                         "(their optimizer would follow no task's rule)")
    rules = ({t: _Rule([t], {t: optimizers[t]}, {t: models[t]}, config) for t in names} if per_task
             else {"all": _Rule(names, optimizers, models, config, weighting_vars)})  # σ reset with the weights
    run = {"history": [], "seconds": {t: 0.0 for t in names}, "stopped": {g: "epochs" for g in rules}}
    store = None
    if config.checkpoint_dir is not None:
        store = _Store(config.checkpoint_dir, models, optimizers,
                       weighting_vars + list(getattr(engine.weighting, "state_variables", [])), iters)
        if config.resume and store.state is not None and _resume(store, rules, run, config):
            return _result(rules, run, per_task, config, engine, steps)
    _share(run["seconds"], names, time.perf_counter() - started)  # building the steps' state, the pipelines
    for epoch in range(len(run["history"]), config.epochs):
        t0 = time.perf_counter()
        active = [t for t in names if not rules[t if per_task else "all"].stopped]
        if joint_model is not None:
            order = ["joint"] * steps["joint"]
        elif spec.order == "joint":
            order = joint_schedule(names, steps)
        else:
            order = alternating_schedule(active, config.ratio if spec.order == "alternating" else {}, steps)
        before = dict(run["seconds"])
        means, nonfinite = _train_epoch(engine, order, iters, names, joint_model, rules, run["seconds"], epoch,
                                        config, f"{config.label or strategy_name} epoch {epoch + 1}/{config.epochs}")
        step_seconds = sum(run["seconds"][t] - before[t] for t in names)  # this epoch's training steps
        if nonfinite is not None:
            run["stopped"] = {g: nonfinite for g in rules}
            break
        if config.bn_images is not None:
            precise_batch_norm([*models.values(), *([joint_model] if joint_model is not None else [])],
                               config.bn_images, dist)
        val = engine.evaluate(val_data)
        total_val = float(sum(val.values()))  # the unweighted sum of the task losses
        record = _epoch_record(epoch, time.perf_counter() - t0, total_val, means, val, rules)
        monitored = total_val  # the shared rule's value (config.monitor)
        if config.monitor == "weighted":
            monitored = record["val_weighted"] = _weighted_loss(engine.weighting, val)
        any_cut, any_reset = _schedule_step(rules, epoch, {g: val[g] if per_task else monitored for g in rules},
                                            run["stopped"])
        if hasattr(engine.weighting, "values"):
            record.update(engine.weighting.values())  # what this epoch trained with
        # the weighting rule's epoch hook (a no-op by default; DWA computes the next epoch's weights)
        if hasattr(engine.weighting, "on_epoch_end"):
            engine.weighting.on_epoch_end(epoch, means)
        record["lr_cut"], record["reset"] = any_cut, any_reset
        run["history"].append(record)
        log.info("epoch %d: %s", epoch + 1, ", ".join(f"{k} {v:.4g}" for k, v in record.items()
                                                       if k.startswith(("train_", "val_", "lr"))
                                                       and not isinstance(v, bool)))
        done = all(r.stopped for r in rules.values())
        # every second of the epoch counts (validation, PreciseBN, the schedule, checkpoints), shared
        # evenly by the tasks it trained: what Tables 4, 6, 8, 10 compare is the whole fine-tuning
        _share(run["seconds"], active, time.perf_counter() - t0 - step_seconds)
        t1 = time.perf_counter()
        if store is not None:
            store.save(epoch + 1, rules, {
                **run, "schedules": {g: r.schedule.state() for g, r in rules.items()},
                "rules_stopped": {g: r.stopped for g, r in rules.items()},
                "finished": done or epoch + 1 == config.epochs})
        if on_epoch_end is not None:
            on_epoch_end(epoch, record)
        _share(run["seconds"], active, time.perf_counter() - t1)  # the checkpoint
        if done:
            break
    return _result(rules, run, per_task, config, engine, steps)


def _weighted_loss(weighting, val: dict) -> float:
    """The weighting rule applied to the validation losses ``{task: loss}`` with its current
    weights (σ and the ln(σ+1) terms of uncertainty weighting): the loss the joint step minimises,
    what another paper's authors' public code monitors (``Module/hzhu_learn.py``)."""
    total, _ = weighting({t: tf.constant(v, tf.float32) for t, v in val.items()})
    return float(total)


def _share(seconds: dict, tasks, elapsed: float) -> None:
    """Add ``elapsed`` seconds to ``seconds``, split evenly among ``tasks``."""
    for t in tasks:
        seconds[t] += max(elapsed, 0.0) / max(len(tasks), 1)


def _fit_separately(models: dict, tasks: dict, train_data, val_data, config: FitConfig, *, dist, weighting=None,
                    **kw) -> dict:
    """The baseline: each task's own model a ``joint`` fit of that task alone (checkpoints in
    ``checkpoint_dir/<task>``), returned keyed by task as ``independent``'s are (``optimizers``:
    each model's groups, the shared one as ``shared.<task>``)."""
    out = {"history": [], "seconds": {}, "best_epoch": {}, "stopped": {}, "schedule": {}, "optimizers": {},
           "updates": {}}
    for name in tasks:
        cfg = config if config.checkpoint_dir is None else replace(config, checkpoint_dir=config.checkpoint_dir / name)
        f = fit("joint", {name: models[name]}, {name: tasks[name]}, {name: train_data[name]}, {name: val_data[name]},
                cfg, dist=dist, **kw)
        out["history"] += [{"task": name, **h} for h in f["history"]]
        out["seconds"][name] = f["seconds"][name]
        out["updates"][name] = f["updates"][name]
        out["optimizers"].update({(k if k != SHARED else f"{SHARED}.{name}"): v for k, v in f["optimizers"].items()})
        for key in ("best_epoch", "stopped", "schedule"):
            out[key][name] = f[key]
    return out


def default_optimizers(strategy_name: str, tasks: dict, dist=None, shared: tuple | None = None) -> dict:
    """The optimizers :func:`fit` builds when given none. With ``shared`` (kind, learning rate):
    each task's head its task's own (``Task.optimizer`` at ``Task.learning_rate``) and the shared
    variables ``shared``'s, under every strategy (:func:`variable_groups`; UMS-Rep Section 4.2
    gives the heads' optimizers and none for the encoder). Without: one optimizer on the joint
    sum (the first task's kind and rate), else one per task on its whole model.

    Args:
        strategy_name: A key of :data:`REGISTRY`.
        tasks: ``{task: ums_rep.tasks.Task}``.
        dist: The ``tf.distribute`` strategy whose scope creates the optimizers (default: the
            active one).
        shared: ``(kind, learning rate)`` of the shared variables' optimizer, or None.

    Returns:
        ``{task | SHARED | "joint": keras.optimizers.Optimizer}``.
    """
    names = list(tasks)
    dist = dist or tf.distribute.get_strategy()
    with dist.scope():
        if shared is not None:
            return {**{t: make_optimizer(tasks[t].optimizer, tasks[t].learning_rate) for t in names},
                    SHARED: make_optimizer(*shared)}
        if REGISTRY[strategy_name].order == "joint":
            first = tasks[names[0]]
            return {"joint": make_optimizer(first.optimizer, first.learning_rate)}
        return {t: make_optimizer(tasks[t].optimizer, tasks[t].learning_rate) for t in names}


def describe_optimizers(optimizers: dict, lr0: dict | None = None) -> dict:
    """``{group: {"optimizer": class name, "learning_rate": initial rate}}`` (``results.json``'s
    ``config.optimizers``)."""
    return {k: {"optimizer": type(getattr(o, "inner_optimizer", o)).__name__,
                # the rate as set (1e-2), not its float32 value (0.0099999998)
                "learning_rate": float(f"{float((lr0 or {}).get(k, o.learning_rate.numpy())):.6g}")}
            for k, o in optimizers.items()}


def _epoch_record(epoch: int, seconds: float, total_val: float, means: dict, val: dict, rules: dict) -> dict:
    """One epoch's history row: losses, and the learning rates it trained with (``lr``, and
    ``lr_<group>`` for each where there are several)."""
    record = {"epoch": epoch + 1, "seconds": seconds, "val_total": total_val,
              **{f"train_{t}": v for t, v in means.items()}, **{f"val_{t}": v for t, v in val.items()}}
    lrs = {k: v for rule in rules.values() for k, v in rule.lrs().items()}
    record["lr"] = next(iter(lrs.values()))
    if len(lrs) > 1:
        record.update({f"lr_{k}": v for k, v in lrs.items()})
    return record


def _resume(store, rules: dict, run: dict, config: FitConfig) -> bool:
    """Load the checkpoint into ``rules`` and ``run``; True when that run had finished."""
    state = store.restore(rules)
    run.update(history=state["history"], seconds=state["seconds"], stopped=state["stopped"])
    for g, rule in rules.items():
        rule.schedule.load_state(state["schedules"][g])
        rule.stopped = state["rules_stopped"][g]
        rule.apply_lr()
    log.info("resumed from %s after epoch %d", config.checkpoint_dir, state["epoch"])
    return bool(state["finished"])


def _train_epoch(engine, order, iters, names, joint_model, rules, seconds: dict, epoch: int, config, desc: str):
    """One epoch's training steps in ``order``: ``({task: mean training loss}, None)``, or, at a
    non-finite loss, the best weights restored and ``(partial means, reason)`` (raised instead with
    ``on_nonfinite="raise"``). Adds each step's time to ``seconds`` (a joint step's split evenly
    among its tasks)."""
    sums, counts = {t: 0.0 for t in names}, {t: 0 for t in names}
    nonfinite = None
    for key in tqdm(order, desc=desc, unit="batch", disable=not config.progress, leave=False):
        ts = time.perf_counter()
        if key == "joint" and joint_model is not None:
            losses = engine.step_fn("joint")(next(iters["joint"]))
        elif isinstance(key, tuple):  # a joint step on these tasks' batches
            losses = engine.step_fn(key)({t: next(iters[t]) for t in key})
        else:
            losses = engine.step_fn(key)(next(iters[key]))
        bad = {t: float(v) for t, v in losses.items() if not math.isfinite(float(v))}
        if bad:
            for rule in rules.values():
                rule.holder.restore_best()
            best = {g: r.schedule.best_epoch + 1 for g, r in rules.items()}
            nonfinite = (f"non-finite {', '.join(f'{t} loss ({v})' for t, v in bad.items())} at epoch "
                         f"{epoch + 1}; the best weights so far (epoch {best['all'] if 'all' in best else best}) "
                         "have been restored")
            if config.on_nonfinite == "raise":
                raise NonFiniteLossError(nonfinite)
            log.error("%s", nonfinite)
            break
        for t, v in losses.items():
            sums[t] += float(v)
            counts[t] += 1
        _share(seconds, names if key == "joint" else key if isinstance(key, tuple) else [key],
               time.perf_counter() - ts)
    return {t: sums[t] / max(counts[t], 1) for t in names if counts[t]}, nonfinite


def _schedule_step(rules: dict, epoch: int, values: dict, stopped: dict) -> tuple[bool, bool]:
    """Each running rule's plateau schedule on its validation value: keep the best weights, cut
    the rate and reset to the best epoch, or stop (the reason goes to ``stopped``). Returns
    whether any rule cut and whether any reset."""
    any_cut = any_reset = False
    for g, rule in rules.items():
        if rule.stopped:
            continue
        action = rule.schedule.update(epoch, values[g])
        if action["improved"]:
            rule.holder.save_best()
        if action["reset"]:
            rule.holder.restore_best()
        if action["cut"]:
            rule.apply_lr()
        any_cut |= action["cut"]
        any_reset |= action["reset"]
        if action["stop"]:
            rule.stopped = True
            stopped[g] = "non-finite validation loss" if not math.isfinite(values[g]) else "early stopping"
    return any_cut, any_reset


def _result(rules: dict, run: dict, per_task: bool, config: FitConfig, engine, steps: dict) -> dict:
    """What :func:`fit` returns, after restoring each rule's best weights (``restore_best``)."""
    if config.restore_best:
        for rule in rules.values():
            rule.holder.restore_best()
    lr0 = {k: v for rule in rules.values() for k, v in rule.lr0.items()}
    common = {"history": run["history"], "seconds": run["seconds"],
              "optimizers": describe_optimizers({k: engine.optimizers[k] for k in engine.variables}, lr0),
              "updates": updates_per_epoch(engine, steps)}
    out = {g: (r.schedule.best_epoch + 1, run["stopped"][g], r.schedule.state()) for g, r in rules.items()}
    if per_task:
        return {**common, "best_epoch": {g: o[0] for g, o in out.items()},
                "stopped": {g: o[1] for g, o in out.items()}, "schedule": {g: o[2] for g, o in out.items()}}
    best, why, state = out["all"]
    return {**common, "best_epoch": best, "stopped": why, "schedule": state}


def updates_per_epoch(engine, steps: dict) -> dict:
    """Batches of its own data each task trains on per (full) epoch: ``steps`` under every
    strategy, as :func:`joint_schedule` and :func:`alternating_schedule` lay them out (with a
    ``joint_model``, every task is in each of its ``steps["joint"]`` batches)."""
    if engine.joint_model is not None:
        return {t: int(steps["joint"]) for t in engine.tasks}
    names = list(engine.tasks)
    if engine.order == "joint":
        order = [t for key in joint_schedule(names, steps) for t in key]
    else:
        order = alternating_schedule(names, {}, steps)
    return {t: order.count(t) for t in names}


class _Store:
    """Per-epoch checkpoint (weights, optimizer state, the weighting rule's variables — σ, DWA's
    weights and loss history —, the training iterators' positions and hence the shuffle order),
    each rule's best weights (``best_<rule>.npz``: what its :class:`_WeightsHolder` keeps, with
    ``FitConfig.reset_optimizer`` the best epoch's optimizer state too), and ``state.json``
    (history, schedules, timings): everything a run needs to continue after a crash.

    ``state.json`` is written atomically *after* the files it names, so a crash at any moment
    leaves a consistent earlier state (TF's CheckpointManager keeps the previous checkpoint until
    the next is complete; best weights are written under a new name, then named in the state)."""

    def __init__(self, folder, models, optimizers, weighting_vars, iters):
        self.folder = Path(folder)
        weights = {f"model_{t}": m for t, m in models.items()}
        if weighting_vars:
            weights["weighting"] = weighting_vars
        self.epoch_var = tf.Variable(0, dtype=tf.int64, trainable=False)
        # Keras' dropout seed generators are not in the model's checkpoint graph: add them, so a
        # resumed run draws the same dropout masks as an uninterrupted one
        rng = _unique([v.value for m in models.values() for v in m.variables if _is_rng(v)])
        # a distribution strategy's iterators (MirroredStrategy's, MultiWorkerMirroredStrategy's)
        # cannot be checkpointed: there a resumed run restarts its input pipeline (another
        # shuffle order from that epoch on); the default strategy's iterators are saved
        saved_iters = {k: it for k, it in iters.items() if isinstance(it, tf.__internal__.tracking.Trackable)}
        if len(saved_iters) < len(iters):
            log.info("distributed input iterators: their position is not checkpointed (a resumed run "
                     "restarts its input pipeline)")
        self.last = tf.train.Checkpoint(epoch=self.epoch_var, **weights, rng=rng,
                                        **{f"optimizer_{k}": o for k, o in optimizers.items()},
                                        **{f"iterator_{k}": it for k, it in saved_iters.items()})
        self.last_manager = tf.train.CheckpointManager(self.last, str(self.folder), max_to_keep=2)
        path = self.folder / "state.json"
        self.state = json.loads(path.read_text()) if path.is_file() else None
        self.best_files = dict(self.state["best_files"]) if self.state else {}

    def save(self, epoch: int, rules: dict, state: dict) -> None:
        stale = []
        for g, rule in rules.items():
            if rule.schedule.best_epoch == epoch - 1 or g not in self.best_files:  # a new best (or the first)
                name = f"best_{g}_{epoch}.npz"
                buf = io.BytesIO()
                np.savez(buf, *rule.holder.best)
                atomic_write_bytes(self.folder / name, buf.getvalue())
                if g in self.best_files:
                    stale.append(self.best_files[g])
                self.best_files[g] = name
        self.epoch_var.assign(epoch)
        self.last_manager.save(checkpoint_number=epoch)
        atomic_write_text(self.folder / "state.json", json.dumps(
            {"epoch": epoch, "best_files": self.best_files, **state}, default=float))
        for old in stale:  # superseded, now that the state names the new files
            (self.folder / old).unlink(missing_ok=True)

    def restore(self, rules: dict) -> dict:
        """Load each rule's best weights, then the last epoch into the models."""
        for g, rule in rules.items():
            name = self.state["best_files"].get(g)
            if name is not None:
                with np.load(self.folder / name) as saved:
                    rule.holder.best = [saved[f"arr_{i}"] for i in range(len(saved.files))]
        self.last.restore(str(self.folder / f"ckpt-{self.state['epoch']}")).assert_existing_objects_matched()
        return self.state


def optimizer_state(optimizer) -> list:
    """An optimizer's variables but its learning rate: what a reset to the best epoch restores
    (Adam: iteration count, first and second moments). The optimizer must be built."""
    # its own rate variable and, for a loss-scale wrapper, the inner optimizer's
    rates = {id(getattr(optimizer, "_learning_rate", None)), id(optimizer.learning_rate)}
    return [v for v in optimizer.variables if id(v) not in rates]


def _is_rng(variable) -> bool:
    return "seed_generator" in getattr(variable, "path", "")


class _WeightsHolder:
    """In-memory copy of the best weights of some models (shared layers copied once), of ``extra``
    variables (a weighting's σ) and of ``optimizers``' state (moments, iteration count; not the
    learning rate, which the schedule sets); random generator states are left alone, so a reset
    does not replay the same dropout masks."""

    def __init__(self, models: dict, extra=(), optimizers=()):
        self.variables = _unique([v for m in models.values() for v in m.variables if not _is_rng(v)] + list(extra)
                                 + [v for o in optimizers for v in optimizer_state(o)])
        self.best = None

    def save_best(self):
        self.best = [np.array(v.numpy()) for v in self.variables]

    def restore_best(self):
        if self.best is not None:
            for v, value in zip(self.variables, self.best):
                v.assign(value)
