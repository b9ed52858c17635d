"""What the training loop keeps of its weights: the per-epoch checkpoint a crashed run resumes
from (:class:`CheckpointStore`) and the in-memory best weights a plateau rule restores
(:class:`WeightsHolder`; UMS-Rep Section 4.1.1's reduce-on-plateau and early stopping).
"""
from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import numpy as np
import tensorflow as tf

from data_prep.io import atomic_write_bytes, atomic_write_text
from ums_rep.engine import unique_variables

log = logging.getLogger(__name__)


class CheckpointStore:
    """Per-epoch checkpoint (weights, optimizer state, the weighting rule's variables — σ, DWA's
    weights and loss history —, the training iterators' positions and hence the shuffle order),
    each rule's best weights (``best_<rule>.npz``: what its :class:`WeightsHolder` keeps, with
    ``FitConfig.reset_optimizer`` the best epoch's optimizer state too), and ``state.json``
    (history, schedules, timings): everything a run needs to continue after a crash.

    ``state.json`` is written atomically *after* the files it names, so a crash at any moment
    leaves a consistent earlier state (TF's CheckpointManager keeps the previous checkpoint until
    the next is complete; best weights are written under a new name, then named in the state).

    Args:
        folder: The checkpoint's folder; its ``state.json``, if any, is read (:attr:`state`).
        models: ``{task: keras.Model}``.
        optimizers: ``{group: optimizer}``: the caller's optimizers (not loss-scale wrappers).
        weighting_vars: The weighting rule's trainable and state variables.
        iters: ``{key: iterator}`` of the training data (distributed iterators are not saved).
    """

    def __init__(self, folder, models, optimizers, weighting_vars, iters):
        self.folder = Path(folder)
        weights = {f"model_{t}": m for t, m in models.items()}
        if weighting_vars:
            weights["weighting"] = weighting_vars
        self.epoch_var = tf.Variable(0, dtype=tf.int64, trainable=False)
        # Keras' dropout seed generators are not in the model's checkpoint graph: add them, so a
        # resumed run draws the same dropout masks as an uninterrupted one
        rng = unique_variables([v.value for m in models.values() for v in m.variables if is_seed_generator(v)])
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
        """Write epoch ``epoch``'s checkpoint: each rule's best weights where they changed, the
        models', optimizers' and iterators' state, then ``state.json`` (``state`` and the files).

        Args:
            epoch: Epochs completed, from 1.
            rules: ``{group: rule}``: the loop's plateau rules (their ``schedule.best_epoch`` and
                ``holder.best``).
            state: What ``state.json`` keeps besides the epoch and the best weights' files.
        """
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
        """Load each rule's best weights, then the last epoch into the models.

        Args:
            rules: ``{group: rule}``: the loop's plateau rules, whose ``holder.best`` is set.

        Returns:
            The saved ``state.json``.
        """
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


def is_seed_generator(variable) -> bool:
    """Whether ``variable`` is the state of a Keras seed generator (dropout's random stream)."""
    return "seed_generator" in getattr(variable, "path", "")


class WeightsHolder:
    """In-memory copy of the best weights of some models (shared layers copied once), of ``extra``
    variables (a weighting's σ) and of ``optimizers``' state (moments, iteration count; not the
    learning rate, which the schedule sets); random generator states are left alone, so a reset
    does not replay the same dropout masks.

    Args:
        models: ``{key: keras.Model}`` whose weights to keep.
        extra: Further variables to keep (a weighting's σ).
        optimizers: Optimizers whose state (:func:`optimizer_state`) to keep.
    """

    def __init__(self, models: dict, extra=(), optimizers=()):
        self.variables = unique_variables([v for m in models.values() for v in m.variables if not is_seed_generator(v)]
                                          + list(extra) + [v for o in optimizers for v in optimizer_state(o)])
        self.best = None

    def save_best(self):
        """Copy the variables' current values as the best."""
        self.best = [np.array(v.numpy()) for v in self.variables]

    def restore_best(self):
        """Assign the best values back (nothing before the first :meth:`save_best`)."""
        if self.best is not None:
            for v, value in zip(self.variables, self.best):
                v.assign(value)
