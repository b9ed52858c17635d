"""Batch norm in the training loop: PreciseBN after every epoch (:func:`precise_batch_norm`, for
the small target sets of UMS-Rep's tasks) and batch norm synchronised over replicas
(:func:`synchronized_batch_norm`), so a run on several devices normalises as a run on one.
"""
from __future__ import annotations

import contextlib

import keras
import tensorflow as tf


def batch_norm_layers(models) -> list:
    """The batch-norm layers of ``models``, each once (tasks share the encoder's layers).

    Args:
        models: Keras models.

    Returns:
        The ``keras.layers.BatchNormalization`` layers, in the models' order.
    """
    layers = [layer for m in models for layer in m._flatten_layers(include_self=False)
              if isinstance(layer, keras.layers.BatchNormalization)]
    return list({id(layer): layer for layer in layers}.values())  # tasks share the encoder's layers


def precise_batch_norm(models, images, dist=None, chunk: int = 32) -> int:
    """Set every trainable batch-norm layer's moving statistics to those of ``images`` (one batch
    of training images, no augmentation): PreciseBN (Wu & Johnson 2021, "Rethinking 'Batch' in
    BatchNorm", Section 3). The moving averages otherwise hold the last few batches, taken with
    weights that have since moved; with the small target sets of UMS-Rep's tasks (10-20 batches
    an epoch) the validation loss they give swings by a factor of 4 from one epoch to the next
    while its AUC hardly moves, and the plateau and early-stopping rules then act on that noise.
    Frozen layers (``trainable = False``: the independent strategy's encoder) keep theirs.
    The images go through in chunks of ``chunk`` (bounded memory at the paper's 256 px); each
    layer then holds the mean of the chunks' means and of their variances, as PreciseBN does.

    Args:
        models: The Keras models whose batch-norm layers to set (layers shared between them are
            set once).
        images: One batch of training images, ``(n, H, W, C)``, without augmentation.
        dist: The ``tf.distribute`` strategy to run the forward passes under (default: the
            active one).
        chunk: Images per forward pass.

    Returns:
        The number of batch-norm layers set.
    """
    dist = dist or tf.distribute.get_strategy()
    layers = [layer for layer in batch_norm_layers(models) if layer.trainable]
    if not layers:
        return 0
    momentum = [layer.momentum for layer in layers]
    chunks = [images[i:i + chunk] for i in range(0, int(images.shape[0]), chunk)]
    done = set()
    try:
        for model in models:
            own = {id(layer) for layer in batch_norm_layers([model]) if layer.trainable}
            if own <= done:  # a shared encoder's layers, already set from the same images
                continue
            done |= own
            for k, part in enumerate(chunks):
                for layer in layers:  # a running mean over the chunks: chunk k weighs 1/(k+1)
                    layer.momentum = k / (k + 1)
                dist.run(lambda x, m=model: m(x, training=True), args=(part,))
    finally:
        for layer, m in zip(layers, momentum):
            layer.momentum = m
    return len(layers)



@contextlib.contextmanager
def synchronized_batch_norm(dist, models):
    """Over several replicas (several workers, or devices), batch norm normalises with the
    global batch's statistics and every replica keeps the same moving statistics, as on one
    device: Keras' layers otherwise keep each worker's own (their moving statistics have
    ``aggregation="none"``). The flags are restored afterwards, so saved models are unchanged.

    Args:
        dist: The ``tf.distribute`` strategy; with one replica nothing changes.
        models: The Keras models whose batch-norm layers to synchronise while the context lasts.

    Yields:
        Nothing: the body runs with the layers synchronised.
    """
    layers = [layer for layer in batch_norm_layers(models) if not layer.synchronized] \
        if dist.num_replicas_in_sync > 1 else []
    for layer in layers:
        layer.synchronized = True
    try:
        yield
    finally:
        for layer in layers:
            layer.synchronized = False
