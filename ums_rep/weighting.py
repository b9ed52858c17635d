"""Loss-weighting rules: each turns ``{task: loss}`` into ``(total, {task: weight})``.

A rule is a small object (LibMTL's idea); the joint training loop never changes when one is
added. :class:`FixedWeights` is UMS-Rep's joint loss ``Σ w_i L_i`` (Section 2.3);
:class:`UncertaintyWeights` is MT-UNet's MTL1/MTL2/MTL3 (Eqs. 1, 4, 5).
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


class UncertaintyWeights(tf.Module):
    """MT-UNet's uncertainty weighting: ``L = Σ_t [L_t/σ_t² + ln(σ_t + 1)]`` over the tasks whose
    σ is learned, plus ``L_t`` for the tasks whose σ is fixed to 1 (MT-UNet Eqs. 1, 4, 5).

    * MTL1 (Eq. 1): σ_s and σ_c both learned;
    * MTL2 (Eq. 4): σ_c = 1, σ_s learned;
    * MTL3 (Eq. 5): σ_s = 1, σ_c learned (the paper's best).

    σ is stored as ``log σ`` (initial 0 ⇒ σ = 1, always > 0), as in the authors' code. We
    implement the paper's form ``L/σ²`` for both tasks; the authors' code writes the saliency
    term ``L_s/(2σ²)``. Create it inside ``strategy.scope()`` so σ are mirrored variables.
    """

    def __init__(self, learned, name: str = "uncertainty"):
        super().__init__(name=name)
        self.learned = tuple(learned)
        self.log_sigma = {t: tf.Variable(0.0, name=f"log_sigma_{t}", dtype=tf.float32) for t in self.learned}

    @property
    def trainable_variables(self):
        return [self.log_sigma[t] for t in self.learned]

    def sigma(self, task: str):
        return tf.exp(self.log_sigma[task]) if task in self.log_sigma else tf.constant(1.0)

    def __call__(self, losses: dict):
        terms, weights = [], {}
        for t, loss in losses.items():
            if t in self.log_sigma:
                sigma = tf.exp(self.log_sigma[t])
                weights[t] = 1.0 / tf.square(sigma)
                terms.append(weights[t] * loss + tf.math.log(sigma + 1.0))
            else:
                weights[t] = tf.constant(1.0)
                terms.append(loss)
        return tf.add_n(terms), weights

    def values(self) -> dict:
        """``{"sigma_<task>": σ}`` for the learned σ, logged every epoch."""
        return {f"sigma_{t}": float(self.sigma(t).numpy()) for t in self.learned}

    def describe(self) -> dict:
        return {"rule": "uncertainty", "learned": list(self.learned), **self.values()}


def mtl(scheme: str, saliency: str, classification: str) -> UncertaintyWeights:
    """MT-UNet's scheme by name: ``mtl1`` (Eq. 1), ``mtl2`` (Eq. 4) or ``mtl3`` (Eq. 5)."""
    learned = {"mtl1": (saliency, classification), "mtl2": (saliency,), "mtl3": (classification,)}
    if scheme not in learned:
        raise ValueError(f"unknown MTL scheme {scheme!r}; expected one of {sorted(learned)}")
    return UncertaintyWeights(learned[scheme], name=scheme)


WEIGHTINGS = {"fixed": FixedWeights, "uncertainty": UncertaintyWeights}


def get(name: str, **kwargs):
    if name not in WEIGHTINGS:
        raise ValueError(f"unknown weighting {name!r}; expected one of {sorted(WEIGHTINGS)}")
    return WEIGHTINGS[name](**kwargs)
