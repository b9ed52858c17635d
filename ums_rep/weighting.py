"""Loss-weighting rules: each turns ``{task: loss}`` into ``(total, {task: weight})``.

A rule is a small object (LibMTL's idea); the joint training loop never changes when one is
added. :class:`FixedWeights` is UMS-Rep's joint loss ``Σ w_i L_i`` (Section 2.3).
"""
from __future__ import annotations

import tensorflow as tf


class FixedWeights:
    """``L = Σ w_i L_i`` with constant weights (default 1 for every task)."""

    trainable_variables: list = []

    def __init__(self, weights: dict | None = None):
        self.weights = dict(weights or {})
        bad = {k: v for k, v in self.weights.items() if not v >= 0}
        if bad:
            raise ValueError(f"loss weights must be non-negative numbers, got {bad}")

    def __call__(self, losses: dict):
        weights = {t: tf.constant(float(self.weights.get(t, 1.0))) for t in losses}
        total = tf.add_n([weights[t] * losses[t] for t in losses])
        return total, weights

    def describe(self) -> dict:
        return {"rule": "fixed", "weights": self.weights}


WEIGHTINGS = {"fixed": FixedWeights}


def get(name: str, **kwargs):
    if name not in WEIGHTINGS:
        raise ValueError(f"unknown weighting {name!r}; expected one of {sorted(WEIGHTINGS)}")
    return WEIGHTINGS[name](**kwargs)
