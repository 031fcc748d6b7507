"""The output examples of one base file, one generator per path (overlay from join keys, overlay from records, materialize)."""

from __future__ import annotations

import dataclasses
import functools
import itertools
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from absl import logging
from etils import epath
from google.protobuf import message
import numpy as np
from tensorflow_datasets.proto import tf_example_pb2  # the Example message without importing TensorFlow

from tfds_builders.augmented import base as base_lib
from tfds_builders.augmented import chain as chain_lib
from tfds_builders.augmented import constants as constants_lib
from tfds_builders.augmented import fields
from tfds_builders.augmented import function_calls
from tfds_builders.augmented import overlay_format
from tfds_builders.augmented import plan as plan_lib
from tfds_builders.augmented import side_table as side_table_lib
from tfds_builders.core import errors
from tfds_builders.core import fast
from tfds_builders.core import serialization
from tfds_builders.core import shard_writer
from tfds_builders.core import tfrecord_io

# Records handed together to a worker process.
_BATCH_RECORDS = 128
_BATCH_BYTES = 8 * 1024 * 1024

FileExamples = Callable[["BuildContext", str, int, int], Iterator[shard_writer.StreamItem]]


@dataclasses.dataclass(frozen=True)
class UnmatchedTally:
  """Per split, the base examples left out (no side-table row under `skip`), as each file's generator counts them.

  One small file per base file in the build's directory, so that Beam
  workers count too; the directory goes with the build.
  """

  directory: str

  def record(self, split: str, file_index: int, count: int) -> None:
    (epath.Path(self.directory) / f"{split}.{file_index}").write_text(str(count))

  def totals(self, splits: Sequence[str]) -> dict[str, int]:
    directory = epath.Path(self.directory)
    return {split: sum(int(path.read_text()) for path in directory.glob(f"{split}.*")) for split in splits}


@dataclasses.dataclass(frozen=True)
class BuildContext:
  """What one augmented build holds, passed to every generator.

  Attributes:
    plan: The plan this build runs (a Beam build's walked base counted up front).
    pool: Worker processes calling the function (a local build with
      `num_workers > 1`), else None: calls run in the generator's process.
    function: The user function, resolved once for this local build; None
      without a function, and on Beam, whose workers resolve it themselves.
    walk: What the walk of a raw base learns as the build reads it, else None.
    unmatched: Where the generators count the examples they leave out.
  """

  plan: plan_lib.AugmentationPlan
  pool: Any
  function: function_calls.ResolvedFunction | None
  walk: base_lib.RecordsWalk | None
  unmatched: UnmatchedTally


def walked_split(context: BuildContext, split: str) -> Iterator[shard_writer.StreamItem]:
  """The output examples of a walked base's split: its files in order, each counted once walked."""
  file_examples, offset = PATHS[context.plan.path], 0
  for index in range(len(context.plan.base.splits[split].files)):
    count = 0
    for keys, records in file_examples(context, split, index, offset):
      count += len(keys)
      yield keys, records
    context.walk.counted(split, index, count)
    offset += count


def overlay_from_keys(context: BuildContext, split: str, file_index: int, offset: int) -> Iterator[shard_writer.StreamItem]:
  """An overlay joined from a side table alone: frames and join keys read in one compiled pass.

  Its examples are assembled and framed a block at a time (`core.record_blocks`).
  """
  plan = context.plan
  file = plan.base.splits[split].files[file_index]
  alignment = overlay_format.AlignmentEntries(plan.unmatched.left_out)
  left_out = 0
  for batch, keys, fingerprints in _scanned_batches(plan, file, context.walk):
    rows = _join(plan, file, batch.start, keys)
    left_out += plan.unmatched.count(rows)
    first = offset + batch.start
    aligned = alignment.entries(np.arange(first, first + batch.size, dtype=np.int64), fingerprints,
                                _kept(plan, rows))
    framed = fast.record_blocks.framed_examples(plan.side.entries, rows, aligned, plan.unmatched.entries)
    yield _keys(split, range(first, first + batch.size)), framed
  context.unmatched.record(split, file_index, left_out)


