"""Installs tfds_builders: TensorFlow Datasets builders for everyday data workflows."""

import pathlib
import re

import setuptools

_ROOT = pathlib.Path(__file__).parent
_VERSION = re.search(
    r'^__version__ = "([^"]+)"',
    (_ROOT / "tfds_builders" / "version.py").read_text(),
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
        # The user's named dependencies.
        "tensorflow>=2.16,<3",
        # tfds_internals.py, the one module using TFDS internals (the dataset
        # provider registry, community registers, ShardConfig, file adapters,
        # the hashing shuffler) that change between minor releases: pinned to
        # the 4.9 line that tests/test_tfds_internals.py checks.
        "tensorflow-datasets>=4.9.4,<4.10",
        "numpy>=1.24",
        "psycopg2-binary>=2.9",
        # Named by the user as a dependency: the test suite ships with the package.
        "pytest>=7",
        # What the `tfds` command needs to start: its CLI imports mlcroissant (the
        # `build_croissant` subcommand) and `--beam_pipeline_options` imports Beam,
        # which also runs our partitions (core/shard_writer.write_partitions_with_beam).
        "apache-beam>=2.50,<3",
        "mlcroissant>=1.0",
        # Compiles the TFRecord frame walk, block encoders and CRC32C that make overlays
        # fast (core/fast/), pinned to tested lines; llvmlite because core/fast/crc32c.py
        # calls it directly for the SSE4.2 CRC32C instruction (16 % of a concatenated build).
        "numba>=0.59,<0.70",
        "llvmlite>=0.42,<0.52",
        # Side tables (CSV, Parquet), the Parquet shard format and the Parquet export.
        "pyarrow>=14",
        # Imported directly (paths, logging, progress bars); TFDS requires them too.
        "etils[epath]>=1.6",
        "absl-py",
        "tqdm",
        # TFDS 4.9.10's dataset_builder.py imports it on every Python, but declares it
        # only for Python < 3.9: without it no builder (and no `tfds.load`) works.
        "importlib_resources",
    ],
    extras_require={
        # Real components the tests talk to: DuckDB, pandas and Hugging Face
        # `datasets` read the Parquet export; Grain reads array_record outputs;
        # moto's server is the S3-compatible store, reached through s3fs/boto3.
        "test": [
            "dill",
            # Two test workers (scripts/test.sh): the suite is mostly subprocess start-up.
            "pytest-xdist>=3",
            "hypothesis>=6",
            "duckdb>=1.0",
            "pandas>=2",
            "datasets>=3",
            "grain>=0.2",
            "moto[server]>=5",
            "s3fs>=2024.1",
            "boto3",
        ],
        # Reading and writing s3:// registries and inputs (fsspec's S3 backend).
        "s3": ["s3fs>=2024.1"],
        # The database benchmark's peers (benchmarks/database.py), never imported by the
        # package: ADBC's libpq driver and ConnectorX read into Arrow, and Hugging Face
        # `Dataset.from_sql` reads through SQLAlchemy. A missing one skips its phase (and its test).
        "bench": [
            "adbc-driver-manager>=1.0",
            "adbc-driver-postgresql>=1.0",
            "connectorx>=0.3",
            "datasets>=3",
            "sqlalchemy>=2",
        ],
    },
    entry_points={
        "console_scripts": ["tfds-builders = tfds_builders.cli:main"],
    },
)
