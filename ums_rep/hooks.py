"""Hooks on the training loop, in the manner of detectron2's ``HookBase`` and MONAI's handlers:
what :func:`ums_rep.strategies.fit` does around its steps besides training — PreciseBN, the
weighting rule's epoch step, logging, checkpoints — is a list of :class:`Hook` objects, and a new
behaviour is a new hook passed to ``fit``, not an edit of the loop.

Every epoch of a fit runs, in this order::

    training steps
    hook.before_validation(epoch, state)        # PreciseBN
    validation, the epoch's record, the plateau / early-stopping rules
    hook.after_validation(epoch, record, state) # the weighting rule's values and epoch step
    the record joins state.history; the epoch's seconds are counted
    hook.after_epoch(epoch, record, state)      # logging, the checkpoint, callbacks

with ``hook.before_fit(state)`` once before the first epoch (a resumed checkpoint is loaded there)
and ``hook.after_fit(state)`` once after the last (the best weights restored). Hooks run in the
order given, each point's for every hook before the next point. Every second a hook takes counts
in the fit's ``seconds`` (UMS-Rep Tables 4, 6, 8, 10 compare the whole fine-tuning): the
``before_validation`` and ``after_validation`` hooks' in the epoch's record, the ``after_epoch``
hooks' shared by the tasks that trained in the epoch.

:func:`ums_rep.strategies.default_hooks` builds the hooks of a :class:`ums_rep.strategies.FitConfig`
(what ``fit`` runs when given none): :class:`PreciseBatchNorm` with ``bn_images``,
:class:`WeightingStep`, :class:`LogEpoch`, and :class:`Checkpoints` with ``checkpoint_dir``.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

from ums_rep.batch_norm import precise_batch_norm
from ums_rep.checkpoints import CheckpointStore

log = logging.getLogger(__name__)


@dataclass
class FitState:
    """What a hook sees of the fit in progress (:func:`ums_rep.strategies.fit` makes it).

    Hooks may read everything and change ``history``'s last record through the ``record``
    they are given; a hook ends the fit with :meth:`request_stop`.

    Attributes:
        strategy: The strategy's name (a key of :data:`ums_rep.strategies.REGISTRY`).
        models: ``{task: keras.Model}``.
        tasks: ``{task: ums_rep.tasks.Task}``.
        config: The fit's :class:`ums_rep.strategies.FitConfig`.
        dist: The ``tf.distribute`` strategy.
        engine: The :class:`ums_rep.engine.Engine` (its ``weighting`` is the fit's rule).
        optimizers: ``{group: optimizer}`` the fit trains with (the caller's, not loss-scale
            wrappers; none for a frozen encoder).
        iterators: ``{task | "joint": iterator}`` over the training data.
        rules: ``{group: ums_rep.strategies.PlateauRule}``: one per task under a per-task
            schedule, else one, :data:`ums_rep.strategies.ALL_TASKS`.
        joint_model: The multi-output model, or None.
        history: One record per completed epoch.
        seconds: ``{task: seconds}`` of the fit so far.
        stopped: ``{group: why it stopped}`` (``"epochs"`` while it runs).
        train_losses: ``{task: mean training loss}`` of the epoch just trained.
        finished: The epoch just completed is the fit's last (or a resumed checkpoint had
            finished): every rule stopped, or the last epoch.
        stop_reason: Why a hook asked the fit to stop, or None.
    """

    strategy: str
    models: dict
    tasks: dict
    config: object
    dist: object
    engine: object
    optimizers: dict
    iterators: dict
    rules: dict
    joint_model: object = None
    history: list = field(default_factory=list)
    seconds: dict = field(default_factory=dict)
    stopped: dict = field(default_factory=dict)
    train_losses: dict = field(default_factory=dict)
    finished: bool = False
    stop_reason: str | None = None

    @property
    def all_models(self) -> list:
        """Every model the fit trains: the per-task models, then the joint model if any."""
        return [*self.models.values(), *([self.joint_model] if self.joint_model is not None else [])]

    def request_stop(self, reason: str) -> None:
        """End the fit after this epoch: every rule still running stops, ``reason`` its
        ``stopped``. Asked in ``before_validation`` or ``after_validation``, the epoch's
        checkpoint records the fit as finished (a resumed run then trains no further); asked in
        ``after_epoch``, it does not.

        Args:
            reason: Why, as the result's ``stopped`` gives it.
        """
        self.stop_reason = reason


class Hook:
    """A behaviour around the training loop's steps; every method is a no-op, so a hook
    overrides only the points it needs. See this module's docstring for when each runs.

    A hook object may serve several fits in turn (the baseline fits one model per task with the
    same hooks): keep per-fit state in ``before_fit``, not in ``__init__``.
    """

    def before_fit(self, state: FitState) -> None:
        """Once, before the first epoch (after the models, optimizers and rules are built).

        Args:
            state: The fit; a hook that loads a finished run sets ``state.finished``.
        """

    def before_validation(self, epoch: int, state: FitState) -> None:
        """After an epoch's training steps, before its validation.

        Args:
            epoch: The epoch just trained, from 0.
            state: The fit (``state.train_losses`` holds the epoch's training losses).
        """

    def after_validation(self, epoch: int, record: dict, state: FitState) -> None:
        """After validation and the plateau rules, before the record joins the history.

        Args:
            epoch: The epoch just trained, from 0.
            record: The epoch's history record (losses, learning rates); fields added here
                join the history, before ``lr_cut`` and ``reset``.
            state: The fit.
        """

    def after_epoch(self, epoch: int, record: dict, state: FitState) -> None:
        """At the end of every epoch: the record is ``state.history[-1]``.

        Args:
            epoch: The epoch just trained, from 0 (``record["epoch"]`` is ``epoch + 1``).
            record: The epoch's history record.
            state: The fit (``state.finished``: no epoch follows unless a hook's stop does).
        """

    def after_fit(self, state: FitState) -> None:
        """Once, after the last epoch, with the best weights restored (``restore_best``).

        Args:
            state: The fit.
        """


class PreciseBatchNorm(Hook):
    """Re-estimate batch norm on a batch of training images after every epoch's steps, before
    validation (:func:`ums_rep.batch_norm.precise_batch_norm`): the validation loss the
    plateau and early-stopping rules act on is then the weights', not the last batches' noise.

    Args:
        images: One batch of training images, ``(n, H, W, C)``, without augmentation
            (``FitConfig.bn_images``).
        chunk: Images per forward pass.
    """

    def __init__(self, images, chunk: int = 32):
        self.images, self.chunk = images, chunk

    def before_validation(self, epoch: int, state: FitState) -> None:
        """Set every trainable batch-norm layer of the fit's models from :attr:`images`.

        Args:
            epoch: The epoch just trained, from 0.
            state: The fit (its models and distribution strategy).
        """
        precise_batch_norm(state.all_models, self.images, state.dist, self.chunk)


class WeightingStep(Hook):
    """The loss-weighting rule's epoch step (:class:`ums_rep.weighting.Weighting`): its
    ``values()`` (what the epoch trained with, e.g. uncertainty σ) join the epoch's record, then
    its ``on_epoch_end(epoch, {task: mean training loss})`` prepares the next epoch (DWA's
    weights). A fit without it keeps a rule's weights as they are and logs none of them.
    """

    def after_validation(self, epoch: int, record: dict, state: FitState) -> None:
        """Log the rule's values in ``record``, then step the rule.

        Args:
            epoch: The epoch just trained, from 0.
            record: The epoch's history record, which gets the rule's values.
            state: The fit (its engine's weighting rule, the epoch's training losses).
        """
        weighting = state.engine.weighting
        record.update(weighting.values())  # what this epoch trained with
        weighting.on_epoch_end(epoch, state.train_losses)  # DWA: the next epoch's weights


class LogEpoch(Hook):
    """One log line per epoch: its training and validation losses and learning rates."""

    def after_epoch(self, epoch: int, record: dict, state: FitState) -> None:
        """Log ``record``'s ``train_*``, ``val_*`` and ``lr*`` numbers at INFO.

        Args:
            epoch: The epoch just trained, from 0.
            record: The epoch's history record.
            state: The fit.
        """
        log.info("epoch %d: %s", epoch + 1, ", ".join(f"{k} {v:.4g}" for k, v in record.items()
                                                       if k.startswith(("train_", "val_", "lr"))
                                                       and not isinstance(v, bool)))


class Checkpoints(Hook):
    """A checkpoint after every epoch in ``FitConfig.checkpoint_dir``
    (:class:`ums_rep.checkpoints.CheckpointStore`: weights, optimizer and weighting state, the
    input's position, each rule's best weights, the history, schedules and seconds), and with
    ``FitConfig.resume`` the fit continues from the last one. The folder is the fit's config's,
    so the baseline's fits, one per task, each write their own (``checkpoint_dir/<task>``).
    Nothing is written when the config names no folder.
    """

    def __init__(self):
        self.store = None

    def before_fit(self, state: FitState) -> None:
        """Open the checkpoint folder and, with ``resume``, load its last epoch into ``state``.

        Args:
            state: The fit; a resumed run's history, seconds, stop reasons, rules and weights
                are restored, and ``state.finished`` set if that run had finished.
        """
        config = state.config
        self.store = None
        if config.checkpoint_dir is None:
            return
        weighting = state.engine.weighting
        self.store = CheckpointStore(config.checkpoint_dir, state.models, state.optimizers,
                                     [*weighting.trainable_variables, *weighting.state_variables], state.iterators)
        if config.resume and self.store.state is not None:
            state.finished = self._resume(state)

    def _resume(self, state: FitState) -> bool:
        """Load the checkpoint into ``state``; True when that run had finished."""
        saved = self.store.restore(state.rules)
        state.history, state.seconds, state.stopped = saved["history"], saved["seconds"], saved["stopped"]
        for g, rule in state.rules.items():
            rule.schedule.load_state(saved["schedules"][g])
            rule.stopped = saved["rules_stopped"][g]
            rule.apply_lr()
        log.info("resumed from %s after epoch %d", state.config.checkpoint_dir, saved["epoch"])
        return bool(saved["finished"])

    def after_epoch(self, epoch: int, record: dict, state: FitState) -> None:
        """Save the epoch's checkpoint.

        Args:
            epoch: The epoch just trained, from 0.
            record: The epoch's history record (already in ``state.history``).
            state: The fit.
        """
        if self.store is None:
            return
        self.store.save(epoch + 1, state.rules, {
            "history": state.history, "seconds": state.seconds, "stopped": state.stopped,
            "schedules": {g: r.schedule.state() for g, r in state.rules.items()},
            "rules_stopped": {g: r.stopped for g, r in state.rules.items()},
            "finished": state.finished})


class EpochCallback(Hook):
    """Call a function after every epoch (after the checkpoint when it follows
    :class:`Checkpoints`).

    Args:
        function: Called as ``function(epoch, record)``, ``epoch`` from 0.
    """

    def __init__(self, function):
        self.function = function

    def after_epoch(self, epoch: int, record: dict, state: FitState) -> None:
        """Call :attr:`function` with the epoch and its record.

        Args:
            epoch: The epoch just trained, from 0.
            record: The epoch's history record.
            state: The fit.
        """
        self.function(epoch, record)
