"""What each shared encoder is, in one record per backbone (in the manner of keras-hub's backbones
and presets): the model builder, pretraining, fine-tuning, scans and predict ask the record
instead of branching on a backbone's name.

A :class:`Backbone` names its modality, how it is built, what it is pretrained on and for (the
dataset and the target: UMS-Rep Section 4.1.1's denoising of chest X-rays, Section 4.2.1's
supervised flow type of Doppler images), the layer heads attach to, the decoder a segmentation
head starts from, and whether the baseline's input passes through it. :data:`BACKBONES` holds
the records by name; :func:`register_backbone` adds one (``python -m ums_rep.pretrain
--backbone`` lists them), and a third backbone is one more record: see the documentation's
"From Python" page and ``tests/ums_rep/test_toy_backbone.py``.

This module is light (no TensorFlow): the commands' ``--help`` lists the backbones. A record
names its builder as ``"module:function"`` (imported when a model is built) or holds the
function itself.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Callable, Mapping

from ums_rep.tasks import FLOW_CLASSES, Task

# a classification head's size on every backbone unless its record says otherwise (UMS-Rep 4.1.2:
# GAP → FC → Dropout → softmax); a head scan's best.json or --params overrides these keys
DEFAULT_HEADS = {"head_units": 1024, "head_dropout": 0.5}
CDAE_FILTERS = (32, 64, 128, 256)
ECHO_FILTERS = (32, 64, 64, 128, 128, 128)


@dataclass(frozen=True)
class Backbone:
    """One shared encoder and what the package needs to know about it.

    Attributes:
        name: The ``--backbone`` choice; the prefix of its layers' names.
        modality: The images it encodes: the ``modality`` of the task sets it serves
            (:data:`ums_rep.tasks.TASK_SETS`) and the key of the presets' image side.
        build: ``(image side, hyper-parameters, preset) → keras.Model``, or its
            ``"module:function"``: the hyper-parameters are :attr:`defaults` overridden by
            ``--params``; the preset is the ``pretrain`` stage's (e.g. its ``echo_strides``).
            The model is what pretraining trains: its output is :attr:`pretraining_target`'s.
        defaults: The hyper-parameters :attr:`build` and pretraining read (``optimizer`` and
            ``learning_rate`` among them); ``--params`` overrides these keys only.
        pretraining_data: The dataset (a ``data_prep`` layout) it is pretrained on.
        pretraining_target: What pretraining predicts: a ``reconstruction`` task (a denoising
            autoencoder: noisy input, clean target, the dataset's train/val/test splits, scored
            per noise level) or a ``classification`` task on :attr:`pretraining_label` (fold 0 of
            the train split validates, the test split is scored).
        pretraining_label: The manifest column a classification target reads (None otherwise).
        feature_layer: The encoder's deepest features: where classification heads attach, the
            end of :func:`ums_rep.backbones.encoder`, and Grad-CAM's layer.
        decoder_to_transfer: The prefix of the pretrained decoder's layers a segmentation head's
            decoder starts from (UMS-Rep 4.1.2: the CDAE with its output layer replaced), or None.
        baseline_denoiser: The baseline (UMS-Rep Figure 4) passes its input through this
            pretrained model, frozen, before its own network (the CXR baseline's denoiser).
        default_heads: The classification heads' size on this backbone (``head_units``,
            ``head_dropout``; default :data:`DEFAULT_HEADS`), unless a run's ``--params`` says
            otherwise.
        default_for_modality: The backbone ``finetune`` and ``scan`` pretrain for its modality
            when no ``--backbone`` or ``--encoder`` says otherwise (one per modality).
        description: One line for ``--help`` and the documentation.
    """

    name: str
    modality: str
    build: Callable | str
    defaults: Mapping = field(default_factory=dict)
    pretraining_data: str = ""
    pretraining_target: Task = field(default_factory=lambda: Task("denoise", "reconstruction"))
    pretraining_label: str | None = None
    feature_layer: str = ""
    decoder_to_transfer: str | None = None
    baseline_denoiser: bool = False
    default_heads: Mapping = field(default_factory=lambda: dict(DEFAULT_HEADS))
    default_for_modality: bool = False
    description: str = ""

    def __post_init__(self):
        object.__setattr__(self, "defaults", MappingProxyType(dict(self.defaults)))  # frozen all the way
        object.__setattr__(self, "default_heads", MappingProxyType({**DEFAULT_HEADS, **self.default_heads}))

    def builder(self) -> Callable:
        """The build function (:attr:`build`, imported if named as ``"module:function"``)."""
        if callable(self.build):
            return self.build
        module, name = self.build.split(":")
        return getattr(importlib.import_module(module), name)


BACKBONES: dict[str, Backbone] = {}  # name → record


def register_backbone(record: Backbone) -> Backbone:
    """Add a backbone to :data:`BACKBONES` (replacing one of the same name).

    Args:
        record: The backbone's record.

    Returns:
        The record.

    Raises:
        ValueError: A required field is empty, the target kind is neither reconstruction nor
            classification, or another backbone already is its modality's default or has its
            feature layer (predict tells backbones apart by it).
    """
    if not (record.name and record.modality and record.pretraining_data and record.feature_layer):
        raise ValueError(f"backbone {record.name!r}: name, modality, pretraining_data and feature_layer are required")
    if record.pretraining_target.kind not in ("reconstruction", "classification"):
        raise ValueError(f"backbone {record.name!r}: pretraining target kind {record.pretraining_target.kind!r} "
                         "is neither reconstruction nor classification")
    for other in BACKBONES.values():
        if other.name == record.name:
            continue
        if other.feature_layer == record.feature_layer:
            raise ValueError(f"backbone {record.name!r}: feature layer {record.feature_layer!r} is {other.name!r}'s")
        if record.default_for_modality and other.default_for_modality and other.modality == record.modality:
            raise ValueError(f"backbone {record.name!r}: {other.name!r} already is the {record.modality} default")
    BACKBONES[record.name] = record
    return record


def unregister_backbone(name: str) -> None:
    """Remove a backbone from :data:`BACKBONES` (a test's toy backbone, when it is done).

    Args:
        name: The backbone's name.
    """
    BACKBONES.pop(name, None)


def names() -> tuple:
    """The registered backbones' names (the ``--backbone`` choices).

    Returns:
        The names, in registration order.
    """
    return tuple(BACKBONES)


def get(name) -> Backbone:
    """The record of a backbone.

    Args:
        name: A registered backbone's name, or a :class:`Backbone` (returned as is).

    Returns:
        The record.

    Raises:
        ValueError: No backbone of that name.
    """
    if isinstance(name, Backbone):
        return name
    try:
        return BACKBONES[name]
    except KeyError:
        raise ValueError(f"unknown backbone {name!r}; registered: {', '.join(BACKBONES)}") from None


def default_for(modality: str) -> Backbone:
    """The backbone pretrained for ``modality`` when none is named.

    Args:
        modality: A task set's modality.

    Returns:
        The record with ``default_for_modality`` set for that modality.

    Raises:
        ValueError: No backbone is that modality's default.
    """
    for record in BACKBONES.values():
        if record.modality == modality and record.default_for_modality:
            return record
    raise ValueError(f"no default backbone for modality {modality!r}")


def resolve(kind) -> Backbone:
    """A record from a record, a backbone's name, or a modality (that modality's default
    backbone): what :func:`ums_rep.models.build_shared` and its callers accept.

    Args:
        kind: A :class:`Backbone`, a registered name, or a modality.

    Returns:
        The record.

    Raises:
        ValueError: Neither a backbone nor a modality with a default backbone.
    """
    if isinstance(kind, Backbone) or kind in BACKBONES:
        return get(kind)
    return default_for(kind)


def of_model(model) -> Backbone | None:
    """The backbone a model is built on: the record whose feature layer the model has at its top
    level (a pretrained backbone, or a fine-tuned model on its encoder).

    Args:
        model: A ``keras.Model``.

    Returns:
        The record, or None.
    """
    names_ = {layer.name for layer in model.layers}
    return next((r for r in BACKBONES.values() if r.feature_layer in names_), None)


def of_run(folder, model) -> Backbone | None:
    """The backbone of a run folder's model: the one its ``model_config.json`` names (every
    pretrain and finetune run writes it), else the one its ``args.json`` names (``--backbone`` of a
    pretrain run from before that file), else :func:`of_model`'s (an older run, or a name this
    process has not registered).

    Args:
        folder: The run folder (the model file's folder).
        model: Its ``keras.Model``, for :func:`of_model`.

    Returns:
        The record, or None.

    Raises:
        ValueError: One line naming the file, when ``model_config.json`` or ``args.json`` is unreadable.
    """
    import json
    from pathlib import Path

    from ums_rep import model_config  # here: this module stays light for the commands' --help

    config = model_config.read(folder)
    name = config.get("backbone") if config else None
    args = Path(folder) / "args.json"
    if config is None and args.is_file():
        try:
            saved = json.loads(args.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"{args}: cannot read ({e})") from None
        name = saved.get("backbone") if isinstance(saved, dict) else None
    return BACKBONES.get(name) or of_model(model)


register_backbone(Backbone(
    "cdae", "cxr", "ums_rep.backbones:build_cdae",
    defaults={"filters": list(CDAE_FILTERS), "optimizer": "rmsprop", "learning_rate": 1e-3},
    pretraining_data="rsna", pretraining_target=Task("denoise", "reconstruction"),
    feature_layer="cdae.enc4.relu", decoder_to_transfer="cdae.dec", baseline_denoiser=True,
    default_for_modality=True,
    description="the convolutional denoising autoencoder on RSNA chest X-rays (UMS-Rep Section 4.1.1)"))

register_backbone(Backbone(
    "echo", "echo", "ums_rep.backbones:build_echo",
    defaults={"filters": list(ECHO_FILTERS), "optimizer": "adam", "learning_rate": 1e-3, "kernel_size": 3,
              "dilation": 2, "dropout": 0.5, "fc_units": 256},
    pretraining_data="doppler", pretraining_target=Task("flow", "classification", classes=FLOW_CLASSES),
    pretraining_label="flow_type", feature_layer="echo.conv6.relu", default_for_modality=True,
    description="the dilated encoder on Doppler flow types (UMS-Rep Sections 4.2 and 4.2.1)"))