def overlay_from_records(context: BuildContext, split: str, file_index: int, offset: int) -> Iterator[shard_writer.StreamItem]:
  """An overlay that reads the records: the new fields and each record's alignment, the base's bytes left out.

  Fingerprints come from a separate walk of the file's frames.
  """
  plan = context.plan
  file = plan.base.splits[split].files[file_index]
  alignment = overlay_format.AlignmentEntries(plan.unmatched.left_out)
  frames = _frame_fingerprints(file)
  codecs = [fields.FieldCodec(spec) for spec in plan.function_specs]
  empty = [codec.empty() for codec in codecs]  # an unmatched example's function fields

  def aligned(batch: _Batch) -> _Batch:
    indices = np.arange(offset + batch.start, offset + batch.start + batch.size, dtype=np.int64)
    fingerprints = np.fromiter(itertools.islice(frames, batch.size), np.int64, batch.size)
    batch.alignment = alignment.entries(indices, fingerprints, _kept(plan, batch.rows))
    return batch

  left_out = 0
  for batch, results in _joined_batches(context, split, file, offset, aligned):
    left_out += plan.unmatched.count(batch.rows)
    called = _kept(plan, batch.rows)
    results_iter = iter(results)
    for i, entries in enumerate(_side_entries(plan, batch)):
      key = plan_lib.example_key(split, offset + batch.start + i)
      if codecs:
        entries += _function_entries(plan, codecs, next(results_iter), key, f"record {batch.start + i} of {file.name}") if (
            called is None or called[i]) else empty
      entries.append([batch.alignment[i].tobytes()])
      yield key, serialization.example(entries)
  context.unmatched.record(split, file_index, left_out)


def materialized(context: BuildContext, split: str, file_index: int, offset: int) -> Iterator[shard_writer.StreamItem]:
  """A new version: each base record's bytes as they are (replaced features dropped), then the new fields."""
  plan = context.plan
  file = plan.base.splits[split].files[file_index]
  codecs = [fields.FieldCodec(spec) for spec in plan.function_specs]
  dropped = plan.dropped_base_keys
  drop = (lambda name: None if name in dropped else name) if dropped else None
  constant_entries = [[constants_lib.split_entries(plan.constants, split)]] if plan.constants else []
  # Compaction: the chain's fields, byte-exact from its links, before this config's.
  compacted = chain_lib.CompactedEntries(plan.chain, split, file, offset, plan.overwrite) if plan.chain else None
  left_out = 0
  for batch, results in _joined_batches(context, split, file, offset, None):
    left_out += plan.unmatched.count(batch.rows)
    called = _kept(plan, batch.rows)
    results_iter = iter(results)
    side_entries = _side_entries(plan, batch)
    chained = compacted.entries(batch.start, batch.size) if compacted else None
    for i in range(batch.size) if called is None else np.flatnonzero(called).tolist():
      key = plan_lib.example_key(split, offset + batch.start + i)
      entries = side_entries[i]
      if codecs:
        entries += _function_entries(plan, codecs, next(results_iter), key, f"record {batch.start + i} of {file.name}")
      if chained is not None:
        if chained[i] is None:  # a link flagged it unmatched: left out, as materialize leaves out `skip`
          continue
        entries = [[chained[i]], *entries]
      entries += constant_entries  # after the side table's and the function's, in field order
      raw = batch.records[i]
      base_part = serialization.rename_features(raw, drop) if drop else raw
      yield key, serialization.merge_examples(base_part, serialization.example(entries))
  context.unmatched.record(split, file_index, left_out)


# The generator of each path (`AugmentationPlan.path`, chosen once when the plan is resolved).
PATHS: dict[str, FileExamples] = {
    "overlay_from_keys": overlay_from_keys,
    "overlay_from_records": overlay_from_records,
    "materialized": materialized,
}


