"""augmented: new fields for every example of an existing dataset, as a new version or as an overlay."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import itertools
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from absl import logging
from google.protobuf import message
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from tfds_builders.augmented import base as base_lib
from tfds_builders.augmented import fields
from tfds_builders.augmented import function_calls
from tfds_builders.augmented import side_table as side_table_lib
from tfds_builders.core import errors
from tfds_builders.core import paths
from tfds_builders.core import serialization
from tfds_builders.core import streaming_builder
from tfds_builders.core import tfrecord_io

_DESCRIPTION = """\
An existing dataset (a prepared TFDS dataset or raw TFRecord files of
tf.train.Example) with new fields added to every example, computed by a user
function or joined from a side table. `materialize` writes a new version whose
base features are the base's bytes, copied without decoding; `overlay` writes
only the new fields, which `tfds_builders.load_augmented` zips back onto the
unmodified base, checking every example's alignment.
"""

MODES = ("materialize", "overlay")
MISSING_POLICIES = ("error", "skip", "default")
METADATA_KEY = "augmented"
# Alignment fields of an overlay example: the base example's index in its split
# and a fingerprint of its raw record; `_matched` is False where the side table
# had no row under missing_policy="skip".
BASE_INDEX = "_base_index"
BASE_FINGERPRINT = "_base_fingerprint"
MATCHED = "_matched"
ALIGNMENT_FIELDS = (BASE_INDEX, BASE_FINGERPRINT, MATCHED)
FINGERPRINT = "length << 32 | masked CRC32C of the base record, as stored in its TFRecord frame (core.record_index)"
OVERLAY_FORMAT = 2
# A record's side-table row when its key has none (missing_policy skip or default).
NO_ROW = -1
# Examples whose function results infer the features of undeclared fields.
INFERENCE_EXAMPLES = 8
# Records handed together to a worker process.
_BATCH_RECORDS = 128
_BATCH_BYTES = 8 * 1024 * 1024


@dataclasses.dataclass
class BuilderConfig(streaming_builder.StreamingConfig):
  """The base, where the new fields come from, and the output mode.

  Attributes:
    base: A prepared TFDS dataset: its version directory, or
      `name[/config][:version]` under `base_data_dir`.
    base_data_dir: The data_dir of a base given by name.
    base_records: Instead of `base`: raw TFRecord files of tf.train.Example,
      `{split: files, directories or globs}`.
    base_compression: `auto` (GZIP detected), `none` or `gzip` for base_records.
    splits: The base splits to augment (default: all).
    mode: `materialize` (base features + new fields, a new dataset version)
      or `overlay` (new fields only, loaded with `load_augmented`).
    function: `"package.module:function"`, called per example with a dict of
      NumPy values; returns a dict of new fields.
    features: Declared features of new fields, e.g. `{"label": "int64",
      "embedding": "float32[16]", "tags": "string[None]"}`; others are
      inferred (function: from its first results, side table: from columns).
    side_table: A CSV or Parquet file joined on `join_key`.
    side_table_format: `auto` (by extension), `csv` or `parquet`.
    side_table_sql: Instead of `side_table`: a read-only SQL query whose rows
      form the side table, read with the database builder's connection code.
    side_table_connection: Where `side_table_sql` runs: fields of
      `core.sql_connections.ConnectionSpec`, e.g. `{"driver": "postgresql",
      "dsn_env": "MY_DSN"}` or `{"driver": "sqlite", "sqlite_path": "x.db"}`.
    join_key: The base feature (scalar int or string) matched with the side
      table's key column.
    side_table_key: The side table's key column (default: `join_key`).
    side_table_columns: Columns to add (default: every column but the key).
    missing_policy: For an example whose key has no row: `error`, `skip`
      (dropped, counted in the metadata) or `default`.
    missing_defaults: `{column: value}` used under `missing_policy="default"`.
    overwrite_fields: New fields allowed to replace base features of that name.
    verify_base: Overlay only. An overlay joined from a side table walks each
      base record's frame, checks its data against its CRC and reads its join
      key in one compiled pass, without parsing the records (that is what
      makes it fast); True reads and parses every record as materialize
      does. Either way the loader's reads check every CRC.
    num_workers: Processes calling `function` in a local build (Beam builds
      run one shard per Beam worker instead).
    data_root: Directory that relative paths are taken from.
    use_beam: Augment each base file on a Beam worker.
  """

  base: str = ""
  base_data_dir: str | None = None
  base_records: dict[str, list[str] | str] = dataclasses.field(default_factory=dict)
  base_compression: str = "auto"
  splits: list[str] = dataclasses.field(default_factory=list)
  mode: str = "materialize"
  function: str = ""
  features: dict[str, Any] = dataclasses.field(default_factory=dict)
  side_table: str = ""
  side_table_format: str = "auto"
  side_table_sql: str = ""
  side_table_connection: dict[str, Any] = dataclasses.field(default_factory=dict, repr=False)  # may hold a password
  join_key: str = ""
  side_table_key: str = ""
  side_table_columns: list[str] = dataclasses.field(default_factory=list)
  missing_policy: str = "error"
  missing_defaults: dict[str, Any] = dataclasses.field(default_factory=dict)
  overwrite_fields: list[str] = dataclasses.field(default_factory=list)
  verify_base: bool = False
  num_workers: int = 1
  data_root: str | None = None


def _bundled(**kwargs) -> BuilderConfig:
  return BuilderConfig(
      data_root=str(paths.bundled_data_dir("augmented")),
      base_records={"train": ["base/train-*.tfrecord"], "test": ["base/test-*.tfrecord"]},
      **kwargs,
  )


class Builder(streaming_builder.StreamingBuilder):
  """An existing dataset plus new fields, materialized or as an overlay."""

  DESCRIPTION = _DESCRIPTION
  PAIRS_SUPERVISED_KEYS = True
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release (raw TFRecord bases start at 1.0.0)."}
  BUILDER_CONFIGS = [
      _bundled(
          name="demo",
          description="Bundled raw TFRecords plus labels.csv joined on id, materialized.",
          side_table="labels.csv",
          join_key="id",
      ),
      _bundled(
          name="demo_overlay",
          description="The same join written as an overlay of the new fields only.",
          side_table="labels.csv",
          join_key="id",
          mode="overlay",
      ),
      _bundled(
          name="demo_function",
          description="Bundled raw TFRecords plus fields computed from the text.",
          function="tfds_builders.augmented.example_functions:text_statistics",
      ),
  ]

  @functools.cached_property
  def canonical_version(self) -> tfds.core.Version:
    """The config's version, else the minor version after a prepared base's."""
    config = self.builder_config
    if config.version:
      return tfds.core.Version(str(config.version))
    if config.base and not config.base_records:
      base_version = tfds.core.Version(base_lib.version_of(_base_location(config), config.base_data_dir))
      return tfds.core.Version(f"{base_version.major}.{base_version.minor + 1}.0")
    return self.VERSION

  @property
  def release_notes(self) -> dict[str, str]:
    if self.builder_config.release_notes:
      return self.builder_config.release_notes
    return {str(self.version): _release_note(self.builder_config, None if self.is_prepared() else self._plan)}

  def default_ordered(self) -> bool:
    # An overlay is zipped with its base by position; a materialized version stands alone.
    return self.builder_config.mode == "overlay"

  def inferred_features(self) -> tfds.features.FeaturesDict:
    return self._plan.features

  def expected_examples(self, split: str) -> int | None:
    """The base split's count: one output example per base example.

    None while a walked base is still uncounted, and when a materialized
    version drops examples without a side-table row (`missing_policy: skip`).
    """
    plan = self._plan
    drops_examples = plan.mode == "materialize" and plan.missing_policy == "skip"
    if plan.walk or drops_examples or split not in plan.base.splits:
      return None
    return plan.base.splits[split].num_examples

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager  # sources are local or remote paths, never downloaded
    return {split: self._generate_examples(split=split) for split in self._plan.base.splits}

  def _generate_examples(self, split: str) -> streaming_builder.Partitions:
    plan = self._plan
    _check_some_match(plan, split)
    if plan.walk:  # file offsets are learned as the walk goes: one partition reads the files in order
      return streaming_builder.Partitions([functools.partial(_walked_split_examples, plan, split)])
    return streaming_builder.Partitions([
        functools.partial(_file_examples, plan, split, index)
        for index in range(len(plan.base.splits[split].files))
    ])

  @contextlib.contextmanager
  def _build_context(self, download_config):
    plan = self._plan
    uses_beam = self._uses_beam(download_config)
    if plan.walk and uses_beam:  # Beam's partitions need every file's offset first
      plan = self._plan = plan.with_base(plan.walk.base())
    elif plan.walk:
      plan.walk.reset()
    local_pool = not uses_beam and plan.function
    with (
        function_calls.worker_pool(plan.function, plan.base.features_source, plan.num_workers)
        if local_pool else contextlib.nullcontext()
    ):
      yield None

  def _after_build(self, context, split_infos):
    del context
    plan = self._plan
    if plan.walk:
      plan = self._plan = plan.with_base(plan.walk.base())
    self.info.metadata[METADATA_KEY] = {
        **plan.metadata(), "missing": {info.name: plan.missing_count(info) for info in split_infos},
    }
    self.record_provenance(**plan.provenance())

  @functools.cached_property
  def _plan(self) -> _Plan:
    return self.planned(_Plan.from_config, "the base's features and counts, the side table or function's fields")


def _base_location(config: BuilderConfig) -> str:
  """A base directory resolved against data_root, or the dataset name as given."""
  resolved = paths.resolve(config.base, config.data_root)
  return str(resolved) if (resolved / "dataset_info.json").exists() else config.base


def _release_note(config: BuilderConfig, plan: _Plan | None) -> str:
  base = config.base or "raw TFRecord files"
  if plan is None:
    sources = " and ".join(filter(None, [
        f"side table {config.side_table or 'SQL query'}" if config.side_table or config.side_table_sql else "",
        f"function {config.function}" if config.function else "",
    ]))
    return f"Adds fields from {sources} to {base} ({config.mode})."
  added = "; ".join(
      f"{spec.name} ({spec.describe()}) from {spec.source}" for spec in plan.new_specs
  )
  base_name = f"{plan.base.name} {plan.base.version}" if plan.base.version else plan.base.describe()
  return f"Adds to {base_name} ({config.mode}): {added}."


# ------------------------------------------------------------------ plan --


@dataclasses.dataclass(frozen=True)
class _Plan:
  """The resolved base, new fields and policies; picklable for Beam workers."""

  mode: str
  base: base_lib.Base
  side: side_table_lib.SideTable | None
  join_key: str | None
  join_kind: str | None
  # The map entries of an example whose key has no row: the default row
  # (missing_policy="default") or empty values (an overlay's unmatched rows).
  fallback_entries: bytes | None
  function: str
  function_specs: tuple[fields.FieldSpec, ...]
  missing_policy: str
  overwrite: frozenset[str]
  verify_base: bool
  num_workers: int
  # A raw base whose schema and counts the overlay's own walk learns (`base`
  # is then provisional: no counts); None when `base` is complete.
  walk: base_lib.RecordsWalk | None = None

  @property
  def reads_keys_only(self) -> bool:
    """An overlay joined from a side table alone: it reads only frames and join keys."""
    return _reads_keys_only(self.mode, self.side is not None, self.function, self.verify_base)

  def with_base(self, base: base_lib.Base) -> _Plan:
    """This plan with a complete base, no longer walked."""
    return dataclasses.replace(self, base=base, walk=None)

  @property
  def new_specs(self) -> tuple[fields.FieldSpec, ...]:
    return (self.side.specs if self.side else ()) + self.function_specs

  @property
  def features(self) -> tfds.features.FeaturesDict:
    new = {spec.name: spec.feature() for spec in self.new_specs}
    if self.mode == "overlay":
      # Stored as 8 raw bytes each, so that a batch's entries are built at once.
      alignment = {
          BASE_INDEX: tfds.features.Tensor(
              shape=(), dtype=np.int64, encoding=tfds.features.Encoding.BYTES,
              doc="Index of the base example in its split."),
          BASE_FINGERPRINT: tfds.features.Tensor(
              shape=(), dtype=np.int64, encoding=tfds.features.Encoding.BYTES,
              doc=f"Fingerprint of the base record ({FINGERPRINT})."),
      }
      if self.missing_policy == "skip":
        alignment[MATCHED] = tfds.features.Tensor(shape=(), dtype=np.bool_, doc="False: no side-table row, dropped on load.")
      return tfds.features.FeaturesDict({**new, **alignment})
    base_features = self.base.features
    kept = {name: base_features[name] for name in base_features.keys() if name not in self.overwrite}
    return tfds.features.FeaturesDict({**kept, **new})

  @property
  def dropped_base_keys(self) -> frozenset[str]:
    """Serialized base features replaced by new fields (nested ones included)."""
    return frozenset(
        key for key in self.base.wire_schema
        if key in self.overwrite or key.split("/", 1)[0] in self.overwrite
    )

  def metadata(self) -> dict[str, Any]:
    """What the overlay loader checks, and what was added from where."""
    return {
        "format": OVERLAY_FORMAT,
        "mode": self.mode,
        "base": {
            **self.base.identity(),
            "location": self.base.location,
            "paths": {name: [file.path for file in split.files] for name, split in self.base.splits.items()},
            "digest": self.base.digest(),
        },
        "fingerprint": FINGERPRINT,
        "new_fields": {spec.name: spec.to_json() for spec in self.new_specs},
        "overwrite_fields": sorted(self.overwrite),
        "missing_policy": self.missing_policy,
    }

  def provenance(self) -> dict[str, Any]:
    return {
        "base": self.base.provenance(),
        "mode": self.mode,
        "function": self.function or None,
        "side_table": self.side.provenance() if self.side else None,
        "join_key": self.join_key,
        "new_fields": {spec.name: spec.to_json() for spec in self.new_specs},
    }

  def missing_count(self, split_info: tfds.core.SplitInfo) -> int:
    """Base examples of a split without a side-table row under `skip` (else 0)."""
    if self.missing_policy != "skip":
      return 0
    if self.mode == "materialize":
      return self.base.splits[split_info.name].num_examples - split_info.num_examples
    parse = {MATCHED: tf.io.FixedLenFeature([], tf.int64)}
    dataset = tf.data.TFRecordDataset([str(path) for path in split_info.filepaths]).batch(4096)
    return int(sum(
        int(np.sum(tf.io.parse_example(batch, parse)[MATCHED].numpy() == 0)) for batch in dataset
    ))

  @classmethod
  def from_config(cls, config: BuilderConfig) -> _Plan:
    _check_config(config)
    walk = None
    if config.base_records:
      sources = {split: config.base_records[split] for split in _known_splits(config)}
      has_table = bool(config.side_table or config.side_table_sql)
      if _reads_keys_only(config.mode, has_table, config.function, config.verify_base):
        walk = base_lib.RecordsWalk.survey(sources, config.base_compression, config.data_root)
      base = walk.provisional() if walk else base_lib.open_records(sources, config.base_compression, config.data_root)
    else:
      base = base_lib.open_prepared(_base_location(config), config.base_data_dir, config.splits)
    declared = {
        name: fields.parse_declared(name, spec, "")
        for name, spec in config.features.items()
    }
    side, join_kind = None, None
    if config.side_table or config.side_table_sql:
      join_kind, key_dtype = _join_kind(base, config.join_key)
      table_source = f"side table {config.side_table or 'SQL query'}"
      table_options = dict(
          key_column=config.side_table_key or config.join_key,
          columns=config.side_table_columns,
          key_kind=join_kind,
          key_dtype=key_dtype,
          declared={name: dataclasses.replace(spec, source=table_source) for name, spec in declared.items()},
      )
      if config.side_table:
        side = side_table_lib.read_file(
            paths.resolve(config.side_table, config.data_root),
            table_format=config.side_table_format, **table_options,
        )
      else:
        side = side_table_lib.read_query(
            config.side_table_sql, config.side_table_connection, root=config.data_root, **table_options,
        )
      # Sources as the config names them (release notes, messages).
      side = dataclasses.replace(side, specs=tuple(dataclasses.replace(spec, source=table_source) for spec in side.specs))
    function_specs = _function_specs(config, base, declared, side) if config.function else ()
    new_specs = (side.specs if side else ()) + function_specs
    unprovided = sorted(set(declared) - {spec.name for spec in new_specs})
    if unprovided:
      raise errors.ConfigError(
          f"features declares {unprovided}, which no source provides (new fields: "
          f"{[spec.name for spec in new_specs]}). Remove them or fix the names."
      )
    _check_names(config, base, new_specs, side)
    fallback_entries = None
    if side:
      fallback_entries = _default_row(config, side) if config.missing_policy == "default" else b"".join(
          part for spec in side.specs for part in fields.FieldCodec(spec).empty())
    return cls(
        mode=config.mode, base=base, side=side, join_key=config.join_key or None,
        join_kind=join_kind, fallback_entries=fallback_entries,
        function=config.function, function_specs=function_specs,
        missing_policy=config.missing_policy, overwrite=frozenset(config.overwrite_fields),
        verify_base=config.verify_base, num_workers=config.num_workers, walk=walk,
    )


def _reads_keys_only(mode: str, has_table: bool, function: str, verify_base: bool) -> bool:
  return mode == "overlay" and has_table and not function and not verify_base


def _check_config(config: BuilderConfig) -> None:
  def fail(message: str) -> errors.ConfigError:
    return errors.ConfigError(f"augmented config {config.name!r}: {message}")

  errors.check_choice(config.mode, MODES, "mode", fail)
  if config.mode == "overlay" and config.shuffle:
    raise fail(
        "shuffle: true reorders the overlay, which is zipped with its base by position. "
        "Drop shuffle (load_augmented keeps the base's order), or use mode='materialize'."
    )
  if bool(config.base) == bool(config.base_records):
    raise fail(
        "give either `base` (a prepared TFDS dataset: directory or name) or "
        "`base_records` ({split: TFRecord files}), not both or neither."
    )
  has_table = bool(config.side_table or config.side_table_sql)
  if config.side_table and config.side_table_sql:
    raise fail("give `side_table` (a file) or `side_table_sql` (a query), not both.")
  if bool(config.side_table_sql) != bool(config.side_table_connection):
    raise fail("`side_table_sql` and `side_table_connection` go together: the query and where it runs.")
  if not config.function and not has_table:
    raise fail("give `function` ('package.module:function'), a side table, or both: where the new fields come from.")
  if has_table and not config.join_key:
    raise fail("a side table needs `join_key`: the base feature matched with the table's key column.")
  if config.join_key and not has_table:
    raise fail("`join_key` only applies with a side table.")
  errors.check_choice(config.missing_policy, MISSING_POLICIES, "missing_policy", fail)
  if config.missing_defaults and config.missing_policy != "default":
    raise fail("missing_defaults only applies with missing_policy='default'.")
  if config.verify_base and config.mode != "overlay":
    raise fail("verify_base only applies with mode='overlay' (materialize reads and checks every record).")
  if not isinstance(config.num_workers, int) or config.num_workers < 1:
    raise fail(f"num_workers={config.num_workers!r}; use a positive integer.")


def _known_splits(config: BuilderConfig) -> list[str]:
  """The base_records splits to augment (default: all)."""
  unknown = [split for split in config.splits if split not in config.base_records]
  if unknown:
    raise errors.ConfigError(f"splits {unknown} are not in base_records; it has {sorted(config.base_records)}.")
  return list(config.splits or config.base_records)


def _join_kind(base: base_lib.Base, join_key: str) -> tuple[str, str | None]:
  """How the base stores the join key: `int64_list` or `bytes_list`, one value.

  Returns:
    The wire kind, and for an integer stored as raw bytes (a scalar
    `Tensor(encoding="bytes")`, as numpy_arrays writes every array) its
    dtype, in which the side table's keys are then encoded; else None.
  """
  schema = base.wire_schema
  if join_key not in schema:
    raise errors.ConfigError(
        errors.with_hint(
            f"join_key {join_key!r} is not a feature of the base {base.describe()}; it has {sorted(schema)}",
            "Set join_key to the base feature holding the key",
        )
    )
  spec = schema[join_key]
  if spec.length != 1 or spec.kind == "float_list":
    raise errors.ConfigError(
        f"join_key {join_key!r} is {spec.describe()} in the base; a join key must be one "
        "integer or string per example."
    )
  return spec.kind, _raw_key_dtype(base, join_key) if spec.kind == side_table_lib.BYTES_KEY else None


def _raw_key_dtype(base: base_lib.Base, join_key: str) -> str | None:
  """The dtype of a join key whose wire bytes encode an integer; None for a string key.

  Raises:
    ConfigError: for any other feature whose bytes encode a non-string value
      (a float, an array, an image): its bytes cannot be matched with a key.
  """
  feature: Any = base.features
  for part in join_key.split("/"):
    if not isinstance(feature, tfds.features.FeaturesDict) or part not in feature.keys():
      return None  # a flattened name TFDS does not nest: the wire bytes are the value
    feature = feature[part]
  dtype = np.dtype(feature.np_dtype) if hasattr(feature, "np_dtype") else None
  if dtype is None or dtype.kind in "OSU":  # Text, string Tensor: the wire bytes ARE the UTF-8
    return None
  content = feature.to_json_content()
  encoding = getattr(content, "encoding", "") or "none"
  if isinstance(feature, tfds.features.Tensor) and tuple(feature.shape) == () and encoding == "bytes" and (
      dtype.kind in "iu"):
    return side_table_lib.raw_key_dtype(dtype)
  raise errors.ConfigError(
      errors.with_hint(
          f"join_key {join_key!r} is a {type(feature).__name__} of dtype {dtype.name}, shape "
          f"{tuple(feature.shape)}, encoding {encoding!r} in the base {base.describe()}: its stored bytes "
          "encode that value, which no side-table key can be matched with",
          "Join on a scalar integer or string feature (an integer may be stored with encoding 'bytes')",
      )
  )


def _function_specs(
    config: BuilderConfig,
    base: base_lib.Base,
    declared: Mapping[str, fields.FieldSpec],
    side: side_table_lib.SideTable | None,
) -> tuple[fields.FieldSpec, ...]:
  """The function's fields: names from its first results, features declared or inferred."""
  function_calls.import_function(config.function)  # fails early, naming the reference
  calls = list(_first_calls(base, INFERENCE_EXAMPLES))
  results = function_calls.call_serially(config.function, base.features_source, calls)
  names = list(results[0])
  for call, result in zip(calls, results):
    if list(result) != names and set(result) != set(names):
      raise errors.SchemaError(
          f"Function {config.function} returned fields {sorted(result)} on example {call.key} "
          f"but {sorted(names)} on example {calls[0].key}. Return the same fields for every example."
      )
  source = f"function {config.function}"
  side_names = {spec.name for spec in side.specs} if side else set()
  specs = []
  for name in names:
    if name in side_names:
      raise errors.ConfigError(
          f"Field {name!r} comes from both the side table and function {config.function}; rename one."
      )
    if name in declared:
      spec = dataclasses.replace(declared[name], source=source)
    else:
      spec = fields.infer(name, [result[name] for result in results], source, [call.key for call in calls])
    codec = fields.FieldCodec(spec)
    for call, result in zip(calls, results):
      _encode_field(codec, result[name], call.key)
    specs.append(spec)
  return tuple(specs)


