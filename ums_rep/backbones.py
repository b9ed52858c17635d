"""The shared, modality-specific encoders of UMS-Rep (paper Sections 4.1.1 and 4.2; Figures 6, 8).

* :func:`cdae` — the convolutional denoising autoencoder for chest X-ray: four 3×3 stride-2
  convolutions, each followed by batch norm and ReLU (no max-pooling), and a symmetric decoder of
  ×2 upsampling + 3×3 convolution + BN + ReLU, ending in a 1-channel linear convolution (the
  target is the clean, mean-normalised image, so no squashing output).
* :func:`echo_encoder` — the supervised dilated CNN for Doppler: six 3×3 "same" convolutions
  with ReLU, dilation in layers 4–6, then GAP → FC → Dropout → FC(3) softmax on flow type.

Layer names are ``<model>.<block>.<layer>``; the features heads attach to are named by each
backbone's record (:mod:`ums_rep.backbone_registry`, whose records build these models through
:func:`build_cdae` and :func:`build_echo`; Keras 3 forbids ``/`` in layer names, so a path like
``cdae/enc2/conv`` is written ``cdae.enc2.conv``).

Parameter counts. The paper reports 800,067 (CDAE) and 460,115 (echo encoder with its flow
head) but not the filter widths. With encoder widths 32-64-128-256 and the mirrored decoder the
CDAE has 786,881 parameters (1.6% fewer; convolutions followed by batch norm carry no bias).
The echo encoder (biased convolutions, no batch norm: the paper names only ReLU) with widths
32-64-64-128-128-128 and a 256-unit FC has 458,563 (0.34% fewer); no combination of common
widths we tried gives the exact figure, so the widths are arguments.

Resolution in the echo encoder. The paper's six "same" convolutions do not stride and have no
pooling (Section 4.2, Figure 8): that is the default (``strides=1``). At 256×256 that costs
about 45 GFLOP per image forward, so the package's CPU-sized presets (tiny, quick) pass
``strides=2``, which strides layers 2 and 3 (same parameters; dilation in layers 4–6 then sees
a quarter-resolution map); the paper preset keeps the paper's architecture.
"""
from __future__ import annotations

import keras
from keras import layers

from ums_rep import backbone_registry
from ums_rep.backbone_registry import CDAE_FILTERS, ECHO_FILTERS  # noqa: F401  (the widths' home is the records')
from ums_rep.heads import classification_head
from ums_rep.layers import conv_bn_relu, decoder
from ums_rep.tasks import FLOW_CLASSES


def cdae(input_shape=(256, 256, 1), filters=CDAE_FILTERS, name: str = "cdae") -> keras.Model:
    """The denoising autoencoder; ``model.get_layer(f"{name}.enc4.relu")`` gives the latent.

    Args:
        input_shape: ``(H, W, 1)``; the side must be a multiple of 16 (four stride-2 layers).
        filters: The four encoder widths; the decoder mirrors them.
        name: The model's name, the prefix of its layers' names.

    Returns:
        The CDAE, image to image (1 channel, linear output).

    Raises:
        ValueError: Not four widths, or a side that is not a multiple of 16.
    """
    if len(filters) != 4:
        raise ValueError(f"cdae needs four encoder widths, got {filters}")
    side = min(input_shape[:2])
    if side % 16:
        raise ValueError(f"cdae input side {input_shape[:2]} must be a multiple of 16 (four stride-2 convs)")
    inputs = keras.Input(input_shape, name=f"{name}.input")
    x = inputs
    for i, f in enumerate(filters, 1):
        x = conv_bn_relu(x, f, f"{name}.enc{i}", strides=2)
    x = decoder(x, filters, name=f"{name}.dec")
    # float32 under a mixed policy: the reconstruction and its MSE keep full precision
    out = layers.Conv2D(1, 3, padding="same", name=f"{name}.out", dtype="float32")(x)
    return keras.Model(inputs, out, name=name)


