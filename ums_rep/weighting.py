"""Loss-weighting rules: each turns ``{task: loss}`` into ``(total, {task: weight})``.

A rule is a small object (LibMTL's idea); the joint training loop never changes when one is
added. :class:`FixedWeights` is UMS-Rep's joint loss ``Σ w_i L_i`` (Section 2.3);
:class:`UncertaintyWeights` is the uncertainty weighting MTL1/MTL2/MTL3 of another paper;
:class:`DynamicWeightAverage` is Liu et al.'s DWA (CVPR 2019, Eq. 1), the example of a rule
that changes its weights between epochs.

What the loop (:func:`ums_rep.strategies.fit`) asks of a rule is :class:`Weighting`'s interface:

* ``rule(losses)`` → ``(total, weights)``, called inside the compiled step: read the weights
  from ``tf.Variable``s (not Python numbers), so changing them never retraces the step;
* ``trainable_variables`` — trained with the model by the joint optimizer (uncertainty σ);
* ``state_variables`` — other state, checkpointed each epoch so ``--resume`` continues it;
* ``on_epoch_end(epoch, losses)`` — after every epoch, with the epoch's mean *training* loss of
  each task (unweighted); the place to update epoch-level weights;
* ``values()`` — numbers logged in every epoch's history record; ``describe()`` — for results.json.

To add a rule: subclass :class:`Weighting` (and ``tf.Module`` if it holds variables) in this
file, decorate it with ``@register("name")``, and test it; :func:`get` then builds it by name.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

WEIGHTINGS: dict = {}


def register(name: str):
    """Class decorator: make a rule available as ``get(name, ...)``.

    Args:
        name: The rule's name (a ``--weighting`` choice once the command lists it).

    Returns:
        The decorator, which registers the class and returns it unchanged.

    Raises:
        ValueError: When the class is registered, if ``name`` is already taken.
    """
    def add(cls):
        if name in WEIGHTINGS:
            raise ValueError(f"weighting {name!r} is already registered ({WEIGHTINGS[name].__name__})")
        WEIGHTINGS[name] = cls
        return cls
    return add


def get(name: str, **kwargs):
    """The registered rule ``name`` built with ``kwargs`` (e.g. ``get("dwa", tasks=[...])``).

    Args:
        name: A registered rule: ``"fixed"``, ``"uncertainty"``, ``"dwa"`` or one added with
            :func:`register`.
        **kwargs: The rule's constructor arguments.

    Returns:
        The rule, a :class:`Weighting`. Under ``tf.distribute`` call it inside
        ``strategy.scope()`` so its variables are mirrored.

    Raises:
        ValueError: An unknown name (the message lists the known ones).
    """
    if name not in WEIGHTINGS:
        raise ValueError(f"unknown weighting {name!r}; expected one of {sorted(WEIGHTINGS)}")
    return WEIGHTINGS[name](**kwargs)


class Weighting:
    """The interface the training loop uses; every method but ``__call__`` has a default."""

    @property
    def trainable_variables(self) -> list:
        """Variables the step trains with the shared variables (uncertainty weighting's σ)."""
        return []

    @property
    def state_variables(self) -> list:
        """Further variables checkpointed every epoch, so ``--resume`` continues the rule."""
        return []

    def __call__(self, losses: dict):
        """The total loss, inside the compiled step.

        Args:
            losses: ``{task: scalar loss tensor}``.

        Returns:
            ``(total, weights)``: the scalar loss the step minimises and ``{task: weight}``.
        """
        raise NotImplementedError

    def on_epoch_end(self, epoch: int, losses: dict) -> None:
        """Called by the loop after every epoch with ``{task: mean training loss}``.

        Args:
            epoch: The epoch just finished, from 0.
            losses: ``{task: mean training loss}`` of that epoch.
        """

    def values(self) -> dict:
        """What the epoch's history record logs (e.g. ``{"sigma_disease": 1.2}``)."""
        return {}

    def describe(self) -> dict:
        """The rule's name and :meth:`values`, for ``results.json``."""
        return {"rule": type(self).__name__, **self.values()}


@register("fixed")
class FixedWeights(Weighting):
    """``L = Σ w_i L_i`` with constant weights (default 1 for every task)."""

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


@register("uncertainty")
class UncertaintyWeights(Weighting, tf.Module):
    """Uncertainty weighting: ``L = Σ_t [L_t/σ_t² + ln(σ_t + 1)]`` over the tasks whose
    σ is learned, plus ``L_t`` for the tasks whose σ is fixed to 1 (another paper's Eqs. 1, 4, 5).

    * MTL1 (Eq. 1): σ_s and σ_c both learned;
    * MTL2 (Eq. 4): σ_c = 1, σ_s learned;
    * MTL3 (Eq. 5): σ_s = 1, σ_c learned (the paper's best).

    σ is stored as ``log σ`` (initial 0 ⇒ σ = 1, always > 0), as in the authors' code.

    ``halved``: tasks whose term is ``L_t/(2σ_t²)`` instead of ``L_t/σ_t²`` (a fixed σ_t = 1:
    ``L_t/2``). The paper weights the saliency KLD by 1/σ_s² (Eqs. 1 and 4) and by 1 under MTL3
    (Eq. 5); the authors' public code (``compute_loss_image`` in ``Module/hzhu_MTL_UNet.py``)
    writes ``KLD/(2σ_s²)`` in every scheme, hence ½·KLD under MTL3 (:func:`mtl`'s ``form``). That
    code also adds ln(σ+1) = ln 2 for a fixed σ; a constant, left out here (no gradient, and no
    effect on which epoch is best). Create it inside ``strategy.scope()`` so σ are mirrored
    variables.
    """

    def __init__(self, learned, name: str = "uncertainty", halved=()):
        super().__init__(name=name)
        self.learned = tuple(learned)
        self.halved = tuple(halved)
        self.log_sigma = {t: tf.Variable(0.0, name=f"log_sigma_{t}", dtype=tf.float32) for t in self.learned}

    @property
    def trainable_variables(self):
        return [self.log_sigma[t] for t in self.learned]

    def sigma(self, task: str):
        return tf.exp(self.log_sigma[task]) if task in self.log_sigma else tf.constant(1.0)

    def __call__(self, losses: dict):
        terms, weights = [], {}
        for t, loss in losses.items():
            half = 0.5 if t in self.halved else 1.0
            if t in self.log_sigma:
                sigma = tf.exp(self.log_sigma[t])
                weights[t] = half / tf.square(sigma)
                terms.append(weights[t] * loss + tf.math.log(sigma + 1.0))
            else:
                weights[t] = tf.constant(half)
                terms.append(weights[t] * loss)
        return tf.add_n(terms), weights

    def values(self) -> dict:
        """``{"sigma_<task>": σ}`` for the learned σ, logged every epoch."""
        return {f"sigma_{t}": float(self.sigma(t).numpy()) for t in self.learned}

    def describe(self) -> dict:
        return {"rule": "uncertainty", "learned": list(self.learned), "halved": list(self.halved), **self.values()}


LOSS_FORMS = ("paper", "authors")  # mtl()'s form


def mtl(scheme: str, saliency: str, classification: str, form: str = "paper") -> UncertaintyWeights:
    """The saliency-and-classification uncertainty scheme by name: ``mtl1`` (Eq. 1), ``mtl2`` (Eq. 4) or ``mtl3`` (Eq. 5).

    ``form="paper"``: the saliency term is ``KLD/σ_s²`` (Eqs. 1, 4), ``KLD`` under MTL3 (Eq. 5);
    ``form="authors"``: ``KLD/(2σ_s²)`` in every scheme, ``KLD/2`` under MTL3, as the authors'
    public code computes it. The classification term is ``CE/σ_c²`` (``CE`` when fixed) in both."""
    learned = {"mtl1": (saliency, classification), "mtl2": (saliency,), "mtl3": (classification,)}
    if scheme not in learned:
        raise ValueError(f"unknown MTL scheme {scheme!r}; expected one of {sorted(learned)}")
    if form not in LOSS_FORMS:
        raise ValueError(f"unknown loss form {form!r}; expected one of {list(LOSS_FORMS)}")
    return UncertaintyWeights(learned[scheme], name=scheme, halved=(saliency,) if form == "authors" else ())


@register("dwa")
class DynamicWeightAverage(Weighting, tf.Module):
    """Dynamic Weight Average: S. Liu, E. Johns and A. J. Davison, *End-to-End Multi-Task
    Learning with Attention*, CVPR 2019, Eq. (1)::

        w_k(t) = K exp(r_k(t−1)/T) / Σ_i exp(r_i(t−1)/T),   r_k(t−1) = L_k(t−1) / L_k(t−2)

    ``L_k(t)`` is task k's mean training loss over epoch t, ``K`` the number of tasks and ``T``
    the temperature (2 in the paper); ``w_k(t) = 1`` for the first two epochs, which have no
    two earlier losses. The weights sum to K; a task whose loss falls more slowly than the
    others' gets more weight. ``L = Σ_k w_k L_k``.

    The weights live in non-trainable ``tf.Variable``s that :meth:`on_epoch_end` assigns, so the
    compiled step reads them and is never retraced; the last two epochs' losses and the epoch
    count are variables too, so a resumed run continues the rule. Create it inside
    ``strategy.scope()`` (as the models) to have mirrored variables under ``tf.distribute``.
    """

    def __init__(self, tasks, temperature: float = 2.0, name: str = "dwa"):
        super().__init__(name=name)
        self.tasks = tuple(tasks)
        if not self.tasks:
            raise ValueError("DWA needs at least one task")
        if not temperature > 0:
            raise ValueError(f"DWA temperature must be positive, got {temperature}")
        self.temperature = float(temperature)
        k = len(self.tasks)
        self.weight = tf.Variable(tf.ones([k]), trainable=False, name="dwa_weights")
        self.previous = tf.Variable(tf.zeros([2, k]), trainable=False, name="dwa_losses")  # L(t−2), L(t−1)
        self.epochs_seen = tf.Variable(0, dtype=tf.int64, trainable=False, name="dwa_epochs")

    @property
    def state_variables(self):
        return [self.weight, self.previous, self.epochs_seen]

    def __call__(self, losses: dict):
        unknown = set(losses) - set(self.tasks)
        if unknown:
            raise ValueError(f"DWA was built for tasks {list(self.tasks)}, got losses of {sorted(unknown)}")
        weights = {t: self.weight[i] for i, t in enumerate(self.tasks) if t in losses}
        return tf.add_n([weights[t] * losses[t] for t in losses]), weights

    @staticmethod
    def equation(before: np.ndarray, last: np.ndarray, temperature: float) -> np.ndarray:
        """Eq. (1): the weights from ``L(t−2)`` (``before``) and ``L(t−1)`` (``last``)."""
        before, last = np.asarray(before, np.float64), np.asarray(last, np.float64)
        ratio = np.divide(last, before, out=np.ones_like(last), where=before > 0)
        z = np.exp((ratio - ratio.max()) / temperature)  # shifted: the same softmax, no overflow
        return len(z) * z / z.sum()

    def on_epoch_end(self, epoch: int, losses: dict) -> None:
        last = np.array([float(losses[t]) for t in self.tasks], np.float32)
        before = self.previous.numpy()[1]
        self.previous.assign(np.stack([before, last]))
        self.epochs_seen.assign_add(1)
        if int(self.epochs_seen.numpy()) >= 2 and np.all(np.isfinite(np.stack([before, last]))):
            self.weight.assign(self.equation(before, last, self.temperature).astype(np.float32))

    def values(self) -> dict:
        """``{"weight_<task>": w}``: the weights the epoch trained with, logged every epoch."""
        return {f"weight_{t}": float(w) for t, w in zip(self.tasks, self.weight.numpy())}

    def describe(self) -> dict:
        return {"rule": "dwa", "temperature": self.temperature, **self.values()}