def _first_calls(base: base_lib.Base, count: int) -> Iterator[function_calls.Call]:
  produced = 0
  for split_name, split in base.splits.items():
    for file, offset in zip(split.files, split.offsets):
      for index, raw in enumerate(base_lib.iter_records(file)):
        yield function_calls.Call(_key(split_name, offset + index), f"record {index} of {file.name}", raw)
        produced += 1
        if produced == count:
          return


def _check_names(
    config: BuilderConfig,
    base: base_lib.Base,
    new_specs: Sequence[fields.FieldSpec],
    side: side_table_lib.SideTable | None,
) -> None:
  base_names = set(base.features.keys())
  new_names = [spec.name for spec in new_specs]
  for spec in new_specs:
    if not spec.name or "/" in spec.name:
      raise errors.ConfigError(f"New field name {spec.name!r} (from {spec.source}) must be non-empty and contain no '/'.")
    if spec.name in ALIGNMENT_FIELDS:
      raise errors.ConfigError(f"New field {spec.name!r} (from {spec.source}) uses a reserved name; rename it.")
    if spec.name in base_names and spec.name not in config.overwrite_fields:
      raise errors.ConfigError(
          errors.with_hint(
              f"New field {spec.name!r} (from {spec.source}) already exists in the base {base.describe()}",
              f"Rename it, or list it in overwrite_fields to replace the base's {spec.name!r}",
          )
      )
  for name in config.overwrite_fields:
    if name not in base_names:
      raise errors.ConfigError(f"overwrite_fields lists {name!r}, which is not a base feature (it has {sorted(base_names)}).")
    if name not in new_names:
      raise errors.ConfigError(f"overwrite_fields lists {name!r}, which no new field provides (new fields: {new_names}).")
  if side and config.join_key.split("/", 1)[0] in config.overwrite_fields:
    raise errors.ConfigError(f"join_key {config.join_key!r} cannot also be overwritten.")


