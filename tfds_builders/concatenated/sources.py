"""Sources of a concatenated dataset (prepared TFDS datasets, raw TFRecords) and the split mapping."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from typing import Any

import tensorflow_datasets as tfds

from tfds_builders.core import errors
from tfds_builders.core import example_schema
from tfds_builders.core import paths
from tfds_builders.core import tfrecord_io

SOURCE_KINDS = ("tfrecords", "dataset", "dataset_dir")
_SOURCE_KEYS = {
    "tfrecords": {"name", "tfrecords", "compression"},
    "dataset": {"name", "dataset", "data_dir"},
    "dataset_dir": {"name", "dataset_dir"},
}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
# A raw source given as one glob (not a {split: glob} dict) holds this split.
DEFAULT_RAW_SPLIT = "train"


@dataclasses.dataclass(frozen=True)
class SourceSpec:
  """One entry of the config's `sources`, checked but not opened."""

  name: str
  kind: str  # one of SOURCE_KINDS
  location: Any  # tfrecords: {split: patterns}; dataset: name; dataset_dir: path
  data_dir: str | None = None
  compression: str = "auto"
  compression_field: str = "compression"  # as messages about a compression mismatch name it

  @classmethod
  def parse(cls, entry: Any, position: int) -> SourceSpec:
    """Reads `{"name": ..., "tfrecords" | "dataset" | "dataset_dir": ...}`."""
    where = f"sources[{position}]"
    if not isinstance(entry, Mapping):
      raise errors.ConfigError(
          f"{where} is {entry!r}; give a dict such as "
          '{"name": "site_a", "tfrecords": "site_a/*.tfrecord"} or '
          '{"name": "site_b", "dataset": "my_dataset:1.0.0", "data_dir": "..."}.'
      )
    kinds = [kind for kind in SOURCE_KINDS if kind in entry]
    if len(kinds) != 1:
      raise errors.ConfigError(
          f"{where} ({entry.get('name', 'unnamed')!r}) needs exactly one of "
          f"{SOURCE_KINDS}, got {kinds or 'none'}."
      )
    kind = kinds[0]
    unknown = sorted(set(entry) - _SOURCE_KEYS[kind])
    if unknown:
      raise errors.ConfigError(
          f"{where}: unknown keys {unknown} for a {kind!r} source; allowed: "
          f"{sorted(_SOURCE_KEYS[kind])}."
      )
    name = entry.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
      raise errors.ConfigError(
          f"{where} has name {name!r}; give each source a name of letters, "
          "digits, '_', '.' or '-' (it becomes a class of the `source` feature)."
      )
    location = entry[kind]
    if kind == "tfrecords":
      location = _split_patterns(location, f"source {name!r}")
    elif not isinstance(location, str) or not location:
      raise errors.ConfigError(f"source {name!r}: {kind} must be a non-empty string.")
    return cls(
        name=name, kind=kind, location=location, data_dir=entry.get("data_dir"),
        compression=entry.get("compression", "auto"), compression_field=f"{where}.compression",
    )


def _split_patterns(value: Any, where: str) -> dict[str, list[str]]:
  """`tfrecords` as {split: [patterns]}; one glob or list means split `train`."""
  if isinstance(value, str):
    value = [value]
  if isinstance(value, (list, tuple)):
    value = {DEFAULT_RAW_SPLIT: list(value)}
  if not isinstance(value, Mapping) or not value:
    raise errors.ConfigError(
        f"{where}: tfrecords must be a glob, a list of globs, or "
        '{"split": glob(s)}, got ' + repr(value)
    )
  result = {}
  for split, patterns in value.items():
    patterns = [patterns] if isinstance(patterns, str) else list(patterns)
    if not patterns or not all(isinstance(p, str) and p for p in patterns):
      raise errors.ConfigError(f"{where}: split {split!r} lists no files or globs.")
    result[str(split)] = patterns
  return result


def parse_sources(entries: Sequence[Any]) -> list[SourceSpec]:
  """Parses and checks the config's `sources`: at least one, unique names."""
  if not entries:
    raise errors.ConfigError(
        "`sources` is empty; list the datasets to concatenate, e.g. "
        '[{"name": "a", "tfrecords": "a/*.tfrecord"}, {"name": "b", "dataset": "b:1.0.0"}].'
    )
  specs = [SourceSpec.parse(entry, position) for position, entry in enumerate(entries)]
  seen: set[str] = set()
  for spec in specs:
    if spec.name in seen:
      raise errors.ConfigError(
          f"Duplicate source name {spec.name!r}: every source needs its own name. "
          "List each source once."
      )
    seen.add(spec.name)
  return specs


# ----------------------------------------------------------- split mapping --


