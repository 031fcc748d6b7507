"""An augmented config resolved once: the base, the new fields, the unmatched-row rule and the path it takes."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from tfds_builders.augmented import base as base_lib
from tfds_builders.augmented import chain as chain_lib
from tfds_builders.augmented import constants as constants_lib
from tfds_builders.augmented import fields
from tfds_builders.augmented import function_calls
from tfds_builders.augmented import overlay_format
from tfds_builders.augmented import side_table as side_table_lib
from tfds_builders.core import errors
from tfds_builders.core import paths
from tfds_builders.core import serialization

# Examples whose function results infer the features of undeclared fields.
INFERENCE_EXAMPLES = 8
# The path of an overlay whose only new fields are constants: it writes no records (`Builder._write_splits`).
CONSTANTS_ONLY = "constants_only"


@dataclasses.dataclass(frozen=True)
class Unmatched:
  """What a base example whose join key has no side-table row becomes (`missing_policy`, resolved).

  Attributes:
    policy: The policy as configured, recorded in the metadata.
    refused: The build fails naming the first such example (`error`).
    left_out: It is left out and counted (`skip`): dropped from a
      materialized version, kept but flagged `_matched` False in an overlay.
    entries: The side-table entries it gets: the default row (`default`),
      or empty values (an overlay's flagged examples); None without a table.
  """

  policy: str
  refused: bool
  left_out: bool
  entries: bytes | None

  def count(self, rows: np.ndarray | None) -> int:
    """How many of a batch's rows are left out."""
    return int(np.count_nonzero(rows == side_table_lib.NO_ROW)) if self.left_out and rows is not None else 0


@dataclasses.dataclass(frozen=True)
class AugmentationPlan:
  """The resolved base, new fields and policies; picklable for Beam workers.

  Attributes:
    mode: `materialize` or `overlay`.
    base: The base; provisional (no counts) while `walk` learns it.
    side: The side table, if any.
    join_key: The base feature matched with the table's key column.
    join_kind: How the base stores it (`int64_list` or `bytes_list`).
    function: The user function's reference, or ''.
    function_specs: The function's fields.
    unmatched: What a base example without a side-table row becomes.
    overwrite: Base features that new fields replace.
    num_workers: Processes calling the function in a local build.
    walk: A raw base whose schema and counts the overlay's own walk learns;
      None when `base` is complete.
    path: This config's path, chosen once: `overlay_from_keys`,
      `overlay_from_records` or `materialized`, the name of its example
      generator in `generators.PATHS`; or `CONSTANTS_ONLY`, which writes
      no records.
    constants: The constant fields (`constant_fields`), encoded per split:
      metadata only in an overlay, every record's last entries in materialize.
  """

  mode: str
  base: base_lib.Base
  side: side_table_lib.SideTable | None
  join_key: str | None
  join_kind: str | None
  function: str
  function_specs: tuple[fields.FieldSpec, ...]
  unmatched: Unmatched
  overwrite: frozenset[str]
  num_workers: int
  walk: base_lib.RecordsSurvey | None
  path: str
  constants: tuple[constants_lib.ConstantField, ...] = ()
  chain: chain_lib.Chain | None = None

  def with_base(self, base: base_lib.Base) -> AugmentationPlan:
    """This plan with a complete base, no longer walked."""
    return dataclasses.replace(self, base=base, walk=None)

  @property
  def drops_examples(self) -> bool:
    """Whether a materialized version leaves examples out: no side-table row under `skip`, or a link's unmatched ones."""
    linked = bool(self.chain) and any(link.metadata.get("missing_policy") == "skip" for link in self.chain.links)
    return self.mode == "materialize" and (self.unmatched.left_out or linked)

  @property
  def new_specs(self) -> tuple[fields.FieldSpec, ...]:
    return (self.side.specs if self.side else ()) + self.function_specs + tuple(c.spec for c in self.constants)

  @property
  def stored_specs(self) -> tuple[fields.FieldSpec, ...]:
    """The new fields an overlay's records hold: all but the constants."""
    return (self.side.specs if self.side else ()) + self.function_specs

  @property
  def features(self) -> tfds.features.FeaturesDict:
    new = {spec.name: spec.feature() for spec in (self.stored_specs if self.mode == "overlay" else self.new_specs)}
    if self.mode == "overlay":
      return tfds.features.FeaturesDict({**new, **overlay_format.alignment_features(self.unmatched.left_out)})
    base_features = self.base.features
    replaced = self.overwrite | (self.chain.overwritten(set(base_features.keys())) if self.chain else set())
    kept = {name: base_features[name] for name in base_features.keys() if name not in replaced}
    chained = self.chain.features(self.overwrite) if self.chain else {}  # compaction: the chain's fields
    return tfds.features.FeaturesDict({**kept, **chained, **new})

  @property
  def dropped_base_keys(self) -> frozenset[str]:
    """Serialized base features replaced by new fields (nested ones included), or by a chain's links."""
    replaced = self.overwrite | (self.chain.overwritten(set(self.base.features.keys())) if self.chain else set())
    return frozenset(
        key for key in self.base.wire_schema
        if key in replaced or key.split("/", 1)[0] in replaced
    )

  def metadata(self, unmatched_counts: Mapping[str, int]) -> dict[str, Any]:
    """What the overlay loader checks (`overlay_format`), what was added from where, and what was left out."""
    return {
        "format": overlay_format.OVERLAY_FORMAT,
        "mode": self.mode,
        "base": {
            **self.base.identity(),
            "location": self.base.location,
            "paths": {name: [file.path for file in split.files] for name, split in self.base.splits.items()},
            "digest": self.base.digest(),
        },
        "fingerprint": overlay_format.FINGERPRINT,
        "new_fields": {spec.name: spec.to_json() for spec in self.new_specs},
        "overwrite_fields": sorted(self.overwrite),
        "missing_policy": self.unmatched.policy,
        "missing": dict(unmatched_counts),
        overlay_format.CONSTANT_FIELDS: constants_lib.metadata_entry(self.constants),
        overlay_format.PARENT: self.chain.reference() if self.chain else None,
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

  @classmethod
  def from_config(cls, config: Any) -> AugmentationPlan:
    """Resolves a checked `augmented.BuilderConfig`: reads the base's schema, the side table, the function's first results."""
    keys_only = reads_keys_only(
        config.mode, bool(config.side_table or config.side_table_sql), config.function, config.verify_base)
    walk, chain = None, None
    if config.base_records:
      sources = {split: config.base_records[split] for split in _known_splits(config)}
      walk = base_lib.RecordsSurvey.of(sources, config.base_compression, config.data_root) if keys_only else None
      base = walk.provisional() if walk else base_lib.open_records(sources, config.base_compression, config.data_root)
    elif chain_lib.is_overlay(base_location(config), config.base_data_dir):
      chain, base = _chain(config)
      if config.mode == "materialize":  # compaction copies the links' records
        chain_lib.check_tfrecord_links(chain, "compaction")
    else:
      base = base_lib.open_prepared(base_location(config), config.base_data_dir, config.splits)
    declared = {name: fields.parse_declared(name, spec, "") for name, spec in config.features.items()}
    side, join_kind = None, None
    if config.side_table or config.side_table_sql:
      _check_join_key_in_chain(config, base, chain)
      side, join_kind = _read_side_table(config, base, declared)
    function_specs = _function_specs(config, base, declared, side) if config.function else ()
    constants = constants_lib.resolve(config.constant_fields, declared, list(base.splits))
    new_specs = (side.specs if side else ()) + function_specs + tuple(constant.spec for constant in constants)
    _check_sources_differ(new_specs)
    unprovided = sorted(set(declared) - {spec.name for spec in new_specs})
    if unprovided:
      raise errors.ConfigError(
          f"features declares {unprovided}, which no source provides (new fields: "
          f"{[spec.name for spec in new_specs]}). Remove them or fix the names."
      )
    if chain:
      _check_chain_names(config, chain, new_specs)
    _check_names(config, base, new_specs, side, chain)
    return cls(
        mode=config.mode, base=base, side=side, join_key=config.join_key or None, join_kind=join_kind,
        function=config.function, function_specs=function_specs, unmatched=_unmatched(config, side),
        overwrite=frozenset(config.overwrite_fields), num_workers=config.num_workers, walk=walk,
        path=CONSTANTS_ONLY if config.mode == "overlay" and not side and not config.function else _path(
            config.mode, keys_only),
        constants=constants, chain=chain,
    )


def reads_keys_only(mode: str, has_table: bool, function: str, verify_base: bool) -> bool:
  """An overlay joined from a side table alone: it reads only frames and join keys."""
  return mode == "overlay" and has_table and not function and not verify_base


def example_key(split: str, index: int) -> str:
  return f"{split}/{index:09d}"


def encoded_field(codec: fields.FieldCodec, value: Any, key: str) -> list[serialization.Payload]:
  """One field's value as its map entry, SchemaError naming the example if it does not fit."""
  try:
    return codec.encode(value)
  except fields.FieldValueError as error:
    raise errors.SchemaError(
        f"Example {key}: field {codec.spec.name!r} from {codec.spec.source}: {error}. {fields.hint_for(codec.spec)}."
    ) from None


def base_location(config: Any) -> str:
  """A base directory resolved against data_root, or the dataset name as given."""
  resolved = paths.resolve(config.base, config.data_root)
  return str(resolved) if (resolved / "dataset_info.json").exists() else config.base


def _path(mode: str, keys_only: bool) -> str:
  """The name of the config's example generator (`generators.PATHS`)."""
  if keys_only:
    return "overlay_from_keys"
  return "overlay_from_records" if mode == "overlay" else "materialized"


def _unmatched(config: Any, side: side_table_lib.SideTable | None) -> Unmatched:
  entries = None
  if side:
    entries = _default_row(config, side) if config.missing_policy == "default" else b"".join(
        part for spec in side.specs for part in fields.FieldCodec(spec).empty())
  return Unmatched(config.missing_policy, refused=config.missing_policy == "error",
                   left_out=config.missing_policy == "skip", entries=entries)


def _known_splits(config: Any) -> list[str]:
  """The base_records splits to augment (default: all)."""
  unknown = [split for split in config.splits if split not in config.base_records]
  if unknown:
    raise errors.ConfigError(f"splits {unknown} are not in base_records; it has {sorted(config.base_records)}.")
  return list(config.splits or config.base_records)


def _read_side_table(
    config: Any, base: base_lib.Base, declared: Mapping[str, fields.FieldSpec]
) -> tuple[side_table_lib.SideTable, str]:
  """The side table (file or SQL rows) with its keys in the base's form, and how the base stores the key."""
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
  return side, join_kind


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
            f"join_key {join_key!r} is not a feature of the base {base.title()}; it has {sorted(schema)}",
            "Set join_key to the base feature holding the key",
        )
    )
  spec = schema[join_key]
  if spec.length != 1 or spec.kind == "float_list":
    raise errors.ConfigError(
        f"join_key {join_key!r} is {spec.spec_text()} in the base; a join key must be one "
        "integer or string per example."
    )
  return spec.kind, None if spec.kind == side_table_lib.INT_KEY else _raw_key_dtype(base, join_key)


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
          f"{tuple(feature.shape)}, encoding {encoding!r} in the base {base.title()}: its stored bytes "
          "encode that value, which no side-table key can be matched with",
          "Join on a scalar integer or string feature (an integer may be stored with encoding 'bytes')",
      )
  )


