"""TensorFlow Datasets builders for everyday data workflows; importing registers them."""

__version__ = "0.1.0"

# Importing the builder modules registers them with TFDS by name, so that
# `tfds.load("numpy_arrays/demo", data_dir=...)` works after `import tfds_builders`.
from tfds_builders import numpy_arrays  # noqa: E402,F401  pylint: disable=g-import-not-at-top

BUILDERS = ("numpy_arrays",)