@dataclasses.dataclass(frozen=True)
class SplitPart:
  """One source split that goes into an output split: `source:split`."""

  source: str
  split: str

  def __str__(self) -> str:
    return f"{self.source}:{self.split}"


SplitMapping = dict[str, list[SplitPart]]


def parse_split_mapping(
    mapping: Any, available: Mapping[str, Sequence[str]]
) -> SplitMapping:
  """Resolves the config's `splits` into {output split: [source:split, ...]}.

  Args:
    mapping: `None` (each split name of the sources maps to itself), a string
      like `"a:train + b:validation -> train; a:test -> test"`, a list of such
      rules, or a dict `{"train": ["a:train", "b:validation"]}` (a list or a
      `+`-joined string). A bare source name means its split of the output's
      name.
    available: Source name -> its split names, in config order.

  Raises:
    ConfigError: for unknown sources or splits, a malformed rule, or a source
      split listed twice in one output split.
  """
  if mapping is None or mapping == {} or mapping == []:
    return _default_mapping(available)
  if isinstance(mapping, str):
    mapping = [rule for rule in re.split(r"[;\n]", mapping) if rule.strip()]
  if isinstance(mapping, (list, tuple)):
    rules: dict[str, list[str]] = {}
    for rule in mapping:
      if not isinstance(rule, str) or rule.count("->") != 1:
        raise errors.ConfigError(
            f"Split rule {rule!r} is malformed; write 'SOURCE:SPLIT + ... -> OUTPUT', "
            "e.g. 'a:train + b:validation -> train'."
        )
      parts, output = (side.strip() for side in rule.split("->"))
      rules.setdefault(output, []).extend(_terms(parts))
    mapping = rules
  if not isinstance(mapping, Mapping):
    raise errors.ConfigError(f"`splits` must be a string, a list or a dict, got {mapping!r}.")
  resolved: SplitMapping = {}
  for output, parts in mapping.items():
    terms = _terms(parts) if isinstance(parts, str) else [str(p).strip() for p in parts]
    if not output or not re.match(r"^\w+$", str(output)) or not terms:
      raise errors.ConfigError(
          f"Output split {output!r} -> {parts!r}: name each output split with letters, "
          "digits or '_' and give it at least one SOURCE:SPLIT."
      )
    resolved[str(output)] = [_part(term, str(output), available) for term in terms]
    duplicates = sorted({str(p) for p in resolved[str(output)] if resolved[str(output)].count(p) > 1})
    if duplicates:
      raise errors.ConfigError(
          f"Output split {output!r} lists {duplicates} more than once; list each "
          "source split once (duplicate source)."
      )
  return resolved


def _terms(text: str) -> list[str]:
  return [term.strip() for term in text.split("+") if term.strip()]


def _part(term: str, output: str, available: Mapping[str, Sequence[str]]) -> SplitPart:
  source, _, split = term.partition(":")
  source, split = source.strip(), (split.strip() or output)
  if source not in available:
    raise errors.ConfigError(
        f"Split mapping {term!r} -> {output!r} names source {source!r}, which is not "
        f"in `sources` ({list(available)})."
    )
  if split not in available[source]:
    raise errors.ConfigError(
        f"Split mapping {term!r} -> {output!r}: source {source!r} has no split "
        f"{split!r}; it has {list(available[source])}."
    )
  return SplitPart(source, split)


def _default_mapping(available: Mapping[str, Sequence[str]]) -> SplitMapping:
  """Every split name of any source, fed by each source that has it, in order."""
  names = list(dict.fromkeys(split for splits in available.values() for split in splits))
  return {
      split: [SplitPart(source, split) for source, splits in available.items() if split in splits]
      for split in names
  }


# -------------------------------------------------------- opened sources --


@dataclasses.dataclass(frozen=True)
class RecordPart:
  """One record file of one split of a source, with its place in that split."""

  file: tfrecord_io.RecordFile
  file_name: str  # stable and never absolute: used in keys and provenance
  num_records: int
  first_index: int  # position of its first record in the source split


@dataclasses.dataclass
class Source:
  """An opened source: its features, and its record files by split."""

  spec: SourceSpec
  features: tfds.features.FeaturesDict
  typed: bool  # False for raw TFRecords, whose features are inferred from the wire
  parts: dict[str, list[RecordPart]]
  schema: dict[str, example_schema.FeatureSpec] | None = None  # raw sources only
  full_name: str | None = None  # prepared sources: name/config/version
  version: str | None = None

  @property
  def name(self) -> str:
    return self.spec.name

  def num_examples(self, split: str) -> int:
    return sum(part.num_records for part in self.parts[split])

  def files(self) -> list[str]:
    return [part.file.name for parts in self.parts.values() for part in parts]

  def provenance_record(self) -> dict[str, Any]:
    """Dataset-level provenance of this source."""
    record: dict[str, Any] = {
        "name": self.name,
        "kind": "tfds" if self.typed else "tfrecord",
        "location": self.spec.location,
        "num_examples": {split: self.num_examples(split) for split in self.parts},
    }
    if self.typed:
      record.update(dataset=self.full_name, version=self.version, data_dir=self.spec.data_dir)
    else:
      record["files"] = {
          split: [part.file_name for part in parts] for split, parts in self.parts.items()
      }
    return record


