"""The compiled training steps of the fine-tuning strategies (UMS-Rep Sections 2.3 and 3.2.3) and
the order of their batches, run under the active ``tf.distribute`` strategy so one code path
serves one CPU, one GPU or several devices.

:class:`Engine` holds one compiled step per batch kind — one task's batch (``alternating``,
``interleaved``), one batch of several tasks on their weighted loss sum (``joint``), or one batch
of a multi-output model (``joint_model``) — and the validation loss. :func:`variable_groups`
splits the variables into each task's head and the shared rest, so every strategy updates the
same groups with the same optimizers (UMS-Rep Section 4: the strategies are compared at equal
data and budget); :func:`joint_schedule` and :func:`alternating_schedule` lay out one epoch's
batches so every task trains on as many of its own batches under every strategy.

Per-example losses are averaged over the *global* batch (``tf.nn.compute_average_loss``) and
gradients summed across replicas, so a step on two devices equals the step on one.
"""
from __future__ import annotations

import keras
import tensorflow as tf

from ums_rep.precision import loss_scaled
from ums_rep.weighting import FixedWeights

ORDERS = ("joint", "alternating", "interleaved")  # Strategy.order: the batch order of one epoch
SHARED = "shared"
"""The optimizer group of the shared variables: the encoder (and a learned weighting's σ)."""


def unique_variables(variables) -> list:
    """``variables`` without repeats (by identity), in their first order: layers shared between
    models hold the same variables."""
    seen, out = set(), []
    for v in variables:
        if id(v) not in seen:
            seen.add(id(v))
            out.append(v)
    return out


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
    heads = {t: unique_variables([v for layer in m._flatten_layers(include_self=False) if layer.name.startswith(f"{t}.")
                         for v in layer.trainable_variables]) for t, m in models.items()}
    in_heads = {id(v) for vs in heads.values() for v in vs}
    shared = unique_variables([v for m in models.values() for v in m.trainable_variables if id(v) not in in_heads]
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
    """Compiled steps for a set of per-task models that share layers.

    Args:
        order: The batch order (a :class:`ums_rep.strategies.Strategy`'s ``order``, one of
            :data:`ORDERS`): ``"joint"`` steps minimise the weighting rule's total over every
            task of the step; ``"alternating"`` and ``"interleaved"`` steps train one task.
        models: ``{task: keras.Model}``, sharing layers.
        tasks: ``{task: ums_rep.tasks.Task}``: each task's loss and target.
        optimizers: ``{"joint" | task | SHARED: optimizer}`` (see :func:`variable_groups`).
        weighting: The joint total's rule (default :class:`ums_rep.weighting.FixedWeights`).
        dist: The ``tf.distribute`` strategy (default: the active one).
        joint_model: One model whose dict outputs are keyed by task (``"joint"`` order only).
        jit_compile: XLA-compile each replica's step.

    Raises:
        ValueError: An unknown ``order``, or a ``joint_model`` under another order.
    """

    def __init__(self, order: str, models: dict, tasks: dict, optimizers: dict,
                 weighting=None, dist=None, joint_model=None, jit_compile: bool = False):
        if order not in ORDERS:
            raise ValueError(f"unknown batch order {order!r}; expected one of {ORDERS}")
        self.order = order
        if joint_model is not None and self.order != "joint":
            raise ValueError(f"a multi-output joint_model needs the joint strategy, not the {order!r} order")
        self.models, self.tasks = models, tasks
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
            self.variables = {"joint": unique_variables([v for m in models.values() for v in m.trainable_variables]
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


