"""MT-UNet's two tasks on the eye-gaze data (Section 3): the gaze saliency map and the disease
class, each a :class:`ums_rep.tasks.Task`.

This module is data: it imports neither TensorFlow nor pandas at load time, so the commands'
``--help`` can name the classes.
"""
from __future__ import annotations

from ums_rep.tasks import Task

SALIENCY, DISEASE = "saliency", "disease"
CLASSES = ("Normal", "CHF", "pneumonia")  # data_prep.egd.CLASSES (pandas-free here: --help)
TASKS = {SALIENCY: Task(SALIENCY, "saliency"), DISEASE: Task(DISEASE, "classification", classes=CLASSES)}
