"""Installs tfds_builders: TensorFlow Datasets builders for everyday data workflows."""

import pathlib
import re

import setuptools

_ROOT = pathlib.Path(__file__).parent
_VERSION = re.search(
    r'^__version__ = "([^"]+)"',
    (_ROOT / "tfds_builders" / "__init__.py").read_text(),
    re.MULTILINE,
).group(1)

setuptools.setup(
    name="tfds_builders",
    version=_VERSION,
    description="TensorFlow Datasets builders for NumPy arrays, concatenation, "
    "cross products, augmentation and SQL databases.",
    long_description=(_ROOT / "README.md").read_text(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=setuptools.find_packages(include=["tfds_builders", "tfds_builders.*"]),
    install_requires=[
        "tensorflow>=2.16",
        "tensorflow-datasets>=4.9.4,<4.10",
        "numpy>=1.24",
        # Compiles the TFRecord frame walk, block encoders and CRC32C that make overlays
        # fast (core/record_index.py, core/record_blocks.py, core/crc32c.py); llvmlite,
        # numba's own code generator, emits the CPU's CRC32 instruction.
        "numba>=0.59",
        "llvmlite",
        # Reads side tables a column at a time (CSV and Parquet); Beam requires it too.
        "pyarrow>=14",
        "psycopg2-binary>=2.9",
        # Needed by the `tfds` CLI and by TFDS's Beam path.
        "apache-beam>=2.50",
        "mlcroissant",
        "importlib_resources",
    ],
    extras_require={
        "test": ["pytest>=7", "dill", "hypothesis>=6"],
    },
    entry_points={
        "console_scripts": ["tfds-builders = tfds_builders.cli:main"],
    },
)
