"""MT-UNet's "RLRP" scheduler (Section 3.3 and Appendix B): when the validation loss has not
improved for ``P`` epochs, cut the learning rate by 90% **and reset the weights to the best epoch
so far**; stop when the rate falls below 1e-8 or after ``2P + 3`` epochs without improvement
(the authors' code).

The bookkeeping is :class:`ums_rep.schedule.PlateauSchedule` (one scheduler for every loop):
:func:`rlrp_rule` states the rule once; :func:`fit_config_kwargs` gives it to the custom loop
(``ums_rep.strategies.fit`` acts on the schedule's decisions), and :class:`ResetOnPlateau` to
``model.fit`` as a Keras callback.
"""
from __future__ import annotations

import keras
import numpy as np

from ums_rep.schedule import PlateauSchedule

FACTOR = 0.1  # "reduces 90% of the learning rate"


def rlrp_rule(patience: int, min_lr: float = 1e-8) -> dict:
    """The RLRP rule as :class:`~ums_rep.schedule.PlateauSchedule` arguments."""
    return {"patience": patience, "factor": FACTOR, "min_lr": min_lr, "reset_to_best": True,
            "stop_patience": 2 * patience + 3}


def fit_config_kwargs(patience: int) -> dict:
    """The RLRP rule as :class:`ums_rep.strategies.FitConfig` fields (the custom loop)."""
    rule = rlrp_rule(patience)
    return {"lr_patience": rule["patience"], "lr_factor": rule["factor"], "reset_to_best": rule["reset_to_best"],
            "min_lr": rule["min_lr"], "stop_patience": rule["stop_patience"]}


class ResetOnPlateau(keras.callbacks.Callback):
    """RLRP for ``model.fit``: monitors ``monitor`` (lower is better); at a cut sets the
    optimizer's learning rate to a tenth and restores the best epoch's weights; stops training
    as :func:`rlrp_rule` says. ``events`` lists every cut ``{"epoch", "lr", "reset_to"}``."""

    def __init__(self, patience: int, monitor: str = "val_loss", min_lr: float = 1e-8):
        super().__init__()
        self.patience, self.monitor, self.min_lr = patience, monitor, min_lr
        self.schedule = None
        self.best_weights = None

    @property
    def events(self) -> list:
        return self.schedule.events if self.schedule else []

    def on_train_begin(self, logs=None):
        lr = float(np.asarray(self.model.optimizer.learning_rate))
        self.schedule = PlateauSchedule(lr=lr, **rlrp_rule(self.patience, self.min_lr))
        self.best_weights = self.model.get_weights()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.monitor not in logs:
            raise KeyError(f"ResetOnPlateau monitors {self.monitor!r}, but the epoch's logs have only "
                           f"{sorted(logs)}; pass validation data or change monitor")
        action = self.schedule.update(epoch, float(logs[self.monitor]))
        if action["improved"]:
            self.best_weights = self.model.get_weights()
        if action["reset"]:
            self.model.set_weights(self.best_weights)
        if action["cut"]:
            self.model.optimizer.learning_rate.assign(action["lr"])
        logs["lr"] = float(np.asarray(self.model.optimizer.learning_rate))
        if action["stop"]:
            self.model.stop_training = True
