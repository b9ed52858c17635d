"""UMS-Rep: a shared modality-specific representation fine-tuned for many tasks (Hassan et al.)."""
import data_prep  # noqa: F401  (TensorFlow CPU defaults, set before TensorFlow loads)