def _default_row(config: BuilderConfig, side: side_table_lib.SideTable) -> bytes:
  names = [spec.name for spec in side.specs]
  missing = [name for name in names if name not in config.missing_defaults]
  extra = sorted(set(config.missing_defaults) - set(names))
  if missing or extra:
    raise errors.ConfigError(
        f"missing_policy='default' needs missing_defaults for every side-table column: "
        f"missing {missing}, unknown {extra} (columns: {names})."
    )
  try:
    return side.encode([config.missing_defaults[name] for name in names])
  except fields.FieldValueError as error:
    raise errors.ConfigError(f"missing_defaults: {error}.") from None


def _encode_field(codec: fields.FieldCodec, value: Any, key: str) -> list[serialization.Payload]:
  try:
    return codec.encode(value)
  except fields.FieldValueError as error:
    raise errors.SchemaError(
        f"Example {key}: field {codec.spec.name!r} from {codec.spec.source}: {error}. {fields.hint_for(codec.spec)}."
    ) from None


def _key(split: str, index: int) -> str:
  return f"{split}/{index:09d}"


# -------------------------------------------------------------- examples --


@dataclasses.dataclass
class _Batch:
  """Consecutive records of one base file and what was looked up for them."""

  start: int  # index of the first record in the file
  records: list[bytes] | None  # None: only keys and fingerprints were read (overlay)
  size: int
  rows: np.ndarray | None = None  # per record, its side-table row; NO_ROW: none (skip or default)
  alignment: np.ndarray | None = None  # per record, its overlay alignment entries (a row of bytes)


