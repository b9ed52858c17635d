"""Fine-tuning strategies as custom training loops (UMS-Rep Sections 2.3 and 3.2.3), run under
the active ``tf.distribute`` strategy so one code path serves one CPU, one GPU or several
devices.

All strategies share one training loop, :func:`fit`, and differ only in which variables each
update touches and in the order of task batches (the compiled steps: :mod:`ums_rep.engine`):

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
baseline (:func:`ums_rep.engine.variable_groups`, :func:`default_optimizers`); and every task trains on as many
of its own batches per epoch under every strategy (``steps_per_epoch[task]``: a joint epoch runs
``max(steps)`` steps and puts each task in ``steps[task]`` of them, :func:`ums_rep.engine.joint_schedule`).
:func:`fit` returns both (``optimizers``, ``updates``) for ``results.json``.

What the loop does around its steps — PreciseBN (:mod:`ums_rep.batch_norm`), the weighting rule's
epoch step, logging, checkpoints (:mod:`ums_rep.checkpoints`) — are hooks (:mod:`ums_rep.hooks`),
which :func:`fit` takes as a list (:func:`default_hooks`: the config's); a new behaviour is a new
hook.

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

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import keras
import tensorflow as tf
from tqdm.auto import tqdm

from ums_rep.batch_norm import synchronized_batch_norm
from ums_rep.checkpoints import WeightsHolder
from ums_rep.engine import SHARED, Engine, alternating_schedule, joint_schedule, updates_per_epoch
from ums_rep.hooks import Checkpoints, FitState, Hook, LogEpoch, PreciseBatchNorm, WeightingStep
from ums_rep.schedule import PlateauSchedule

log = logging.getLogger(__name__)

ALL_TASKS = "all"
"""The group of one plateau rule over every task: :func:`fit`'s ``best_epoch``, ``stopped`` and
``schedule`` key under a shared schedule (each task's name under a per-task one)."""

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
        checkpoint_dir: Folder of the per-epoch checkpoint (:class:`ums_rep.hooks.Checkpoints`;
            None: no checkpoints).
        resume: Continue from the last completed epoch in ``checkpoint_dir``.
        jit_compile: XLA-compile each replica's step.
        on_nonfinite: ``"raise"`` (:class:`NonFiniteLossError`) or ``"stop"`` (restore the best
            weights and return what there is) on a non-finite loss.
        progress: Show a progress bar per epoch.
        label: What the progress bar says it trains (default: the strategy's name).
        bn_images: A batch of training images: re-estimate batch norm on it after every epoch
            (:class:`ums_rep.hooks.PreciseBatchNorm`); None: keep the moving averages.
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
    # :func:`ums_rep.engine.variable_groups`); None: one optimizer on everything for joint, each task's own otherwise
    shared_optimizer: tuple | None = None


OPTIMIZERS = ("adam", "sgd", "rmsprop")
MONITORS = ("sum", "weighted")  # FitConfig.monitor


def make_optimizer(name: str, learning_rate: float):
    """A Keras optimizer by name (``keras.optimizers.get``) at ``learning_rate``."""
    if name.lower() not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; expected one of {list(OPTIMIZERS)}")
    return keras.optimizers.get({"class_name": name.lower(), "config": {"learning_rate": float(learning_rate)}})



class PlateauRule:
    """One plateau / early-stopping / best-epoch rule over some tasks, their optimizers and their
    weights (UMS-Rep Section 4.1.1). The schedule tracks the first optimizer's rate; the others
    keep their ratio to it.

    Args:
        tasks: The tasks the rule watches.
        optimizers: ``{group: optimizer}`` whose rates it sets.
        models: ``{key: keras.Model}`` whose weights it saves and restores.
        config: The fit's :class:`FitConfig` (patience, factor, cut rule, ``reset_optimizer``).
        extra_vars: Further variables saved and restored with the weights (a weighting's σ).

    Attributes:
        schedule: The :class:`ums_rep.schedule.PlateauSchedule`.
        holder: The best weights (:class:`ums_rep.checkpoints.WeightsHolder`).
        stopped: The rule stopped (early stopping, a non-finite loss or a hook's stop).
    """

    def __init__(self, tasks, optimizers: dict, models: dict, config: FitConfig, extra_vars=()):
        self.tasks, self.optimizers = list(tasks), optimizers
        self.lr0 = {k: float(o.learning_rate.numpy()) for k, o in optimizers.items()}
        first = next(iter(self.lr0.values()))
        self.schedule = PlateauSchedule(lr=first, patience=config.lr_patience, factor=config.lr_factor,
                                        min_lr=config.min_lr, reset_to_best=config.reset_to_best,
                                        stop_patience=config.stop_patience, cut_rule=config.lr_cut_rule)
        # with reset_optimizer the best epoch's optimizer state is kept (and checkpointed) with its weights
        self.holder = WeightsHolder(models, extra_vars, optimizers.values() if config.reset_optimizer else ())
        self.holder.save_best()
        self.stopped = False

    def apply_lr(self) -> None:
        """Set every optimizer's rate to the schedule's, each in its ratio to the first."""
        scale = self.schedule.lr / next(iter(self.lr0.values()))
        for k, opt in self.optimizers.items():
            opt.learning_rate.assign(self.lr0[k] * scale)

    def lrs(self) -> dict:
        """``{group: current learning rate}``."""
        return {k: float(o.learning_rate.numpy()) for k, o in self.optimizers.items()}


def default_hooks(config: FitConfig) -> list:
    """The hooks :func:`fit` runs when given none: the behaviour ``config`` asks for.

    Args:
        config: The fit's configuration.

    Returns:
        In order: :class:`ums_rep.hooks.PreciseBatchNorm` on ``config.bn_images`` (when set),
        :class:`ums_rep.hooks.WeightingStep`, :class:`ums_rep.hooks.LogEpoch` and
        :class:`ums_rep.hooks.Checkpoints` (when ``config.checkpoint_dir`` is set).
    """
    return [*([PreciseBatchNorm(config.bn_images)] if config.bn_images is not None else []),
            WeightingStep(), LogEpoch(),
            *([Checkpoints()] if config.checkpoint_dir is not None else [])]


def fit(strategy_name: str, models: dict, tasks: dict, train_data, val_data, config: FitConfig, *,
        optimizers: dict | None = None, weighting=None, hooks: Sequence[Hook] | None = None, dist=None,
        joint_model=None) -> dict:
    """Train ``models`` with one strategy of :data:`REGISTRY`: the one training loop of both papers.

    The shared strategies train the models (which share the encoder's layers) in one loop; the
    baseline (``shared=False``) fits each task's own model as a ``joint`` fit of that task alone,
    with checkpoints in ``checkpoint_dir/<task>``. Over several replicas batch norm uses the
    global batch's statistics. What the loop does around its steps — PreciseBN, the weighting
    rule's epoch step, logging, checkpoints — are ``hooks`` (:mod:`ums_rep.hooks`).

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
        optimizers: ``{"joint" | task | SHARED: optimizer}``: ``"joint"`` one optimizer on
            everything (joint), each task its whole model, or each task its head and
            :data:`ums_rep.engine.SHARED` the shared variables (:func:`ums_rep.engine.variable_groups`).
            Default: :func:`default_optimizers` with ``config.shared_optimizer``.
        weighting: The joint loss's rule (a :class:`ums_rep.weighting.Weighting`; default equal
            weights); its variables are checkpointed and :class:`ums_rep.hooks.WeightingStep`
            logs and steps it every epoch.
        hooks: The :class:`ums_rep.hooks.Hook` objects to run, in order; None:
            :func:`default_hooks` of ``config``. A list replaces the defaults: to add a hook,
            pass ``[*default_hooks(config), hook]``. The baseline runs every hook in each task's
            fit.
        dist: The ``tf.distribute`` strategy (default: the active one).
        joint_model: One model whose dict outputs are keyed by task (every task labels
            the same images); then ``train_data``/``val_data`` are single datasets and
            ``config.steps_per_epoch["joint"]`` sets the batches per epoch.

    Returns:
        ``{"history": [...], "seconds": {task: s}, "best_epoch": {group: e}, "stopped":
        {group: reason}, "schedule": {group: state}, "optimizers": {group: {"optimizer",
        "learning_rate"}}, "updates": {task: batches per epoch}}``. ``best_epoch`` (from 1),
        ``stopped`` and ``schedule`` are keyed by the plateau rule's group: each task under a
        per-task schedule (``independent``, ``baseline``), else :data:`ALL_TASKS` alone.
        ``seconds`` is every second of the fit (steps, validation, hooks: PreciseBN,
        checkpoints), each step's to its tasks and the rest shared evenly by the tasks training
        in that epoch.

    Raises:
        ValueError: An unknown strategy or ``config.monitor``, or a per-task schedule given an
            optimizer for shared variables.
        NonFiniteLossError: A non-finite loss with ``config.on_nonfinite="raise"``.
    """
    dist = dist or tf.distribute.get_strategy()
    if strategy_name not in REGISTRY:
        raise ValueError(f"unknown strategy {strategy_name!r}; expected one of {tuple(REGISTRY)}")
    if not REGISTRY[strategy_name].shared:
        return _fit_separately(models, tasks, train_data, val_data, config, optimizers=optimizers,
                               weighting=weighting, hooks=hooks, dist=dist)
    with synchronized_batch_norm(dist, [*models.values(), *([joint_model] if joint_model is not None else [])]):
        return _fit(strategy_name, models, tasks, train_data, val_data, config, optimizers=optimizers,
                    weighting=weighting, hooks=default_hooks(config) if hooks is None else list(hooks), dist=dist,
                    joint_model=joint_model)


def _fit(strategy_name: str, models: dict, tasks: dict, train_data, val_data, config: FitConfig, *,
         optimizers: dict | None, weighting, hooks: list, dist, joint_model) -> dict:
    """One shared strategy's loop (:func:`fit`'s arguments, ``hooks`` a list)."""
    started = time.perf_counter()
    if config.monitor not in MONITORS:
        raise ValueError(f"FitConfig.monitor must be one of {MONITORS}, got {config.monitor!r}")
    names = list(tasks)
    steps = {t: int(config.steps_per_epoch.get(t, 1)) for t in names}
    if optimizers is None:
        optimizers = default_optimizers(strategy_name, tasks, dist, config.shared_optimizer)
    spec = REGISTRY[strategy_name]
    engine = Engine(spec.order, models, tasks, optimizers, weighting, dist, joint_model, config.jit_compile)
    optimizers = {k: o for k, o in optimizers.items() if k in engine.variables}  # none for a frozen encoder
    if joint_model is not None:
        steps = {"joint": int(config.steps_per_epoch.get("joint", max(steps.values())))}
        iters = {"joint": iter(dist.experimental_distribute_dataset(train_data))}
    else:
        iters = {t: iter(dist.experimental_distribute_dataset(train_data[t])) for t in names}
    weighting_vars = list(engine.weighting.trainable_variables)
    per_task = spec.per_task_schedule  # each task its own rule, optimizer and best epoch
    if per_task and SHARED in optimizers:
        raise ValueError(f"{strategy_name}: a per-task schedule cannot also train shared variables "
                         "(their optimizer would follow no task's rule)")
    rules = ({t: PlateauRule([t], {t: optimizers[t]}, {t: models[t]}, config) for t in names} if per_task
             else {ALL_TASKS: PlateauRule(names, optimizers, models, config, weighting_vars)})  # σ reset too
    state = FitState(strategy_name, models, tasks, config, dist, engine, optimizers, iters, rules, joint_model,
                     seconds={t: 0.0 for t in names}, stopped={g: "epochs" for g in rules})
    for hook in hooks:
        hook.before_fit(state)  # Checkpoints: a resumed run's state
    if not state.finished:
        _share(state.seconds, names, time.perf_counter() - started)  # building the steps' state, the pipelines
        _epochs(state, hooks, val_data, steps)
    if config.restore_best:
        for rule in rules.values():
            rule.holder.restore_best()
    for hook in hooks:
        hook.after_fit(state)
    return _result(state, steps)


def _epochs(state: FitState, hooks: list, val_data, steps: dict) -> None:
    """The epochs of a fit, from the first not in ``state.history`` until the last, every rule's
    stop, a non-finite loss or a hook's stop; each epoch's hooks in their order (:mod:`ums_rep.hooks`)."""
    config, engine, rules, names = state.config, state.engine, state.rules, list(state.tasks)
    spec, per_task = REGISTRY[state.strategy], REGISTRY[state.strategy].per_task_schedule
    for epoch in range(len(state.history), config.epochs):
        t0 = time.perf_counter()
        active = [t for t in names if not rules[t if per_task else ALL_TASKS].stopped]
        if state.joint_model is not None:
            order = ["joint"] * steps["joint"]
        elif spec.order == "joint":
            order = joint_schedule(names, steps)
        else:
            order = alternating_schedule(active, config.ratio if spec.order == "alternating" else {}, steps)
        before = dict(state.seconds)
        means, nonfinite = _train_epoch(engine, order, state.iterators, names, state.joint_model, rules,
                                        state.seconds, epoch, config,
                                        f"{config.label or state.strategy} epoch {epoch + 1}/{config.epochs}")
        step_seconds = sum(state.seconds[t] - before[t] for t in names)  # this epoch's training steps
        if nonfinite is not None:
            state.stopped = {g: nonfinite for g in rules}
            return
        state.train_losses = means
        for hook in hooks:
            hook.before_validation(epoch, state)  # PreciseBN
        val = engine.evaluate(val_data)
        total_val = float(sum(val.values()))  # the unweighted sum of the task losses
        record = _epoch_record(epoch, time.perf_counter() - t0, total_val, means, val, rules)
        monitored = total_val  # the shared rule's value (config.monitor)
        if config.monitor == "weighted":
            monitored = record["val_weighted"] = _weighted_loss(engine.weighting, val)
        any_cut, any_reset = _schedule_step(rules, epoch, {g: val[g] if per_task else monitored for g in rules},
                                            state.stopped)
        for hook in hooks:
            hook.after_validation(epoch, record, state)  # the weighting rule's values and epoch step
        _stop_if_requested(state)
        record["lr_cut"], record["reset"] = any_cut, any_reset
        state.history.append(record)
        state.finished = all(r.stopped for r in rules.values()) or epoch + 1 == config.epochs
        # every second of the epoch counts (validation, PreciseBN, the schedule, the hooks), shared
        # evenly by the tasks it trained: what Tables 4, 6, 8, 10 compare is the whole fine-tuning
        _share(state.seconds, active, time.perf_counter() - t0 - step_seconds)
        t1 = time.perf_counter()
        for hook in hooks:
            hook.after_epoch(epoch, record, state)  # logging, the checkpoint, callbacks
        _share(state.seconds, active, time.perf_counter() - t1)
        _stop_if_requested(state)
        if all(r.stopped for r in rules.values()):
            return


def _stop_if_requested(state: FitState) -> None:
    """A hook's :meth:`ums_rep.hooks.FitState.request_stop`: every running rule stops, for its reason."""
    if state.stop_reason is None:
        return
    for g, rule in state.rules.items():
        if not rule.stopped:
            rule.stopped = True
            state.stopped[g] = state.stop_reason


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


def _fit_separately(models: dict, tasks: dict, train_data, val_data, config: FitConfig, *, optimizers, weighting,
                    hooks, dist) -> dict:
    """The baseline: each task's own model a ``joint`` fit of that task alone (checkpoints in
    ``checkpoint_dir/<task>``), returned keyed by task as ``independent``'s are (``optimizers``:
    each model's groups, the shared one as ``shared.<task>``)."""
    out = {"history": [], "seconds": {}, "best_epoch": {}, "stopped": {}, "schedule": {}, "optimizers": {},
           "updates": {}}
    for name in tasks:
        cfg = config if config.checkpoint_dir is None else replace(config, checkpoint_dir=config.checkpoint_dir / name)
        f = fit("joint", {name: models[name]}, {name: tasks[name]}, {name: train_data[name]}, {name: val_data[name]},
                cfg, optimizers=optimizers, weighting=weighting, hooks=hooks, dist=dist)
        out["history"] += [{"task": name, **h} for h in f["history"]]
        out["seconds"][name] = f["seconds"][name]
        out["updates"][name] = f["updates"][name]
        out["optimizers"].update({(k if k != SHARED else f"{SHARED}.{name}"): v for k, v in f["optimizers"].items()})
        for key in ("best_epoch", "stopped", "schedule"):
            out[key][name] = f[key][ALL_TASKS]
    return out


def default_optimizers(strategy_name: str, tasks: dict, dist=None, shared: tuple | None = None) -> dict:
    """The optimizers :func:`fit` builds when given none. With ``shared`` (kind, learning rate):
    each task's head its task's own (``Task.optimizer`` at ``Task.learning_rate``) and the shared
    variables ``shared``'s, under every strategy (:func:`ums_rep.engine.variable_groups`; UMS-Rep Section 4.2
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
                         f"{epoch + 1}; the best weights so far "
                         f"(epoch {best[ALL_TASKS] if ALL_TASKS in best else best}) "
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


def _result(state: FitState, steps: dict) -> dict:
    """What :func:`fit` returns: ``best_epoch``, ``stopped`` and ``schedule`` keyed by rule."""
    rules, engine = state.rules, state.engine
    lr0 = {k: v for rule in rules.values() for k, v in rule.lr0.items()}
    return {"history": state.history, "seconds": state.seconds,
            "optimizers": describe_optimizers({k: engine.optimizers[k] for k in engine.variables}, lr0),
            "updates": updates_per_epoch(engine, steps),
            "best_epoch": {g: r.schedule.best_epoch + 1 for g, r in rules.items()},
            "stopped": {g: state.stopped[g] for g in rules},
            "schedule": {g: r.schedule.state() for g, r in rules.items()}}
