"""MT-UNet's "RLRP" scheduler (Section 3.3 and Appendix B): when the validation loss has not
improved for ``P`` epochs, cut the learning rate by 90% **and reset the weights to the best epoch
so far**; stop when the rate falls below 1e-8 or after ``2P + 3`` epochs without improvement
(the authors' code).

Where the paper is silent, the authors' public code (``Module/hzhu_learn.py``, ``NetLearn``;
``Module/RUN.py``) decides, and that is the default here (``schedule="authors"``, see
:data:`SCHEDULES`):

* **what is watched**: the loss it optimises, the weighting rule applied to the validation losses
  (``L_s/σ_s² + L_c/σ_c² + ln(σ+1)`` terms), not the unweighted sum ``L_s + L_c``;
* **when the rate is cut**: PyTorch's ``ReduceLROnPlateau`` cuts when the epochs without
  improvement *exceed* ``P``, i.e. on the (P+1)-th;
* **what a reset restores**: the best epoch's weights (and σ), its optimizer state (Adam's moments
  and step count; ``load_net`` reloads the optimizer's ``state_dict`` and keeps the cut rate) and
  its scheduler state (the best value, the count of epochs without improvement back to 0, which
  :class:`~ums_rep.schedule.PlateauSchedule` does at every cut).

``schedule="package"`` keeps this package's earlier choices (the unweighted sum, a cut on the P-th
epoch, weights and σ only), which are also UMS-Rep's fine-tuning defaults.

The bookkeeping is :class:`ums_rep.schedule.PlateauSchedule` (one scheduler for every loop):
:func:`rlrp_rule` states the rule once; :func:`fit_config_kwargs` gives it to the custom loop
(``ums_rep.strategies.fit`` acts on the schedule's decisions), and :class:`ResetOnPlateau` to
``model.fit`` as a Keras callback.
"""
from __future__ import annotations

import keras
import numpy as np

from ums_rep.schedule import PlateauSchedule
from ums_rep.checkpoints import optimizer_state

FACTOR = 0.1  # "reduces 90% of the learning rate"

# what the paper leaves open, as the authors' public code does it and as this package did before
SCHEDULES = {
    "authors": {"monitor": "weighted", "cut_rule": "exceed", "reset_optimizer": True},
    "package": {"monitor": "sum", "cut_rule": "reach", "reset_optimizer": False},
}


def _choices(schedule: str) -> dict:
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown RLRP schedule {schedule!r}; expected one of {list(SCHEDULES)}")
    return SCHEDULES[schedule]


def rlrp_rule(patience: int, min_lr: float = 1e-8, schedule: str = "authors") -> dict:
    """The RLRP rule as :class:`~ums_rep.schedule.PlateauSchedule` arguments."""
    return {"patience": patience, "factor": FACTOR, "min_lr": min_lr, "reset_to_best": True,
            "stop_patience": 2 * patience + 3, "cut_rule": _choices(schedule)["cut_rule"]}


def fit_config_kwargs(patience: int, schedule: str = "authors") -> dict:
    """The RLRP rule as :class:`ums_rep.strategies.FitConfig` fields (the custom loop)."""
    rule, choices = rlrp_rule(patience, schedule=schedule), _choices(schedule)
    return {"lr_patience": rule["patience"], "lr_factor": rule["factor"], "reset_to_best": rule["reset_to_best"],
            "min_lr": rule["min_lr"], "stop_patience": rule["stop_patience"], "lr_cut_rule": rule["cut_rule"],
            "monitor": choices["monitor"], "reset_optimizer": choices["reset_optimizer"]}


def describe(patience: int, schedule: str = "authors") -> dict:
    """The rule a run trained with, for ``results.json``."""
    kw = fit_config_kwargs(patience, schedule)
    return {"schedule": schedule, "patience": patience, "factor": kw["lr_factor"], "min_lr": kw["min_lr"],
            "stop_patience": kw["stop_patience"], "cut_rule": kw["lr_cut_rule"], "monitor": kw["monitor"],
            "reset": "weights, sigma and optimizer state" if kw["reset_optimizer"] else "weights and sigma"}


class ResetOnPlateau(keras.callbacks.Callback):
    """RLRP for ``model.fit``: monitors ``monitor`` (lower is better; ``val_loss`` is the compiled
    loss, the one optimised); at a cut sets the optimizer's learning rate to a tenth and restores
    the best epoch's weights and, under ``schedule="authors"``, its optimizer state (moments and
    iteration count); cuts and stops as :func:`rlrp_rule` says. ``events`` lists every cut
    ``{"epoch", "lr", "reset_to"}``."""

    def __init__(self, patience: int, monitor: str = "val_loss", min_lr: float = 1e-8, schedule: str = "authors"):
        super().__init__()
        self.patience, self.monitor, self.min_lr = patience, monitor, min_lr
        self.rule = schedule
        self.reset_optimizer = _choices(schedule)["reset_optimizer"]
        self.schedule = None
        self.best_weights = None
        self.best_optimizer = None

    @property
    def events(self) -> list:
        return self.schedule.events if self.schedule else []

    def on_train_begin(self, logs=None):
        lr = float(np.asarray(self.model.optimizer.learning_rate))
        self.schedule = PlateauSchedule(lr=lr, **rlrp_rule(self.patience, self.min_lr, self.rule))
        self.best_weights = self.model.get_weights()
        self.best_optimizer = None

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.monitor not in logs:
            raise KeyError(f"ResetOnPlateau monitors {self.monitor!r}, but the epoch's logs have only "
                           f"{sorted(logs)}; pass validation data or change monitor")
        action = self.schedule.update(epoch, float(logs[self.monitor]))
        if action["improved"]:
            self.best_weights = self.model.get_weights()
            if self.reset_optimizer:
                self.best_optimizer = [np.array(v.numpy()) for v in optimizer_state(self.model.optimizer)]
        if action["reset"]:
            self.model.set_weights(self.best_weights)
            if self.best_optimizer is not None:
                for v, value in zip(optimizer_state(self.model.optimizer), self.best_optimizer):
                    v.assign(value)
        if action["cut"]:
            self.model.optimizer.learning_rate.assign(action["lr"])
        logs["lr"] = float(np.asarray(self.model.optimizer.learning_rate))
        if action["stop"]:
            self.model.stop_training = True
