"""Tasks: a name, what it predicts, its loss, its optimizer (UMS-Rep Section 4; SPEC "Target
tasks"). The task sets of the paper are built by :mod:`ums_rep.finetune`."""
from __future__ import annotations

from dataclasses import dataclass, field

from ums_rep import losses

KIND_LOSS = {"classification": "cce", "segmentation": "bce_dice", "reconstruction": "mse", "saliency": "kld"}
KIND_TARGET = {"classification": "label", "segmentation": "mask", "reconstruction": "clean", "saliency": "saliency"}


@dataclass
class Task:
    """``target`` is the key of the pipeline's targets dict the loss compares against."""

    name: str
    kind: str
    classes: tuple = ()
    optimizer: str = "adam"
    learning_rate: float = 1e-3
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.kind not in KIND_LOSS:
            raise ValueError(f"task {self.name}: unknown kind {self.kind!r}; expected one of {sorted(KIND_LOSS)}")
        if self.kind == "classification" and len(self.classes) < 2:
            raise ValueError(f"task {self.name}: a classification task needs ≥ 2 classes, got {self.classes}")

    @property
    def target(self) -> str:
        return KIND_TARGET[self.kind]

    @property
    def loss(self):
        return losses.get(KIND_LOSS[self.kind])
