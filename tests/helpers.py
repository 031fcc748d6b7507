"""Helpers shared by the builder tests: build a custom config, expect a failure, hash a tree, write TFRecords.

How to import (the choice every test module follows): `tests/` and each of its
subfolders are packages (an empty `__init__.py`), so pytest puts the repository
root on `sys.path` and names modules `tests.<pkg>.test_x`. Import shared code
rootdir-relative, the same from any folder and under pytest-xdist:

    from tests import faults
    from tests import helpers

    make_builder = functools.partial(helpers.make_builder, Builder)
    build = functools.partial(helpers.build, Builder)
    assert_build_fails = functools.partial(helpers.assert_build_fails, Builder)

A new test subfolder needs its own empty `__init__.py`. A module naming itself
in a "module:function" reference uses `__name__`, not its file stem. A builder's
error cases are a table of `Failure` rows run by `assert_fails_as`.

The GCS switch and the markers live in tests/conftest.py. A test using the
`postgres_dsn`/`postgres_connection` fixtures is marked `postgres` automatically;
one reaching PostgreSQL otherwise (e.g. `request.getfixturevalue`) needs an
explicit `pytest.mark.postgres`. Mark `slow` what runs `tfds build`/the CLI in a
subprocess or takes over 10 s.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import os
import pathlib
import re
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


def _config_value(value: Any) -> Any:
  """`value` with every path in it (also inside lists, tuples and dicts) as a `str`, as configs hold them."""
  if isinstance(value, os.PathLike):
    return os.fspath(value)
  if isinstance(value, (list, tuple)):
    return [_config_value(item) for item in value]
  if isinstance(value, dict):
    return {key: _config_value(item) for key, item in value.items()}
  return value


def make_builder(builder_cls: type, tmp_path: pathlib.Path, name: str = "t", data_dir: str = "tfds",
                 **config: Any) -> Any:
  """A builder of a custom config named `name`, writing under `tmp_path/data_dir`.

  Args:
    builder_cls: The builder's `Builder` class; the config class is that of its first bundled config.
    tmp_path: The test's temporary folder.
    name: The config name.
    data_dir: The data folder, relative to `tmp_path`.
    **config: The config's fields; paths may be `pathlib.Path`s, also inside lists, tuples and dicts.

  Returns:
    The builder, not yet prepared.
  """
  config_cls = type(builder_cls.BUILDER_CONFIGS[0])
  config = {key: _config_value(value) for key, value in config.items()}
  return builder_cls(config=config_cls(name=name, **config), data_dir=str(tmp_path / data_dir))


def build(builder_cls: type, tmp_path: pathlib.Path, name: str = "t", data_dir: str = "tfds", **config: Any) -> Any:
  """`make_builder(...)`, prepared; returns the builder."""
  builder = make_builder(builder_cls, tmp_path, name, data_dir, **config)
  builder.download_and_prepare()
  return builder


def assert_build_fails(builder_cls: type, tmp_path: pathlib.Path, error_type: type[BaseException], *fragments: str,
                       **config: Any) -> str:
  """Builds `config` expecting `error_type` whose message has every fragment.

  Returns:
    The error message, for further checks.
  """
  with pytest.raises(error_type) as excinfo:
    build(builder_cls, tmp_path, **config)
  message = str(excinfo.value)
  for fragment in fragments:
    assert fragment in message, f"{fragment!r} not in {message!r}"
  return message


Config = Mapping[str, Any]


@dataclasses.dataclass(frozen=True)
class Failure:
  """One row of a builder's error table: a config, and the error its build raises.

  Attributes:
    error: The documented error type (core/errors.py).
    fragments: Parts of the message; "{tmp}" stands for the test's tmp_path.
    config: The config's fields, or a function that writes the inputs under tmp_path and returns them.
  """

  error: type[BaseException]
  fragments: Sequence[str]
  config: Config | Callable[[pathlib.Path], Config]


def assert_fails_as(builder_cls: type, tmp_path: pathlib.Path, failure: Failure) -> str:
  """The error-table driver: builds `failure.config`, expecting its error and fragments.

  Returns:
    The error message, for further checks.
  """
  config = failure.config(tmp_path) if callable(failure.config) else failure.config
  fragments = [fragment.replace("{tmp}", str(tmp_path)) for fragment in failure.fragments]
  return assert_build_fails(builder_cls, tmp_path, failure.error, *fragments, **config)


def file_hashes(root: pathlib.Path) -> dict[str, tuple[str, int]]:
  """Content hash and mtime of every file under `root`: equal before and after means untouched."""
  return {
      str(path): (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns)
      for path in sorted(root.rglob("*"))
      if path.is_file()
  }


def write_records(path: pathlib.Path, records: Iterable[bytes], compression: str = "") -> pathlib.Path:
  """Writes `records` as a TFRecord file (`compression`: "", "GZIP" or "ZLIB"), parents created.

  Returns:
    `path`.
  """
  import tensorflow as tf  # pylint: disable=import-outside-toplevel  # only the tests that write records pay for TF

  path.parent.mkdir(parents=True, exist_ok=True)
  with tf.io.TFRecordWriter(str(path), options=compression or None) as writer:
    for record in records:
      writer.write(record)
  return path


def write_split_files(root: pathlib.Path, counts: Mapping[str, Sequence[int]],
                      example: Callable[[int], bytes]) -> dict[str, list[str]]:
  """Per split, TFRecord files `root/<split>-<i>.tfrecord` of `counts[split][i]` records each.

  Args:
    root: The folder of the files.
    counts: Split -> the record count of each of its files.
    example: Record number (from 100, running on over every file and split) -> the serialized record.

  Returns:
    Split -> its file paths, as configs hold them.
  """
  sources, next_id = {}, 100
  for split, per_file in counts.items():
    sources[split] = []
    for index, count in enumerate(per_file):
      path = write_records(root / f"{split}-{index}.tfrecord", (example(next_id + i) for i in range(count)))
      sources[split].append(str(path))
      next_id += count
  return sources


def example_bytes(**features: Iterable[Any]) -> bytes:
  """A serialized tf.train.Example from name -> list of ints, floats or bytes."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel

  proto = {}
  for name, values in features.items():
    values = list(values)
    if values and isinstance(values[0], bytes):
      proto[name] = tf.train.Feature(bytes_list=tf.train.BytesList(value=values))
    elif values and isinstance(values[0], float):
      proto[name] = tf.train.Feature(float_list=tf.train.FloatList(value=values))
    else:
      proto[name] = tf.train.Feature(int64_list=tf.train.Int64List(value=values))
  # Sorted map keys: protobuf's default map order varies between processes.
  return tf.train.Example(features=tf.train.Features(feature=proto)).SerializeToString(deterministic=True)