class _Keys(Sequence[str]):
  """The keys of consecutive examples of a split, made when asked for."""

  def __init__(self, split: str, indices: range):
    self._split = split
    self._indices = indices

  def __len__(self) -> int:
    return len(self._indices)

  def __getitem__(self, at: Any) -> Any:
    if isinstance(at, slice):
      return _Keys(self._split, self._indices[at])
    return _key(self._split, self._indices[at])


def _walked_split_examples(plan: _Plan, split: str) -> Iterator[streaming_builder.StreamItem]:
  """The output examples of a walked base's split: its files in order, each counted once walked."""
  offset = 0
  for index in range(len(plan.base.splits[split].files)):
    count = 0
    for keys, records in _file_examples(plan, split, index, offset):
      count += len(keys)
      yield keys, records
    plan.walk.counted(split, index, count)
    offset += count


def _file_examples(
    plan: _Plan, split: str, file_index: int, offset: int | None = None
) -> Iterator[streaming_builder.StreamItem]:
  """The output examples of one base file, in its record order.

  Per batch of records, the join keys are read (protobuf's parser, or the
  frame walk of `core.record_index`); the function (if any) runs on the
  examples, in worker processes if a pool is open; each output example is
  then assembled from bytes: the base record as it is (materialize) and the
  new fields' map entries. An overlay's alignment fingerprints come from the
  records' frames; one joined from a side table alone reads nothing else but
  the join keys, and its examples are assembled and framed a block at a time
  (`core.record_blocks`).
  """
  file = plan.base.splits[split].files[file_index]
  offset = plan.base.splits[split].offsets[file_index] if offset is None else offset
  overlay = plan.mode == "overlay"
  skip = plan.missing_policy == "skip"
  alignment = _Alignment(with_matched=skip) if overlay else None
  function_codecs = [fields.FieldCodec(spec) for spec in plan.function_specs]
  dropped = plan.dropped_base_keys
  drop = (lambda name: None if name in dropped else name) if dropped else None

  scanned = plan.reads_keys_only
  # Overlays that read the records take fingerprints from a separate frame walk.
  frames = _frame_fingerprints(file) if overlay and not scanned else None

  def looked_up(batch: _Batch, keys: Any = None, record_fingerprints: np.ndarray | None = None) -> _Batch:
    if plan.side is not None:
      batch.rows = _join(plan, file, batch.start, _join_keys(plan, file, batch) if keys is None else keys)
    if overlay:
      indices = np.arange(offset + batch.start, offset + batch.start + batch.size, dtype=np.int64)
      matched = None if batch.rows is None or not skip else batch.rows != NO_ROW
      if record_fingerprints is None:
        record_fingerprints = np.fromiter(itertools.islice(frames, batch.size), np.int64, batch.size)
      batch.alignment = alignment.entries(indices, record_fingerprints, matched)
    return batch

  def calls_of(batch: _Batch) -> list[function_calls.Call]:
    return [
        function_calls.Call(_key(split, offset + batch.start + i), f"record {batch.start + i} of {file.name}", raw)
        for i, raw in enumerate(batch.records)
        if not skip or batch.rows is None or batch.rows[i] != NO_ROW
    ]

  if scanned:  # side table only: whole blocks at once
    from tfds_builders.core import record_blocks  # pylint: disable=g-import-not-at-top  # Numba: overlays only
    for batch in (looked_up(*found) for found in _scanned_batches(plan, file)):
      first = offset + batch.start
      framed = record_blocks.framed_examples(plan.side.entries, batch.rows, batch.alignment, plan.fallback_entries)
      yield _Keys(split, range(first, first + batch.size)), framed
    return

  batches = map(looked_up, _batches(file))
  if plan.function:
    runner = function_calls.FunctionRunner(plan.function, plan.base.features_source, plan.num_workers)
    with_results = runner.map((batch, calls_of(batch)) for batch in batches)
  else:
    with_results = ((batch, ()) for batch in batches)
  for batch, results in with_results:
    results_iter = iter(results)
    for i in range(batch.size):
      entries: list[Any] = []
      matched = True
      if batch.rows is not None:
        row = int(batch.rows[i])
        if row == NO_ROW and skip:
          if not overlay:
            continue
          matched = False
        entries.append([plan.fallback_entries if row == NO_ROW else plan.side.entries.item(row)])
      if function_codecs:
        key = _key(split, offset + batch.start + i)
        if matched:
          entries += _function_entries(plan, function_codecs, next(results_iter), key, f"record {batch.start + i} of {file.name}")
        else:
          entries += [codec.empty() for codec in function_codecs]
      if overlay:
        entries.append([batch.alignment[i].tobytes()])
        yield _key(split, offset + batch.start + i), serialization.example(entries)
      else:
        raw = batch.records[i]
        base_part = serialization.rename_features(raw, drop) if drop else raw
        yield _key(split, offset + batch.start + i), serialization.merge_examples(base_part, serialization.example(entries))