def _function_specs(
    config: Any,
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
      encoded_field(codec, result[name], call.key)
    specs.append(spec)
  return tuple(specs)


def _first_calls(base: base_lib.Base, count: int) -> Iterator[function_calls.Call]:
  produced = 0
  for split_name, split in base.splits.items():
    for file, offset in zip(split.files, split.offsets):
      for index, raw in enumerate(base_lib.iter_records(file)):
        yield function_calls.Call(example_key(split_name, offset + index), f"record {index} of {file.name}", raw)
        produced += 1
        if produced == count:
          return


def _check_sources_differ(new_specs: Sequence[fields.FieldSpec]) -> None:
  """Refuses a constant field that the side table or the function also provides."""
  sources: dict[str, str] = {}
  for spec in new_specs:
    if spec.name in sources:
      raise errors.ConfigError(
          f"Field {spec.name!r} comes from both {sources[spec.name]} and constant_fields; rename one."
      )
    sources[spec.name] = spec.source


def _check_names(
    config: Any,
    base: base_lib.Base,
    new_specs: Sequence[fields.FieldSpec],
    side: side_table_lib.SideTable | None,
    chain: chain_lib.Chain | None = None,
) -> None:
  base_names = set(base.features.keys()) | set(chain.field_owners() if chain else ())
  new_names = [spec.name for spec in new_specs]
  for spec in new_specs:
    if not spec.name or "/" in spec.name:
      raise errors.ConfigError(f"New field name {spec.name!r} (from {spec.source}) must be non-empty and contain no '/'.")
    if spec.name in overlay_format.ALIGNMENT_FIELDS:
      raise errors.ConfigError(f"New field {spec.name!r} (from {spec.source}) uses a reserved name; rename it.")
    if spec.name in base_names and spec.name not in config.overwrite_fields:
      raise errors.ConfigError(
          errors.with_hint(
              f"New field {spec.name!r} (from {spec.source}) already exists in the base {base.title()}",
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


def _chain(config: Any) -> tuple[chain_lib.Chain, base_lib.Base]:
  """The overlay chain a config's base names, and its root base (every link's records align with it).

  Raises:
    SourceError: for a broken chain (`chain.resolve`), or a root base that
      is no longer the one the chain was built from.
    ConfigError: for `splits` other than the chain's.
  """
  chain = chain_lib.resolve(chain_lib.open_link(base_location(config), config.base_data_dir))
  root = chain_lib.open_root(chain)
  if config.splits and sorted(config.splits) != sorted(root.splits):
    raise errors.ConfigError(
        f"splits={list(config.splits)}: an overlay on {chain.top.title} has its splits "
        f"{sorted(root.splits)}; leave splits out."
    )
  restore = f"Restore the base it was built from at {chain.root['location']}, or rebuild the chain"
  chain_lib.check_root(chain, root, restore)
  return chain, root


def _check_join_key_in_chain(config: Any, base: base_lib.Base, chain: chain_lib.Chain | None) -> None:
  """Refuses a join key that an earlier link of the chain wrote: links see the root base's features only."""
  owners = chain.field_owners() if chain else {}
  name = config.join_key.split("/", 1)[0]
  if name in owners and name not in base.features.keys():
    raise errors.ConfigError(
        errors.with_hint(
            f"join_key {config.join_key!r} is a field of {owners[name].title}; an overlay on an "
            f"overlay joins on the root base's features ({sorted(base.features.keys())})",
            "Join on a root base feature, or materialize (compact) the chain first and build on that",
        )
    )


def _check_chain_names(config: Any, chain: chain_lib.Chain, new_specs: Sequence[fields.FieldSpec]) -> None:
  """Refuses a new field that a link of the chain already writes, unless overwrite_fields names it (the new one wins)."""
  owners = chain.field_owners()
  for spec in new_specs:
    if spec.name in owners and spec.name not in config.overwrite_fields:
      raise errors.ConfigError(
          errors.with_hint(
              f"New field {spec.name!r} (from {spec.source}) is already written by {owners[spec.name].title}",
              f"Rename it, or list it in overwrite_fields (the later link wins)",
          )
      )


def _default_row(config: Any, side: side_table_lib.SideTable) -> bytes:
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


def release_note(config: Any, plan: AugmentationPlan | None) -> str:
  """The release note of a build: what the plan adds to the base (without a plan: what the config names)."""
  base = config.base or "raw TFRecord files"
  if plan is None:
    sources = " and ".join(filter(None, [
        f"side table {config.side_table or 'SQL query'}" if config.side_table or config.side_table_sql else "",
        f"function {config.function}" if config.function else "",
        "constant_fields" if config.constant_fields else "",
    ]))
    if not sources and config.mode == "materialize":  # compaction; the plan names the chain
      return f"Compacts the overlay chain of {base} into one dataset."
    return f"Adds fields from {sources} to {base} ({config.mode})."
  added = "; ".join(
      f"{spec.name} ({spec.spec_text()}) from {spec.source}" for spec in plan.new_specs
  )
  base_name = f"{plan.base.name} {plan.base.version}" if plan.base.version else plan.base.title()
  if plan.chain and config.mode == "materialize":
    return f"Compacts the overlay chain {plan.chain.describe()} into one dataset" + (f"; adds {added}." if added else ".")
  return f"Adds to {base_name} ({config.mode}): {added}."


def compacts(config: Any) -> bool:
  """A materialize config whose base is an overlay: the chain's fields are its source (compaction)."""
  return config.mode == "materialize" and bool(config.base) and chain_lib.is_overlay(
      base_location(config), config.base_data_dir)
