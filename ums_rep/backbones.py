"""The shared, modality-specific encoders of UMS-Rep (paper Sections 4.1.1 and 4.2; Figures 6, 8).

* :func:`cdae` — the convolutional denoising autoencoder for chest X-ray: four 3×3 stride-2
  convolutions, each followed by batch norm and ReLU (no max-pooling), and a symmetric decoder of
  ×2 upsampling + 3×3 convolution + BN + ReLU, ending in a 1-channel linear convolution (the
  target is the clean, mean-normalised image, so no squashing output).
* :func:`echo_encoder` — the supervised dilated CNN for Doppler: six 3×3 "same" convolutions
  with ReLU, dilation in layers 4–6, then GAP → FC → Dropout → FC(3) softmax on flow type.

Layer names are ``<model>.<block>.<layer>``; the features heads attach to are named in
``FEATURES`` (Keras 3 forbids ``/`` in layer names, so DESIGN.md's ``cdae/enc2/conv`` is
written ``cdae.enc2.conv``).

Parameter counts. The paper reports 800,067 (CDAE) and 460,115 (echo encoder with its head)
but not the filter widths. With encoder widths 32-64-128-256 and the mirrored decoder, the
CDAE has 786,881 parameters (1.6% fewer than reported; convolutions followed by batch norm
carry no bias); the echo encoder with widths
32-32-64-64-128-128 and a 256-unit FC has 320,227 (30% fewer). No combination of
power-of-two widths and FC sizes we tried gives the paper's exact figures, so the widths are
arguments and the README states both numbers.

Resolution in the echo encoder. The paper names six "same" convolutions and no pooling; at
256×256 that costs about 40 GFLOP per image, so layers 2 and 3 use stride 2 (the parameter count
is unchanged; dilation in layers 4–6 then sees a 64×64 map, the "wider context" the paper wants).
"""
from __future__ import annotations

import keras
from keras import layers

from ums_rep.layers import BatchNorm

CDAE_FILTERS = (32, 64, 128, 256)
ECHO_FILTERS = (32, 32, 64, 64, 128, 128)
FLOW_CLASSES = ("MV", "MA", "TR")

FEATURES = {
    # the encoder's deepest features (where classification heads attach)
    "cdae": "cdae.enc4.relu",
    "echo": "echo.conv6.relu",
}


def _conv_bn_relu(x, filters, name, strides=1, dilation=1, kernel_size=3, batch_norm=True):
    # a bias before batch norm is cancelled by its mean subtraction: leave it out
    x = layers.Conv2D(filters, kernel_size, strides=strides, dilation_rate=dilation, padding="same",
                      use_bias=not batch_norm, name=f"{name}.conv")(x)
    if batch_norm:
        x = BatchNorm(name=f"{name}.bn")(x)
    return layers.ReLU(name=f"{name}.relu")(x)


def cdae(input_shape=(256, 256, 1), filters=CDAE_FILTERS, name: str = "cdae") -> keras.Model:
    """The denoising autoencoder; ``model.get_layer(f"{name}.enc4.relu")`` gives the latent."""
    if len(filters) != 4:
        raise ValueError(f"cdae needs four encoder widths, got {filters}")
    side = min(input_shape[:2])
    if side % 16:
        raise ValueError(f"cdae input side {input_shape[:2]} must be a multiple of 16 (four stride-2 convs)")
    inputs = keras.Input(input_shape, name=f"{name}.input")
    x = inputs
    for i, f in enumerate(filters, 1):
        x = _conv_bn_relu(x, f, f"{name}.enc{i}", strides=2)
    x = decoder(x, filters, name=f"{name}.dec")
    out = layers.Conv2D(1, 3, padding="same", name=f"{name}.out")(x)
    return keras.Model(inputs, out, name=name)


def decoder(x, encoder_filters=CDAE_FILTERS, name: str = "dec", batch_norm: bool = True, steps: int | None = None):
    """The decoder symmetric to a stride-2 encoder: for each encoder stage, ×2 upsampling then a
    3×3 conv + BN + ReLU, widths mirrored (the last stage keeps the first encoder width).
    ``steps`` upsampling stages (default: one per encoder stage); 0 keeps the resolution (for
    dilated encoders that never downsample)."""
    widths = list(encoder_filters[-2::-1]) + [encoder_filters[0]]
    steps = len(encoder_filters) if steps is None else steps
    for i, f in enumerate(widths, 1):
        if i <= steps:
            x = layers.UpSampling2D(2, interpolation="nearest", name=f"{name}{i}.up")(x)
        x = _conv_bn_relu(x, f, f"{name}{i}", batch_norm=batch_norm)
    return x


def echo_encoder(input_shape=(256, 256, 1), filters=ECHO_FILTERS, kernel_size: int = 3, dilation: int = 2,
                 dropout: float = 0.5, fc_units: int = 256, n_classes: int = len(FLOW_CLASSES),
                 name: str = "echo") -> keras.Model:
    """The dilated echo encoder with its flow-type head (Talos space: kernel {3,5,7},
    dilation {2,3}, dropout {0.1,0.3,0.5}); outputs flow-type probabilities."""
    if len(filters) != 6:
        raise ValueError(f"echo_encoder needs six widths, got {filters}")
    if kernel_size not in (3, 5, 7) or dilation < 1 or not 0 <= dropout < 1:
        raise ValueError(f"echo_encoder: kernel_size={kernel_size}, dilation={dilation}, dropout={dropout}")
    inputs = keras.Input(input_shape, name=f"{name}.input")
    x = inputs
    for i, f in enumerate(filters, 1):
        x = _conv_bn_relu(x, f, f"{name}.conv{i}", kernel_size=kernel_size,
                          dilation=dilation if i >= 4 else 1, batch_norm=False,
                          strides=2 if i in (2, 3) else 1)
    from ums_rep.heads import classification_head
    out = classification_head(x, n_classes, name=f"{name}.flow", units=fc_units, dropout=dropout)
    return keras.Model(inputs, out, name=name)


def encoder(model: keras.Model, kind: str) -> keras.Model:
    """The encoder part of a backbone: inputs → the named feature layer."""
    return keras.Model(model.inputs, model.get_layer(FEATURES[kind]).output, name=f"{model.name}.encoder")