def _function_entries(
    plan: _Plan, codecs: Sequence[fields.FieldCodec], result: Mapping[str, Any], key: str, where: str
) -> list[list[serialization.Payload]]:
  """The function's result for one example as map entries, checked field by field."""
  if len(result) != len(codecs) or any(codec.spec.name not in result for codec in codecs):
    raise errors.SchemaError(
        f"Function {plan.function} returned fields {sorted(result)} on example {key} ({where}); "
        f"the first examples returned {sorted(codec.spec.name for codec in codecs)}. "
        "Return the same fields for every example."
    )
  return [_encode_field(codec, result[codec.spec.name], key) for codec in codecs]


class _Alignment:
  """An overlay's alignment entries for a batch, assembled with NumPy.

  The base index and fingerprint are int64 features stored as 8 raw bytes
  (TFDS `Encoding.BYTES`), and `_matched` is 0 or 1, so every record's
  entries have the same width: constant heads with the values' bytes in
  between.
  """

  def __init__(self, with_matched: bool):
    heads = []
    for name in (BASE_INDEX, BASE_FINGERPRINT):
      parts = serialization.bytes_feature(serialization.FeatureKey(name), b"\0" * 8)
      heads.append(np.frombuffer(b"".join(parts[:-1]), np.uint8))
    self._heads = heads
    self._matched = None
    if with_matched:
      matched_key = serialization.FeatureKey(MATCHED)
      self._matched = np.array([
          np.frombuffer(b"".join(serialization.int64_feature(matched_key, (flag,))), np.uint8) for flag in (0, 1)
      ])
    self._width = sum(len(head) + 8 for head in heads) + (self._matched.shape[1] if with_matched else 0)

  def entries(self, indices: np.ndarray, fingerprints: np.ndarray, matched: np.ndarray | None) -> np.ndarray:
    """Each record's alignment entries, a row of a (records, width) uint8 array."""
    count = len(indices)
    block = np.empty((count, self._width), np.uint8)
    column = 0
    for head, values in zip(self._heads, (indices, fingerprints)):
      block[:, column:column + len(head)] = head
      column += len(head)
      block[:, column:column + 8] = values.astype("<i8").view(np.uint8).reshape(count, 8)
      column += 8
    if self._matched is not None:
      block[:, column:] = self._matched[np.ones(count, np.int64) if matched is None else matched.astype(np.int64)]
    return block


