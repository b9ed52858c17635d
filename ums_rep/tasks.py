"""Tasks, the paper's four task sets and their cross-validation folds (UMS-Rep Section 4).

A :class:`Task` is a name, what it predicts (its kind → loss and target), its classes and its
optimizer; a :class:`Spec` adds the data: which manifest rows the task uses and which column
holds its label. Classification heads use SGD and segmentation heads Adam, as in the paper
(Section 4.2); a preset's ``classification_optimizer`` replaces the classification heads' for
every arm alike (the quick preset's Adam at 1e-3, :mod:`ums_rep.presets`).

Each task set names where its cross-validation *pool* and its *test* images come from
(Sections 4.1.2 and 4.2): all of Shenzhen with Montgomery as external test (cxr-hetero); the
Kermany training set with its published test split (cxr-homo); the 20% Doppler pool left after
building the encoder, with the 10% test split (echo sets). :func:`cross_validation` partitions
the pool into k patient-level, class-stratified folds computed on the pool itself, so the folds
are distinct whatever carved the pool out of the dataset.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    import pandas as pd

# This module is data: it imports neither TensorFlow nor pandas/scikit-learn at load time, so the
# commands' --help can list the task sets (the losses and the fold assignment load when used).
FLOW_CLASSES = ("MV", "MA", "TR")  # Doppler flow types; data_prep.doppler.CLASSES (pandas-free here: --help)

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
        from ums_rep import losses
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


# pool: which rows of the training dataset are cross-validated ("all", "non-test" = every split
# but the prepared test split, "val" = the prepared 20% part); test: the dataset scored after
# training, and with test_split its rows of that split only.
TASK_SETS = {
    "cxr-hetero": {"modality": "cxr", "train": "shenzhen", "test": "montgomery", "pool": "all", "test_split": None,
                   "tasks": [_seg("lung_seg"), _cls("abnormal", ("normal", "tb"))]},
    "cxr-homo": {"modality": "cxr", "train": "kermany", "test": "kermany", "pool": "non-test", "test_split": "test",
                 "tasks": [_cls("bacterial_vs_normal", ("normal", "bacterial")),
                           _cls("viral_vs_normal", ("normal", "viral")),
                           _cls("bacterial_vs_viral", ("bacterial", "viral"))]},
    "echo-hetero": {"modality": "echo", "train": "doppler", "test": "doppler", "pool": "val", "test_split": "test",
                    "tasks": [_seg("envelope_seg"), _cls("flow", FLOW_CLASSES),
                              _cls("quality", ("low", "good"), column="quality")]},
    "echo-homo": {"modality": "echo", "train": "doppler", "test": "doppler", "pool": "val", "test_split": "test",
                  "tasks": [_cls("mv_vs_ma", ("MV", "MA")), _cls("mv_vs_tr", ("MV", "TR")),
                            _cls("ma_vs_tr", ("MA", "TR"))]},
}


# every classification task by name: (its task set, its spec) — what ``scan --model head --task`` trains
CLASSIFICATION_TASKS = {s.task.name: (set_name, s) for set_name, d in TASK_SETS.items() for s in d["tasks"]
                        if s.task.kind == "classification"}
HOLDOUT_PARTS = 5  # --folds 1: one fold of a 5-fold partition validates (a single 80/20 hold-out)


@dataclass
class CrossValidation:
    """The pool of one task set with its ``cv_fold`` column, the test rows, and the folds to run."""

    pool: pd.DataFrame
    test: pd.DataFrame
    n_parts: int  # folds the pool is partitioned into
    n_runs: int  # folds trained: all of them, or one for a hold-out

    def digest(self) -> str:
        """SHA-1 of the fold assignment (pool image ids with their folds) and the test image ids:
        runs compared with one another must share it."""
        import hashlib
        pool = sorted(zip(self.pool["id"].astype(str), self.pool["cv_fold"].astype(int)))
        text = repr((pool, sorted(self.test["id"].astype(str))))
        return hashlib.sha1(text.encode()).hexdigest()

    def fold(self, k: int) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Training and validation rows of fold ``k``: fold k validates, the others train."""
        if not 0 <= k < self.n_runs:
            raise ValueError(f"fold {k} outside 0..{self.n_runs - 1}")
        return self.pool[self.pool.cv_fold != k], self.pool[self.pool.cv_fold == k]


def cross_validation(set_name: str, train_manifest: pd.DataFrame, test_manifest: pd.DataFrame, folds: int,
                     seed: int = 0, stratify: str = "label") -> CrossValidation:
    """k-fold cross-validation of a task set (``folds`` ≥ 2: all k folds run; 1: one hold-out fold
    of :data:`HOLDOUT_PARTS`). Patients never straddle folds; classes are stratified. A pool with
    fewer patients of a class than folds is refused, naming the dataset, class and counts."""
    from data_prep.splits import assign_folds, check_no_leakage
    sdef = TASK_SETS[set_name]
    df = train_manifest
    pool = {"all": df, "non-test": df[df.split != "test"], "val": df[df.split == "val"]}[sdef["pool"]]
    test = test_manifest if sdef["test_split"] is None else test_manifest[test_manifest.split == sdef["test_split"]]
    if folds < 1:
        raise ValueError(f"--folds must be at least 1, got {folds}")
    parts = HOLDOUT_PARTS if folds == 1 else folds
    where = f"{sdef['train']} ({set_name} cross-validation pool)"
    if pool.empty or test.empty:
        raise ValueError(f"{where}: no {'pool' if pool.empty else 'test'} images")
    patients = pool.groupby(pool[stratify].astype(str))["patient_id"].nunique()
    short = patients[patients < parts]
    if len(short):
        raise ValueError(f"{where}: too few patients for {parts} folds — "
                         + ", ".join(f"class {c!r} has {n}" for c, n in short.items())
                         + f" (patients per class: {({str(c): int(n) for c, n in patients.items()})})")
    pool = pool.assign(cv_fold=assign_folds(pool, parts, stratify, seed).to_numpy())
    check_no_leakage(pool, "cv_fold", where)
    return CrossValidation(pool, test, parts, 1 if folds == 1 else parts)
