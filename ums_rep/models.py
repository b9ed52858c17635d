"""UMS-Rep's multi-task models (Sections 4.1.2 and 4.2; Figures 6 and 8): per-task models on one
shared encoder, and the baseline's separate models.

Head sizes. The paper's classification head is GAP → FC → Dropout → FC softmax and is reported
with 295,715 parameters (Tables 4–10) for every head, whatever the encoder's width or the number
of classes, so the figure cannot be reproduced exactly: on the CDAE's 256 latent channels a
2-class head would need 1,141.8 hidden units. We use 1,024 (the nearest power of two): 265,218
parameters on the CDAE (10% fewer), 134,146 on the echo encoder's 128 channels. The segmentation
head is reported with 786,497 parameters, about a whole CDAE (800,067): the paper fine-tunes the
entire autoencoder with its last layer replaced and counts it all as the head. Here the encoder
is shared and counted once (in the source model), and the head is the decoder alone (397,601
parameters on the CDAE).
"""
from __future__ import annotations

import hashlib

import keras
import numpy as np

from ums_rep import backbone_registry
from ums_rep.backbones import encoder as encoder_of
from ums_rep.heads import classification_head, segmentation_head



def copy_model(model: keras.Model) -> keras.Model:
    """A new model of the same architecture holding a copy of ``model``'s weights (no shared
    variables): each cross-validation fold starts from the same pretrained weights.

    Args:
        model: The model to copy.

    Returns:
        A new ``keras.Model`` with ``model``'s architecture and a copy of its weights.
    """
    clone = keras.Model.from_config(model.get_config())
    clone.set_weights(model.get_weights())
    return clone


def fresh_backbone(backbone: keras.Model) -> keras.Model:
    """The same architecture, randomly initialised (the baseline's starting point).

    Args:
        backbone: A pretrained backbone (:func:`ums_rep.backbones.cdae` or
            :func:`ums_rep.backbones.echo_encoder`).

    Returns:
        A new ``keras.Model`` of the same architecture with fresh weights.
    """
    return keras.Model.from_config(backbone.get_config())


def weights_digest(variables) -> str:
    """SHA-1 of the variables' values, to check that two folds start from the same encoder."""
    h = hashlib.sha1()
    for v in variables:
        h.update(np.ascontiguousarray(keras.ops.convert_to_numpy(v)).tobytes())
    return h.hexdigest()


def _upsampling_steps(enc: keras.Model) -> int:
    """How many stride-2 stages the encoder has: the decoder undoes each."""
    return sum(1 for layer in enc.layers if isinstance(layer, keras.layers.Conv2D) and layer.strides[0] > 1)


def build_shared(backbone: keras.Model, kind, specs, head: dict | None = None) -> tuple[dict, list]:
    """Per-task models ``{task: keras.Model}`` sharing ``backbone``'s encoder layers, and those
    layers. ``head`` overrides the record's ``default_heads`` (``head_units``, ``head_dropout``).

    Classification heads attach to the record's feature layer; a segmentation head mirrors the
    encoder's convolution widths, and where the record names a decoder to transfer (the CDAE,
    UMS-Rep 4.1.2: the whole CDAE with its output layer replaced) the head's decoder starts from
    that decoder's weights. Pass :func:`copy_model` of the pretrained backbone to get models that
    share nothing with another fold's.

    Args:
        backbone: The pretrained source model, e.g. the CDAE or the echo encoder.
        kind: Its :class:`ums_rep.backbone_registry.Backbone`, a backbone's name, or a modality
            (that modality's default backbone: ``"cxr"`` the CDAE, ``"echo"`` the echo encoder).
        specs: The task set's :class:`ums_rep.tasks.Spec` entries, one head per task.
        head: Overrides of the record's ``default_heads`` (``head_units``, ``head_dropout``), e.g. a head
            scan's ``best.json``.

    Returns:
        ``(models, encoder_layers)``: ``{task: keras.Model}`` sharing the encoder's layers, and
        those layers (to count the shared parameters once, or to freeze them).

    Raises:
        ValueError: ``kind`` names no registered backbone or modality.
    """
    record = backbone_registry.resolve(kind)
    enc = encoder_of(backbone, record)
    feats = enc.output
    filters = tuple(layer.filters for layer in enc.layers if isinstance(layer, keras.layers.Conv2D))
    steps = _upsampling_steps(enc)
    h = {**record.default_heads, **(head or {})}
    outputs = {}
    for s in specs:
        t = s.task
        if t.kind == "segmentation":
            outputs[t.name] = segmentation_head(feats, filters, name=t.name, steps=steps)
        else:
            outputs[t.name] = classification_head(feats, len(t.classes), name=t.name, units=int(h["head_units"]),
                                                  dropout=float(h["head_dropout"]))
    models = {name: keras.Model(enc.inputs, out, name=name) for name, out in outputs.items()}
    if record.decoder_to_transfer:
        for name, m in models.items():
            _transfer_decoder(m, f"{name}.dec", backbone, record.decoder_to_transfer)
    return models, list(enc.layers[1:])


def _transfer_decoder(model: keras.Model, prefix: str, backbone: keras.Model, source: str) -> None:
    """Copy the weights of ``backbone``'s decoder layers (names starting ``source``) into
    ``model``'s layers of the same names under ``prefix`` (``lung_seg.dec2.conv`` ←
    ``cdae.dec2.conv``)."""
    for layer in model.layers:
        if layer.name.startswith(prefix) and layer.weights:
            layer.set_weights(backbone.get_layer(source + layer.name[len(prefix):]).get_weights())


def head_params(model: keras.Model, encoder_layers) -> int:
    """Parameters of a task model's own layers (its head), excluding the shared encoder's.

    Args:
        model: A task model of :func:`build_shared`.
        encoder_layers: The shared encoder's layers (:func:`build_shared`'s second value).

    Returns:
        The number of parameters in ``model`` that are not the encoder's.
    """
    shared = {id(w) for layer in encoder_layers for w in layer.weights}
    return int(sum(int(np.prod(w.shape)) for w in model.weights if id(w) not in shared))


def baseline_model(backbone: keras.Model, kind, spec, head: dict | None = None,
                   denoiser: keras.Model | None = None) -> keras.Model:
    """One separate end-to-end model for one task (the paper's baseline, Figure 4): the backbone's
    architecture with random weights plus the task head; for CXR its input first passes through
    ``denoiser`` (the separately trained CDAE, frozen: a record's ``baseline_denoiser``).

    Args:
        backbone: The source model whose architecture the baseline copies (its weights are not
            used).
        kind: Its :class:`ums_rep.backbone_registry.Backbone`, a backbone's name, or a modality
            (see :func:`build_shared`).
        spec: The task's :class:`ums_rep.tasks.Spec`.
        head: Overrides of the record's ``default_heads``.
        denoiser: For CXR, the separately trained CDAE its input passes through first.

    Returns:
        The task's ``keras.Model``, named after the task.
    """
    models, _ = build_shared(fresh_backbone(backbone), kind, [spec], head)
    net = models[spec.task.name]
    if denoiser is None:
        return net
    inp = keras.Input(net.inputs[0].shape[1:])
    return keras.Model(inp, net(denoiser(inp)), name=spec.task.name)


def feature_layer(model: keras.Model) -> str | None:
    """The encoder feature layer Grad-CAM differentiates against, if ``model`` has one at top level.

    Args:
        model: A task model.

    Returns:
        The layer's name (a registered backbone's ``feature_layer``), or None.
    """
    record = backbone_registry.of_model(model)
    return record.feature_layer if record else None