def _batches(file: base_lib.BaseFile, first: int = 0) -> Iterator[_Batch]:
  """Consecutive records from index `first`, at most _BATCH_RECORDS or about _BATCH_BYTES at a time."""
  records: list[bytes] = []
  size, start = 0, first
  for index, raw in enumerate(base_lib.iter_records(file)):
    if index < first:
      continue
    records.append(raw)
    size += len(raw)
    if len(records) >= _BATCH_RECORDS or size >= _BATCH_BYTES:
      yield _Batch(start, records, len(records))
      start += len(records)
      records, size = [], 0
  if records:
    yield _Batch(start, records, len(records))


def _scanned_batches(plan: _Plan, file: base_lib.BaseFile) -> Iterator[tuple[_Batch, list[Any], np.ndarray]]:
  """`(batch, join keys, fingerprints)` of a base file, reading only frames and join keys.

  A walked base's records are also checked against its schema in the same pass.
  """
  from tfds_builders.core import record_index  # pylint: disable=g-import-not-at-top  # Numba: overlays only
  walk_options = plan.walk.scan_options if plan.walk else {}
  # Every record's data is checked against its CRC here: nothing else reads it before the overlay is loaded.
  for block in _scanned_blocks(file, key=plan.join_key, key_kind=plan.join_kind, check_data=True, **walk_options):
    if plan.walk:
      plan.walk.add(file.record_file(), block)
    wrong = np.flatnonzero(block.key_counts != 1)
    if len(wrong):
      count = int(block.key_counts[wrong[0]])
      raise _wrong_join_key(plan, file, block.first + int(wrong[0]), None if count == record_index.MALFORMED else count)
    yield _Batch(block.first, None, len(block)), block.keys, block.fingerprints()