def write_csv(path: pathlib.Path, header: list[str], rows: Iterable[Iterable[Any]]) -> pathlib.Path:
  """Writes a CSV file of `header` and `rows`, parents created; returns `path`."""
  path.parent.mkdir(parents=True, exist_ok=True)
  with open(path, "w", newline="") as file:
    writer = csv.writer(file)
    writer.writerow(header)
    writer.writerows(rows)
  return path


def split_fractions_assignment(fractions: dict[str, float], seed: int, key: str) -> str:
  """numpy_arrays' split_fractions assignment as it was always written (point < cumulative fraction).

  An oracle independent of `core.splits`, which must reproduce it.
  """
  point = zlib.crc32(f"{seed}:{key}".encode()) / 2**32
  cumulative = 0.0
  for name, fraction in fractions.items():
    cumulative += fraction
    if point < cumulative:
      return name
  return name  # pylint: disable=undefined-loop-variable


def version_dir(data_dir: pathlib.Path, name: str, config: str = "") -> pathlib.Path:
  """The one version directory built under `data_dir/name[/config]` (versions differ by builder: read, not assumed)."""
  parent = data_dir / name / config if config else data_dir / name
  versions = [path for path in parent.iterdir() if path.is_dir() and re.fullmatch(r"\d+\.\d+\.\d+", path.name)]
  assert len(versions) == 1, f"{parent}: {sorted(path.name for path in versions)}"
  return versions[0]