# -------------------------------------------------------------- batches --


@dataclasses.dataclass
class _Batch:
  """Consecutive records of one base file and what was looked up for them."""

  start: int  # index of the first record in the file
  records: list[bytes] | None  # None: only keys and fingerprints were read (overlay)
  size: int
  rows: np.ndarray | None = None  # per record, its side-table row; NO_ROW: none (skip or default)
  alignment: np.ndarray | None = None  # per record, its overlay alignment entries (a row of bytes)


def _keys(split: str, indices: range) -> shard_writer.LazyKeys:
  """The keys of consecutive examples of a split, made when asked for."""
  return shard_writer.LazyKeys(indices, functools.partial(plan_lib.example_key, split))


def _joined_batches(
    context: BuildContext, split: str, file: base_lib.BaseFile, offset: int,
    then: Callable[[_Batch], _Batch] | None,
) -> Iterator[tuple[_Batch, Sequence[dict[str, Any]]]]:
  """A file's record batches with their side-table rows (then `then`), and the function's results.

  The function runs on the examples not left out, in the context's worker
  pool if one is open; results come back in batch order.
  """
  plan = context.plan

  def looked_up(batch: _Batch) -> _Batch:
    if plan.side is not None:
      batch.rows = _join(plan, file, batch.start, _join_keys(plan, file, batch))
    return then(batch) if then else batch

  batches = map(looked_up, _batches(file))
  if not plan.function:
    yield from ((batch, ()) for batch in batches)
    return
  resolved = context.function or function_calls.resolve(plan.function, plan.base.features_source)  # on a Beam worker
  runner = function_calls.FunctionRunner(resolved, plan.num_workers, context.pool)

  def calls_of(batch: _Batch) -> list[function_calls.Call]:
    called = _kept(plan, batch.rows)
    return [
        function_calls.Call(plan_lib.example_key(split, offset + batch.start + i), f"record {batch.start + i} of {file.name}", raw)
        for i, raw in enumerate(batch.records)
        if called is None or called[i]
    ]

  yield from runner.map((batch, calls_of(batch)) for batch in batches)


def _kept(plan: plan_lib.AugmentationPlan, rows: np.ndarray | None) -> np.ndarray | None:
  """Per record, whether it keeps its new fields (not left out, `_matched` in an overlay); None: every record does."""
  return rows != side_table_lib.NO_ROW if plan.unmatched.left_out and rows is not None else None


def _side_entries(plan: plan_lib.AugmentationPlan, batch: _Batch) -> list[list[Any]]:
  """Per record, the start of its new fields' entries: its side-table row (or the unmatched entries)."""
  if batch.rows is None:
    return [[] for _ in range(batch.size)]
  fallback, table = plan.unmatched.entries, plan.side.entries
  return [[[fallback if row == side_table_lib.NO_ROW else table.item(row)]] for row in batch.rows.tolist()]


def _function_entries(
    plan: plan_lib.AugmentationPlan, codecs: Sequence[fields.FieldCodec], result: dict[str, Any], key: str, where: str
) -> list[list[serialization.Payload]]:
  """The function's result for one example as map entries, checked field by field."""
  if len(result) != len(codecs) or any(codec.spec.name not in result for codec in codecs):
    raise errors.SchemaError(
        f"Function {plan.function} returned fields {sorted(result)} on example {key} ({where}); "
        f"the first examples returned {sorted(codec.spec.name for codec in codecs)}. "
        "Return the same fields for every example."
    )
  return [plan_lib.encoded_field(codec, result[codec.spec.name], key) for codec in codecs]


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


# ---------------------------------------------------------- the join --