def _frame_fingerprints(file: base_lib.BaseFile) -> Iterator[int]:
  """Every record's frame fingerprint, streamed."""
  for block in _scanned_blocks(file):
    yield from block.fingerprints().tolist()


def _scanned_blocks(file: base_lib.BaseFile, **scan_options: Any) -> Iterator[Any]:
  """`core.record_index.scan` of a base file, its record count checked against the base's.

  Raises:
    SourceError: naming the file and both counts if they differ; blocks past
      the base's count are counted, never yielded.
  """
  from tfds_builders.core import record_index  # pylint: disable=g-import-not-at-top
  blocks = record_index.scan(file.record_file(), **scan_options)
  if file.num_records is None:  # a walked base: this walk counts it
    yield from blocks
    return
  found = 0
  for block in blocks:
    found += len(block)
    if found > file.num_records:
      found += sum(len(rest) for rest in blocks)
      break
    yield block
  if found != file.num_records:
    raise tfrecord_io.count_mismatch(file.path, file.num_records, found, file.count_source)


def _wrong_join_key(plan: _Plan, file: base_lib.BaseFile, index: int, count: int | None) -> errors.SchemaError:
  if count is None:  # no tf.train.Example
    return errors.SchemaError(
        f"{file.path}: record {index} is not a tf.train.Example (its bytes are not valid "
        "protobuf wire format). Repair or regenerate the base file."
    )
  return errors.SchemaError(
      f"{file.path}: record {index} has {count} values of join key "
      f"{plan.join_key!r} ({plan.join_kind}), not one. Repair the record or choose another join_key."
  )