def available_splits(spec: SourceSpec, data_root: str | None) -> list[str]:
  """The split names of a source, without reading any record."""
  if spec.kind == "tfrecords":
    return list(spec.location)
  return list(_prepared_builder(spec, data_root).info.splits)


def open_source(spec: SourceSpec, splits: Sequence[str], data_root: str | None) -> Source:
  """Opens the given splits of a source, inferring raw sources' schema.

  Raises:
    SourceError: naming the source, if it does not exist, a split is empty,
      or a record is corrupt.
    SchemaError: naming the file and record, if raw records disagree.
  """
  try:
    if spec.kind == "tfrecords":
      return _open_raw(spec, splits, data_root)
    return _open_prepared(spec, splits, data_root)
  except (errors.SourceError, errors.SchemaError) as error:
    raise type(error)(f"source {spec.name!r}: {error}") from error


def _prepared_builder(spec: SourceSpec, data_root: str | None) -> tfds.core.DatasetBuilder:
  if spec.kind == "dataset_dir":
    return tfrecord_io.prepared_builder(str(paths.resolve(spec.location, data_root)))
  data_dir = str(paths.resolve(spec.data_dir, data_root)) if spec.data_dir else None
  try:
    return tfrecord_io.prepared_builder(spec.location, data_dir)
  except errors.SourceError as error:
    raise errors.SourceError(f"source {spec.name!r}: {error}") from error


def _open_prepared(spec: SourceSpec, splits: Sequence[str], data_root: str | None) -> Source:
  builder = _prepared_builder(spec, data_root)
  parts = {}
  for split in splits:
    prepared = tfrecord_io.prepared_split(builder, split)
    if not prepared.num_examples:
      raise errors.SourceError(
          f"split {split!r} of {prepared.dataset} has no examples; leave it out of "
          "the split mapping."
      )
    lengths = builder.info.splits[split].shard_lengths
    missing = [file.name for file in prepared.files if not file.path.exists()]
    if missing:
      raise errors.SourceError(
          errors.with_hint(
              f"split {split!r} of {prepared.dataset}: shard {missing[0]} is missing "
              f"({len(missing)} of its {len(prepared.files)} shards are)",
              "The prepared dataset is incomplete: rebuild it, or fetch it again",
          )
      )
    starts = [sum(lengths[:i]) for i in range(len(lengths))]
    parts[split] = [
        RecordPart(file, file.path.name, count, start)
        for file, count, start in zip(prepared.files, lengths, starts, strict=True)
    ]
  return Source(
      spec=spec, features=builder.info.features, typed=True, parts=parts,
      full_name=builder.info.full_name, version=str(builder.info.version),
  )


def _open_raw(spec: SourceSpec, splits: Sequence[str], data_root: str | None) -> Source:
  parts: dict[str, list[RecordPart]] = {}
  for split in splits:
    files = tfrecord_io.expand(spec.location[split], compression=spec.compression, root=data_root,
                               compression_field=spec.compression_field)
    names = paths.source_names([file.path for file in files], data_root)
    parts[split] = [RecordPart(file, name, 0, 0) for file, name in zip(files, names)]
  files = [part.file for split_parts in parts.values() for part in split_parts]
  schema, file_counts = example_schema.infer_files(files)
  if schema is None:
    raise errors.SourceError(
        f"no records in {[p.file_name for ps in parts.values() for p in ps]}; the "
        "source is empty. Check the files, or leave the source out."
    )
  counts = {file.name: count for file, count in zip(files, file_counts)}
  for split, split_parts in parts.items():
    start = 0
    counted = []
    for part in split_parts:
      counted.append(dataclasses.replace(part, num_records=counts[part.file.name], first_index=start))
      start += counts[part.file.name]
    if not start:
      raise errors.SourceError(
          f"split {split!r} has no records in {[p.file_name for p in split_parts]}; "
          "check the files, or leave the split out."
      )
    parts[split] = counted
  return Source(
      spec=spec, features=example_schema.to_features(schema), typed=False,
      parts=parts, schema=schema,
  )
