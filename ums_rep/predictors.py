"""The run folders ``python -m ums_rep.predict`` reads, by the command that made them: a registry
(:data:`RUN_KINDS`) that :meth:`ums_rep.inference.Predictor.from_run` consults.

This module is light (no TensorFlow): another paper's package registers its training command
here when :func:`ums_rep.plugins.load` imports it, naming the function that reads its run
folders as ``"module:function"``, imported only when such a folder is predicted.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class RunKind:
    """How :meth:`ums_rep.inference.Predictor.from_run` reads the run folder of one command.

    Attributes:
        command: The command, as its run folder's args.json names it.
        members: ``"module:function"`` of ``(run folder, model file or None, path given, fold or
            None) → [ums_rep.inference.Member]``: the model set(s) to predict with; a member whose
            normaliser is None gets the run's ``normalizer.json``.
        geometry: ``"resize"`` or ``"letterbox"`` (:class:`ums_rep.inference.Geometry`).
        feature_layer: A layer Grad-CAM reads where :func:`ums_rep.models.feature_layer` finds
            none (None: none).
        folds: Whether the runs are cross-validated (``--fold`` picks one fold's models).
    """

    command: str
    members: str
    geometry: str = "resize"
    feature_layer: str | None = None
    folds: bool = False

    def read(self, run, model_file, given, fold) -> list:
        """The members of run folder ``run`` (see :attr:`members`)."""
        module, name = self.members.split(":")
        return getattr(importlib.import_module(module), name)(run, model_file, given, fold)


RUN_KINDS: dict[str, RunKind] = {}  # command → how predict reads its run folders


def register(kind: RunKind) -> None:
    """Let predict read the run folders of ``kind.command`` (another paper's package registers
    its training command).

    Args:
        kind: The command and how to read its run folders."""
    RUN_KINDS[kind.command] = kind


register(RunKind("ums_rep.finetune", "ums_rep.inference:finetune_members", folds=True))
register(RunKind("ums_rep.pretrain", "ums_rep.inference:pretrain_members"))