def _join(plan: _Plan, file: base_lib.BaseFile, start: int, keys: Any) -> np.ndarray:
  """Each record's side-table row (NO_ROW: none, allowed unless missing_policy is `error`)."""
  rows = plan.side.index.rows(keys)
  if plan.missing_policy != "error":
    return rows
  missing = np.flatnonzero(rows == NO_ROW)
  if len(missing):
    first = int(missing[0])
    raise errors.SourceError(
        errors.with_hint(
            f"Base example {file.name} record {start + first} has {plan.join_key}="
            f"{plan.side.show_key(keys[first])}, which side table {plan.side.source} does not have",
            "Add the row, or set missing_policy to 'skip' (drop such examples) or "
            "'default' (with missing_defaults)",
        )
    )
  return rows


def _check_some_match(plan: _Plan, split: str) -> None:
  """Refuses (skip) or warns of (default) a split none of whose examples has a side-table row.

  Join keys are read until one has a row, which is the first block of a
  split whose keys compare; only a split that matches nothing is read whole.

  Raises:
    SourceError: naming the join key, the side table, the split's base
      examples and a key of each, so the mismatch in their form shows.
  """
  if plan.side is None or plan.missing_policy == "error":
    return  # `error` names the first example without a row
  count, first_key = 0, None
  for file in plan.base.splits[split].files:
    for block in _scanned_blocks(file, key=plan.join_key, key_kind=plan.join_kind):
      present = np.flatnonzero(block.key_counts == 1)
      keys = block.keys[present] if isinstance(block.keys, np.ndarray) else [block.keys[i] for i in present]
      if len(keys) and (plan.side.index.rows(keys) != NO_ROW).any():
        return
      count += len(block)
      first_key = keys[0] if first_key is None and len(keys) else first_key
  if not count:
    return
  table = plan.side.source if plan.side.sha256 else "side_table_sql"  # no connection details
  message_text = (
      f"join_key {plan.join_key!r} matched none of the {count} base examples of split {split!r} in side "
      f"table {table} ({len(plan.side)} rows, key column {plan.side.key_column!r}): the first base example "
      f"has {plan.join_key}={_shown_key(plan.side, first_key)}, the table's first key is "
      f"{_shown_key(plan.side, plan.side.index.first())}"
  )
  hint = "Check that join_key and the key column hold the same values (e.g. the same ids, integers not text)"
  if plan.missing_policy == "skip":
    raise errors.SourceError(errors.with_hint(message_text, hint))
  logging.warning("%s; every example gets missing_defaults. %s.", message_text, hint)


def _shown_key(side: side_table_lib.SideTable, key: Any) -> str:
  """A key as the user reads it, and as compared when that is its raw bytes."""
  if key is None:
    return "no key"
  shown = side.show_key(key)
  return f"{shown} (compared as {bytes(key)!r})" if side.key_dtype else shown


def _join_keys(plan: _Plan, file: base_lib.BaseFile, batch: _Batch) -> list[Any]:
  """Every record's join key (protobuf's C parser; faster here than a TF op per batch)."""
  kind, name = plan.join_kind, plan.join_key
  keys = []
  for i, raw in enumerate(batch.records):
    try:
      feature = tf.train.Example.FromString(raw).features.feature
      values = getattr(feature[name], kind).value if name in feature else ()
    except message.DecodeError as error:
      raise _wrong_join_key(plan, file, batch.start + i, None) from error
    if len(values) != 1:
      raise _wrong_join_key(plan, file, batch.start + i, len(values))
    keys.append(values[0])
  return keys
