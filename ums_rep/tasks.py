"""Tasks and the paper's four task sets (UMS-Rep Section 4; SPEC "Target tasks").

A :class:`Task` is a name, what it predicts (its kind → loss and target), its classes and its
optimizer; a :class:`Spec` adds the data: which manifest rows the task uses and which column
holds its label. Classification heads use SGD and segmentation heads Adam, as in the paper
(Section 4.2)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from ums_rep import losses
from ums_rep.backbones import FLOW_CLASSES

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


@dataclass
class Spec:
    """A task of a set: which rows, which column is the label, the classes."""

    task: Task
    select: Callable  # manifest rows -> the rows this task trains and tests on
    label_column: str = "label"


def _cls(name, classes, column="label", optimizer="sgd", lr=1e-2):
    return Spec(Task(name, "classification", classes=tuple(classes), optimizer=optimizer, learning_rate=lr),
                lambda df, c=tuple(classes), col=column: df[df[col].astype(str).isin(c)], column)


def _seg(name):
    return Spec(Task(name, "segmentation", optimizer="adam", learning_rate=1e-3),
                lambda df: df[df["mask"].notna() & (df["mask"].astype(str) != "")])


TASK_SETS = {
    "cxr-hetero": {"modality": "cxr", "train": "shenzhen", "test": "montgomery",
                   "tasks": [_seg("lung_seg"), _cls("abnormal", ("normal", "tb"))]},
    "cxr-homo": {"modality": "cxr", "train": "kermany", "test": "kermany",
                 "tasks": [_cls("bacterial_vs_normal", ("normal", "bacterial")),
                           _cls("viral_vs_normal", ("normal", "viral")),
                           _cls("bacterial_vs_viral", ("bacterial", "viral"))]},
    "echo-hetero": {"modality": "echo", "train": "doppler", "test": "doppler",
                    "tasks": [_seg("envelope_seg"), _cls("flow", FLOW_CLASSES),
                              _cls("quality", ("low", "good"), column="quality")]},
    "echo-homo": {"modality": "echo", "train": "doppler", "test": "doppler",
                  "tasks": [_cls("mv_vs_ma", ("MV", "MA")), _cls("mv_vs_tr", ("MV", "TR")),
                            _cls("ma_vs_tr", ("MA", "TR"))]},
}
