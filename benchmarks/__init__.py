"""Performance benchmarks (python -m benchmarks.run)."""
import data_prep  # noqa: F401  (TensorFlow CPU defaults, set before TensorFlow loads)