def echo_encoder(input_shape=(256, 256, 1), filters=ECHO_FILTERS, kernel_size: int = 3, dilation: int = 2,
                 dropout: float = 0.5, fc_units: int = 256, n_classes: int = len(FLOW_CLASSES),
                 strides: int = 1, name: str = "echo") -> keras.Model:
    """The dilated echo encoder with its flow-type head (Talos space: kernel {3,5,7},
    dilation {2,3}, dropout {0.1,0.3,0.5}); outputs flow-type probabilities. ``strides=2``
    strides layers 2 and 3 (the CPU presets; the paper's encoder does not stride).

    Args:
        input_shape: ``(H, W, 1)``.
        filters: The six convolutions' widths.
        kernel_size: 3, 5 or 7.
        dilation: The dilation of layers 4-6.
        dropout: The flow head's dropout rate.
        fc_units: The flow head's hidden units.
        n_classes: Flow types (MV, MA, TR).
        strides: 1 (the paper) or 2 (layers 2 and 3 stride: the tiny and quick presets).
        name: The model's name, the prefix of its layers' names.

    Returns:
        The encoder with its flow-type head, image to class probabilities.

    Raises:
        ValueError: Not six widths, or a kernel size, dilation, dropout or stride out of range.
    """
    if len(filters) != 6:
        raise ValueError(f"echo_encoder needs six widths, got {filters}")
    if kernel_size not in (3, 5, 7) or dilation < 1 or not 0 <= dropout < 1 or strides not in (1, 2):
        raise ValueError(f"echo_encoder: kernel_size={kernel_size}, dilation={dilation}, dropout={dropout}, "
                         f"strides={strides}")
    inputs = keras.Input(input_shape, name=f"{name}.input")
    x = inputs
    for i, f in enumerate(filters, 1):
        x = conv_bn_relu(x, f, f"{name}.conv{i}", kernel_size=kernel_size,
                         dilation=dilation if i >= 4 else 1, batch_norm=False,
                         strides=strides if i in (2, 3) else 1)
    out = classification_head(x, n_classes, name=f"{name}.flow", units=fc_units, dropout=dropout)
    return keras.Model(inputs, out, name=name)


def build_cdae(side: int, params: dict, preset: dict) -> keras.Model:
    """The ``cdae`` record's builder (:mod:`ums_rep.backbone_registry`; UMS-Rep Section 4.1.1).

    Args:
        side: The image side.
        params: The record's defaults overridden by ``--params``: ``filters``.
        preset: The ``pretrain`` stage's preset (unused).

    Returns:
        :func:`cdae` on ``(side, side, 1)`` images.
    """
    return cdae((side, side, 1), filters=tuple(params["filters"]))


def build_echo(side: int, params: dict, preset: dict) -> keras.Model:
    """The ``echo`` record's builder (:mod:`ums_rep.backbone_registry`; UMS-Rep Sections 4.2 and
    4.2.1).

    Args:
        side: The image side.
        params: The record's defaults overridden by ``--params``: ``filters``, ``kernel_size``,
            ``dilation``, ``dropout``, ``fc_units``.
        preset: The ``pretrain`` stage's preset: its ``echo_strides`` (1 when absent).

    Returns:
        :func:`echo_encoder` on ``(side, side, 1)`` images.
    """
    return echo_encoder((side, side, 1), filters=tuple(params["filters"]), kernel_size=int(params["kernel_size"]),
                        dilation=int(params["dilation"]), dropout=float(params["dropout"]),
                        fc_units=int(params["fc_units"]), strides=int(preset.get("echo_strides", 1)))


def encoder(model: keras.Model, kind=None) -> keras.Model:
    """The encoder part of a backbone: inputs → its record's feature layer.

    Args:
        model: A backbone, e.g. built by :func:`cdae` or :func:`echo_encoder`.
        kind: The backbone's record or name, or a modality (its default backbone; see
            :func:`ums_rep.backbone_registry.resolve`); None: the record whose feature layer
            ``model`` has.

    Returns:
        A ``keras.Model`` sharing ``model``'s layers, from its input to its feature layer.

    Raises:
        ValueError: ``kind`` is None and ``model`` has no registered backbone's feature layer.
    """
    record = backbone_registry.of_model(model) if kind is None else backbone_registry.resolve(kind)
    if record is None:
        raise ValueError(f"{model.name}: no registered backbone's feature layer "
                         f"({', '.join(r.feature_layer for r in backbone_registry.BACKBONES.values())})")
    return keras.Model(model.inputs, model.get_layer(record.feature_layer).output, name=f"{model.name}.encoder")