def _scanned_batches(
    plan: plan_lib.AugmentationPlan, file: base_lib.BaseFile, walk: base_lib.RecordsWalk | None
) -> Iterator[tuple[_Batch, list[Any], np.ndarray]]:
  """`(batch, join keys, fingerprints)` of a base file, reading only frames and join keys.

  A walked base's records are also checked against its schema in the same pass.
  """
  walk_options = walk.scan_options if walk else {}
  # Every record's data is checked against its CRC here: nothing else reads it before the overlay is loaded.
  for block in _scanned_blocks(file, key=plan.join_key, key_kind=plan.join_kind, check_data=True, **walk_options):
    if walk:
      walk.add(file.record_file(), block)
    wrong = np.flatnonzero(block.key_counts != 1)
    if len(wrong):
      count = int(block.key_counts[wrong[0]])
      raise _wrong_join_key(plan, file, block.first + int(wrong[0]), None if count == fast.record_index.MALFORMED else count)
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
  blocks = base_lib.scan(file, **scan_options)  # TFRecord frames, or ArrayRecord records read
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


def _wrong_join_key(plan: plan_lib.AugmentationPlan, file: base_lib.BaseFile, index: int, count: int | None) -> errors.SchemaError:
  if count is None:  # no tf.train.Example
    return errors.SchemaError(
        f"{file.path}: record {index} is not a tf.train.Example (its bytes are not valid "
        "protobuf wire format). Repair or regenerate the base file."
    )
  return errors.SchemaError(
      f"{file.path}: record {index} has {count} values of join key "
      f"{plan.join_key!r} ({plan.join_kind}), not one. Repair the record or choose another join_key."
  )


def _join(plan: plan_lib.AugmentationPlan, file: base_lib.BaseFile, start: int, keys: Any) -> np.ndarray:
  """Each record's side-table row (side_table_lib.NO_ROW: none, allowed unless missing_policy is `error`)."""
  rows = plan.side.index.rows(keys)
  if not plan.unmatched.refused:
    return rows
  missing = np.flatnonzero(rows == side_table_lib.NO_ROW)
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


def check_some_match(plan: plan_lib.AugmentationPlan, split: str) -> None:
  """Refuses (skip) or warns of (default) a split none of whose examples has a side-table row.

  Join keys are read until one has a row, which is the first block of a
  split whose keys compare; only a split that matches nothing is read whole.

  Raises:
    SourceError: naming the join key, the side table, the split's base
      examples and a key of each, so the mismatch in their form shows.
  """
  if plan.side is None or plan.unmatched.refused:
    return  # `error` names the first example without a row
  count, first_key = 0, None
  for file in plan.base.splits[split].files:
    for block in _scanned_blocks(file, key=plan.join_key, key_kind=plan.join_kind):
      present = np.flatnonzero(block.key_counts == 1)
      keys = block.keys[present] if isinstance(block.keys, np.ndarray) else [block.keys[i] for i in present]
      if len(keys) and (plan.side.index.rows(keys) != side_table_lib.NO_ROW).any():
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
  if plan.unmatched.left_out:
    raise errors.SourceError(errors.with_hint(message_text, hint))
  logging.warning("%s; every example gets missing_defaults. %s.", message_text, hint)


def _shown_key(side: side_table_lib.SideTable, key: Any) -> str:
  """A key as the user reads it, and as compared when that is its raw bytes."""
  if key is None:
    return "no key"
  shown = side.show_key(key)
  return f"{shown} (compared as {bytes(key)!r})" if side.key_dtype else shown


def _join_keys(plan: plan_lib.AugmentationPlan, file: base_lib.BaseFile, batch: _Batch) -> list[Any]:
  """Every record's join key (protobuf's C parser; faster here than a TF op per batch)."""
  kind, name = plan.join_kind, plan.join_key
  keys = []
  for i, raw in enumerate(batch.records):
    try:
      feature = tf_example_pb2.Example.FromString(raw).features.feature
      values = getattr(feature[name], kind).value if name in feature else ()
    except message.DecodeError as error:
      raise _wrong_join_key(plan, file, batch.start + i, None) from error
    if len(values) != 1:
      raise _wrong_join_key(plan, file, batch.start + i, len(values))
    keys.append(values[0])
  return keys
