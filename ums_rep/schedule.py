"""Reduce-on-plateau with optional reset to the best epoch, and early stopping: one scheduler
for every training loop.

UMS-Rep reduces its learning rate when the validation loss plateaus and stops early (Section
4.1.1). Another paper's "RLRP" also **restores the best epoch's weights** at every cut,
and its authors' code stops when the rate falls below 1e-8 or after 2P+3 epochs without
improvement; ``reset_to_best=True`` gives that behaviour.

When to cut: ``cut_rule="reach"`` (the default, UMS-Rep's fine-tuning) cuts on the P-th epoch
without improvement; ``cut_rule="exceed"`` cuts when the epochs without improvement *exceed* P,
i.e. on the (P+1)-th, as PyTorch's ``ReduceLROnPlateau`` does (that other paper's rule in its authors' public code,
``Module/hzhu_learn.py``; the paper itself does not say).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

CUT_RULES = ("reach", "exceed")


@dataclass
class PlateauSchedule:
    """Call :meth:`update` once per epoch with the monitored validation loss (lower is better).

    It returns what the loop must do: ``cut`` (set the learning rate to ``lr``), ``reset``
    (restore the best weights), ``stop``; ``improved`` says whether this epoch is the new best.

    ``cut_rule``: "reach" cuts when the epochs without improvement since the last improvement or
    cut reach ``patience``; "exceed" when they exceed it (PyTorch's ``ReduceLROnPlateau``, and
    another paper's authors' public code). After a cut the count starts again from 0 and ``best`` is kept:
    the state of the best epoch, which is what the authors' code reloads with its scheduler.
    """

    lr: float
    patience: int = 10
    factor: float = 0.1
    min_lr: float = 1e-8
    reset_to_best: bool = False
    stop_patience: int | None = None  # epochs without improvement before stopping
    min_delta: float = 0.0
    cut_rule: str = "reach"  # or "exceed": the (P+1)-th epoch without improvement cuts
    best: float = math.inf
    best_epoch: int = -1
    wait: int = 0  # epochs since the last improvement or cut
    since_best: int = 0
    events: list = field(default_factory=list)

    def __post_init__(self):
        if not 0 < self.factor < 1:
            raise ValueError(f"factor must be in (0, 1), got {self.factor}")
        if self.patience < 1:
            raise ValueError(f"patience must be at least 1, got {self.patience}")
        if self.cut_rule not in CUT_RULES:
            raise ValueError(f"cut_rule must be one of {CUT_RULES}, got {self.cut_rule!r}")

    def update(self, epoch: int, value: float) -> dict:
        action = {"improved": False, "cut": False, "reset": False, "stop": False, "lr": self.lr}
        if not math.isfinite(value):
            action["stop"] = True
            return action
        if value < self.best - self.min_delta:
            self.best, self.best_epoch = value, epoch
            self.wait = self.since_best = 0
            action["improved"] = True
            return action
        self.wait += 1
        self.since_best += 1
        due = self.wait > self.patience if self.cut_rule == "exceed" else self.wait >= self.patience
        if due:
            self.lr *= self.factor
            self.wait = 0
            action.update(cut=True, reset=self.reset_to_best, lr=self.lr)
            self.events.append({"epoch": epoch, "lr": self.lr, "reset_to": self.best_epoch if self.reset_to_best else None})
        if self.lr < self.min_lr or (self.stop_patience is not None and self.since_best >= self.stop_patience):
            action["stop"] = True
        return action

    def state(self) -> dict:
        return {k: getattr(self, k) for k in ("lr", "best", "best_epoch", "wait", "since_best", "events")}

    def load_state(self, state: dict) -> None:
        for k, v in state.items():
            setattr(self, k, v)
