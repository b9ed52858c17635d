"""UMS-Rep: a shared modality-specific representation fine-tuned for many tasks (Hassan et al.)."""
__version__ = "0.1.0"  # setup.cfg reads it

import data_prep  # noqa: F401  (TensorFlow CPU defaults, set before TensorFlow loads)
