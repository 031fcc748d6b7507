"""Seeded fuzzers of the parsers that read untrusted bytes, each input checked against an oracle."""

from __future__ import annotations

import argparse
import ast
import collections
import csv
import dataclasses
import gzip
import io
import json
import mmap
import os
import pathlib
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
import zipfile
import zlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as `python scripts/fuzz.py` from anywhere
  sys.path.insert(0, str(REPO))

_USAGE = """\
Each PARSER gets --count mutated inputs, generated from --seed (the same seed
gives the same inputs), in its own worker process: a crash (a signal) or an
input running longer than --timeout seconds is a finding, and the worker is
restarted after that input. Hard findings (crash, hang, undocumented
exception, an input accepted that the oracle rejects, a wrong result, a path
outside the target) make the exit code 1; inputs rejected that the oracle
accepts are reported as discrepancies. The last line of stdout is a one-line
JSON summary. CI runs `fuzz.py all --count 10000 --seed 0`; a long run is
e.g. `fuzz.py walk --count 1000000 --seed 7`. To rerun one finding:
`fuzz.py PARSER --replay HEX --meta JSON` (both as printed).
"""

# Findings that fail a run, and those only reported.
HARD = ("crash", "hang", "undocumented_exception", "accepted_invalid", "wrong_result", "unsafe_path",
        "oracle_disagreement")
SOFT = ("rejected_valid",)
_EXAMPLES_PER_KIND = 3  # findings printed in full per kind; the others are counted
_PROGRESS_BYTES = 4 * 1024 * 1024  # the input being checked, readable after a crash
_NOT_STARTED = -1  # the progress index while a worker warms up (compiles, imports)
_FINISHED = -2  # ... and once it has checked its last input (exiting can take seconds: not a hang)


@dataclasses.dataclass
class Case:
  """One generated input: the bytes a parser reads, and how to read them (JSON values)."""

  data: bytes
  meta: dict[str, Any]


@dataclasses.dataclass
class Outcome:
  """What checking one input found: whether the parser accepted it, and findings as (kind, detail)."""

  accepted: bool
  findings: list[tuple[str, str]] = dataclasses.field(default_factory=list)


# --------------------------------------------------------------- mutation --


def _pick(rng: np.random.Generator, items: Sequence[Any]) -> Any:
  return items[int(rng.integers(len(items)))]


def _weighted(rng: np.random.Generator, weights: dict[str, float]) -> str:
  names = list(weights)
  odds = np.array([weights[name] for name in names], np.float64)
  return names[int(rng.choice(len(names), p=odds / odds.sum()))]


def _random_bytes(rng: np.random.Generator, size: int) -> bytes:
  return rng.integers(0, 256, size, dtype=np.uint8).tobytes()


_BYTE_OPS = ("bitflip", "set_byte", "insert", "delete", "token", "duplicate", "truncate")
_INTERESTING_BYTES = (0x00, 0x01, 0x7F, 0x80, 0xFF, 0x0A, 0x0D, 0x22, 0x2C)


def mutate_bytes(rng: np.random.Generator, data: bytes, tokens: Sequence[bytes]) -> tuple[bytes, str]:
  """One byte-level mutation of data, with dictionary tokens as in AFL; returns (bytes, its name)."""
  op = _pick(rng, _BYTE_OPS)
  buf = bytearray(data)
  size = len(buf)
  at = int(rng.integers(size + 1))
  if op == "bitflip" and size:
    buf[min(at, size - 1)] ^= 1 << int(rng.integers(8))
  elif op == "set_byte" and size:
    buf[min(at, size - 1)] = _pick(rng, _INTERESTING_BYTES) if rng.random() < 0.6 else int(rng.integers(256))
  elif op == "insert":
    buf[at:at] = _random_bytes(rng, int(rng.integers(1, 9)))
  elif op == "delete" and size:
    del buf[at:at + int(rng.integers(1, 9))]
  elif op == "token":
    token = _pick(rng, tokens)
    if rng.random() < 0.5:
      buf[at:at] = token
    else:
      buf[at:at + len(token)] = token
  elif op == "duplicate" and size:
    start = int(rng.integers(size))
    buf[at:at] = buf[start:start + int(rng.integers(1, 17))]
  elif op == "truncate" and size:
    del buf[int(rng.integers(size)):]
  return bytes(buf), op


def _mutate_times(rng: np.random.Generator, data: bytes, tokens: Sequence[bytes], names: list[str]) -> bytes:
  for _ in range(int(rng.integers(1, 4))):
    data, op = mutate_bytes(rng, data, tokens)
    names.append(op)
  return data


def minimize(data: bytes, still_fails: Callable[[bytes], bool], budget: int = 400) -> bytes:
  """A smaller input that still fails: chunks deleted while the finding persists (delta debugging, bounded)."""
  chunk = max(1, len(data) // 2)
  while budget > 0:
    at, shrunk = 0, False
    while at < len(data) and budget > 0:
      candidate = data[:at] + data[at + chunk:]
      budget -= 1
      if still_fails(candidate):
        data, shrunk = candidate, True
      else:
        at += chunk
    if chunk == 1 and not shrunk:
      break
    chunk = max(1, chunk // 2)
  return data


# ------------------------------------------------------------------- wire --


def varint(value: int) -> bytes:
  """Protobuf's varint of value taken as uint64 (so negatives and 2**63.. take 10 bytes)."""
  from tfds_builders.core import serialization  # pylint: disable=import-outside-toplevel  # imports TFDS

  return serialization.varint(value & ((1 << 64) - 1))


def non_minimal_varint(value: int, extra: int) -> bytes:
  """value's varint padded with `extra` continuation bytes of zero bits (still value for protobuf)."""
  raw = bytearray(varint(value))
  raw[-1] |= 0x80
  return bytes(raw + b"\x80" * (extra - 1) + b"\x00")


def delimited(field: int, payload: bytes) -> bytes:
  from tfds_builders.core import wire  # pylint: disable=import-outside-toplevel

  return varint(wire.tag(field)) + varint(len(payload)) + payload


def read_varint(data: bytes, pos: int, end: int) -> tuple[int | None, int]:
  """(value as uint64, position after it) or (None, pos) if malformed (as protobuf: at most 10 bytes)."""
  value, shift = 0, 0
  while pos < end and shift < 70:
    byte = data[pos]
    pos += 1
    value |= (byte & 0x7F) << shift
    if byte < 0x80:
      return value & ((1 << 64) - 1), pos
    shift += 7
  return None, pos


_MASKED_CRC: list[Callable[[bytes], int]] = []


def masked_crc(data: bytes) -> int:
  """TFRecord's masked CRC32C (tfds_builders.core.fast.crc32c, checked against TF by its tests)."""
  if not _MASKED_CRC:
    from tfds_builders.core.fast import crc32c  # pylint: disable=import-outside-toplevel  # Numba, compiled once

    _MASKED_CRC.append(lambda raw: int(crc32c.masked_crc32c(np.frombuffer(raw, np.uint8), 0, len(raw))))
  return _MASKED_CRC[0](data)


def inflate_like_tf(data: bytes) -> bytes | None:
  """The bytes of a gzip stream as zlib (which TF's reader uses) inflates it, member after member; None if damaged."""
  parts, rest = [], data
  try:
    while rest:
      inflater = zlib.decompressobj(31)  # a gzip header and trailer, checked
      parts.append(inflater.decompress(rest))
      if not inflater.eof:
        return None
      rest = inflater.unused_data
  except zlib.error:
    return None
  return b"".join(parts)


def python_gunzip(data: bytes) -> bytes | None:
  """The bytes of a gzip stream as Python's gzip module reads it (more leniently); None if damaged."""
  try:
    return gzip.decompress(data)
  except (OSError, EOFError, zlib.error):
    return None


def frame_header(length: int) -> bytes:
  head = struct.pack("<Q", length & ((1 << 64) - 1))
  return head + struct.pack("<I", masked_crc(head))


def frame(record: bytes) -> bytes:
  return frame_header(len(record)) + record + struct.pack("<I", masked_crc(record))


@dataclasses.dataclass
class Walk:
  """The frames of a TFRecord byte string as the format defines them (the reference oracle).

  Attributes:
    frames: (offset, length, stored data CRC) of each whole frame.
    error: None, or (kind, record index, byte offset) of the first bad frame;
      kind is `short_header` (under 12 bytes left), `header` (length CRC
      wrong), `truncated` (the data runs past the end) or, for a reader
      that checks data CRCs, `data`.
    longest: The largest length read from a header whose CRC holds.
  """

  frames: list[tuple[int, int, int]]
  error: tuple[str, int, int] | None
  longest: int


def reference_walk(data: bytes) -> Walk:
  """The frames of data, read header by header as the format defines them (data CRCs not checked)."""
  from tfds_builders.core import wire  # pylint: disable=import-outside-toplevel

  header, length_bytes, frame = wire.FRAME_HEADER_BYTES, wire.FRAME_LENGTH_BYTES, wire.FRAME_BYTES
  frames: list[tuple[int, int, int]] = []
  pos, size, longest = 0, len(data), 0
  while pos < size:
    if size - pos < header:
      return Walk(frames, ("short_header", len(frames), pos), longest)
    head = data[pos:pos + length_bytes]
    if masked_crc(head) != int.from_bytes(data[pos + length_bytes:pos + header], "little"):
      return Walk(frames, ("header", len(frames), pos), longest)
    length = int.from_bytes(head, "little")
    longest = max(longest, length)
    if pos + frame + length > size:
      return Walk(frames, ("truncated", len(frames), pos), longest)
    frames.append((pos, length, int.from_bytes(data[pos + header + length:pos + frame + length], "little")))
    pos += frame + length
  return Walk(frames, None, longest)


# ----------------------------------------------------------------- Examples --

_NAMES = (b"id", b"image", b"label", b"score", b"x", "é".encode(), b"a" * 40)
_KINDS = ("int64_list", "bytes_list", "float_list")
_KIND_FIELD = {"bytes_list": 1, "float_list": 2, "int64_list": 3}
_INTS = (0, 1, -1, 7, 127, 128, 300, 2**31, 2**32, 2**63 - 1, -(2**63))
_EXAMPLE_TOKENS = (b"\x0a", b"\x12", b"\x1a", b"\x22", b"\x08", b"\x0d", b"\xff" * 10, b"\x80", b"\x00",
                   b"\x1b\x1c", b"\x0a\x02id", b"\x7f", b"\xff\xff\xff\xff\x0f")


def _values(rng: np.random.Generator, kind: str) -> list[Any]:
  count = _pick(rng, (0, 1, 1, 1, 1, 2, 3))
  if kind == "int64_list":
    return [_pick(rng, _INTS) if rng.random() < 0.5 else int(rng.integers(-(2**63), 2**63 - 1))
            for _ in range(count)]
  if kind == "bytes_list":
    return [_random_bytes(rng, int(rng.integers(0, 12))) for _ in range(count)]
  return [float(np.float32(rng.standard_normal() * 100)) for _ in range(count)]


def _list_payload(kind: str, values: list[Any], packed: bool = True) -> bytes:
  if kind == "bytes_list":
    return b"".join(delimited(1, value) for value in values)
  items = [struct.pack("<f", value) for value in values] if kind == "float_list" else [varint(v) for v in values]
  if not packed:
    from tfds_builders.core import wire  # pylint: disable=import-outside-toplevel

    unpacked = wire.FLOAT_VALUE_UNPACKED if kind == "float_list" else wire.INT64_VALUE_UNPACKED
    return b"".join(bytes([unpacked]) + item for item in items)
  return delimited(1, b"".join(items)) if values else b""


def random_entries(rng: np.random.Generator) -> list[tuple[bytes, str, list[Any]]]:
  """(name, kind, values) of an Example's features: distinct names, random kinds and values."""
  names = [_NAMES[i] for i in rng.permutation(len(_NAMES))[:_pick(rng, (0, 1, 1, 2, 2, 3, 4))]]
  entries = []
  for name in names:
    kind = _pick(rng, _KINDS)
    entries.append((name, kind, _values(rng, kind)))
  return entries


_ODDITIES = ("unpacked", "eleven_byte_varint", "ten_byte_varint", "odd_floats", "non_minimal_length", "empty_feature",
             "unknown_in_feature", "two_kinds", "value_first", "no_key", "duplicate_entry", "split_value")
_EXAMPLE_ODDITIES = ("split_features", "unknown_field", "group", "field_zero", "bad_utf8_name", "none")


def encode_example(rng: np.random.Generator, entries: list[tuple[bytes, str, list[Any]]], canonical: bool,
                   names: list[str]) -> bytes:
  """The Example's wire bytes: as protobuf writes them, or (not canonical) with odd but mostly valid forms."""
  parts = []
  for name, kind, values in entries:
    oddity = _pick(rng, _ODDITIES) if not canonical and rng.random() < 0.4 else None
    payload = _list_payload(kind, values)
    if oddity == "unpacked" and kind != "bytes_list":
      payload = _list_payload(kind, values, packed=False)
    elif oddity == "eleven_byte_varint" and kind == "int64_list":
      payload = delimited(1, b"\xff" * 10 + b"\x01")
    elif oddity == "ten_byte_varint" and kind == "int64_list":
      payload = delimited(1, b"\xff" * 9 + _pick(rng, (b"\x01", b"\x7f")))
    elif oddity == "odd_floats" and kind == "float_list":
      payload = delimited(1, b"\x00\x00\x80")
    elif oddity == "non_minimal_length" and payload:
      length, start = read_varint(payload, 1, len(payload))
      payload = payload[:1] + non_minimal_varint(length, int(rng.integers(1, 4))) + payload[start:]
    feature = delimited(_KIND_FIELD[kind], payload)
    if oddity == "empty_feature":
      feature = b""
    elif oddity == "unknown_in_feature":
      feature += b"\x20\x01"
    elif oddity == "two_kinds":
      feature = delimited(_KIND_FIELD[_pick(rng, _KINDS)], b"") + feature
    key, value = delimited(1, name), delimited(2, feature)
    if oddity == "split_value":  # protobuf merges the two Feature messages
      value += delimited(2, delimited(_KIND_FIELD[kind], _list_payload(kind, _values(rng, kind))))
    entry = value + key if oddity == "value_first" else value if oddity == "no_key" else key + value
    parts.append(delimited(1, entry))
    if oddity == "duplicate_entry":
      again = delimited(_KIND_FIELD[kind], _list_payload(kind, _values(rng, kind)))
      parts.append(delimited(1, key + delimited(2, again)))
    if oddity:
      names.append(oddity)
  oddity = _pick(rng, _EXAMPLE_ODDITIES) if not canonical else "none"
  if oddity == "bad_utf8_name":
    parts.append(delimited(1, delimited(1, b"\xff\xfe") + delimited(2, delimited(3, b""))))
  if oddity == "split_features" and len(parts) > 1:
    cut = int(rng.integers(1, len(parts)))
    record = delimited(1, b"".join(parts[:cut])) + delimited(1, b"".join(parts[cut:]))
  else:
    record = delimited(1, b"".join(parts)) if parts or rng.random() < 0.7 else b""
  record += {"unknown_field": b"\x10\x05", "group": b"\x1b\x1c", "field_zero": b"\x02\x00"}.get(oddity, b"")
  if oddity != "none":
    names.append(oddity)
  return record


def length_sites(record: bytes) -> list[tuple[int, int, int]]:
  """(start, end, value) of every length varint of the record's length-delimited fields, by Example's schema."""
  sites: list[tuple[int, int, int]] = []
  nested = {0: (1,), 1: (1,), 2: (2,), 3: (1, 2, 3)}  # Example.features, Features.feature, entry value, kinds

  def walk(pos: int, end: int, depth: int) -> None:
    while pos < end:
      tag, pos = read_varint(record, pos, end)
      if tag is None:
        return
      if tag & 7 == 2:
        length, start = read_varint(record, pos, end)
        if length is None or start + length > end:
          return
        sites.append((pos, start, length))
        if (tag >> 3) in nested.get(depth, ()):
          walk(start, start + length, depth + 1)
        pos = start + length
      elif tag & 7 == 0:
        value, pos = read_varint(record, pos, end)
        if value is None:
          return
      elif tag & 7 in (1, 5):
        pos += 8 if tag & 7 == 1 else 4
      else:
        return

  walk(0, len(record), 0)
  return sites


def overflow_a_length(rng: np.random.Generator, record: bytes) -> bytes:
  """The record with one length varint replaced: huge (10 bytes), 11 bytes long, off by one, or non-minimal."""
  sites = length_sites(record)
  if not sites:
    return record
  start, end, value = _pick(rng, sites)
  replacement = _pick(rng, (
      varint(2**63 - 1), varint(2**64 - 1), varint(2**63), varint(2**62), varint(2**32 + value), varint(2**31),
      b"\xff" * 10 + b"\x01", b"\x80" * 10 + b"\x00", varint(value + 1), varint(max(0, value - 1)),
      non_minimal_varint(value, 1 + int(rng.integers(9))),
  ))
  return record[:start] + replacement + record[end:]


def mutate_example(rng: np.random.Generator, record: bytes, names: list[str]) -> bytes:
  """A structured or byte-level mutation of an Example's bytes, or none."""
  how = _weighted(rng, {"none": 0.3, "varint_overflow": 0.3, "bytes": 0.3, "truncate": 0.1})
  names.append(how)
  if how == "varint_overflow":
    return overflow_a_length(rng, record)
  if how == "bytes":
    return _mutate_times(rng, record, _EXAMPLE_TOKENS, names)
  if how == "truncate" and record:
    return record[:int(rng.integers(len(record)))]
  return record


def protobuf_features(example_pb2: Any, raw: bytes) -> dict[str, tuple[str | None, list[Any]]] | None:
  """{name: (kind set, values)} as protobuf parses the Example; None if protobuf rejects it."""
  from google.protobuf import message  # pylint: disable=import-outside-toplevel

  try:
    parsed = example_pb2.FromString(raw)
  except message.DecodeError:
    return None
  found = {}
  for name, feature in parsed.features.feature.items():
    kind = feature.WhichOneof("kind")
    found[name] = (kind, list(getattr(feature, kind).value) if kind else [])
  return found


def tf_example_view(tf: Any, raw: bytes, key: str, kind: str) -> tuple[int, Any] | None:
  """(count, last value) of the key's values as TF's Example parser (tf.io.parse_example) reads them; None if not.

  A key of another kind counts as no values, as it does for the scan.
  """
  dtype = tf.string if kind == "bytes_list" else tf.int64
  try:  # a feature the record lacks: TF still parses (and checks) the whole Example
    tf.io.parse_single_example(raw, {"\0absent": tf.io.VarLenFeature(dtype)})
  except Exception:  # pylint: disable=broad-except  # TF's error text itself can fail to decode
    return None
  try:
    values = tf.io.parse_single_example(raw, {key: tf.io.VarLenFeature(dtype)})[key].values.numpy().tolist()
  except Exception:  # pylint: disable=broad-except  # "Data types don't match": another kind
    values = []
  return len(values), values[-1] if values else None


def reference_conforms(record: bytes, layout: list[tuple[str, str]]) -> list[int] | None:
  """Each layout feature's value count if the record is canonical per ExampleLayout's docstring, else None.

  Canonical: one `features` field filling the record; map entries of key then
  value, each name of the layout once; each value one Feature of the layout's
  kind filling the entry, its list filling the Feature; bytes values each a
  field 1; numbers one packed field 1 (floats a multiple of 4 bytes, int64
  varints of at most 10 bytes) or nothing.
  """
  from tfds_builders.core import wire  # pylint: disable=import-outside-toplevel

  tags = wire.FEATURE_LIST_TAGS
  numbers = {name.encode("utf-8"): number for number, (name, _) in enumerate(layout)}

  def field(pos: int, end: int, tag: int) -> tuple[int, int] | None:
    if pos >= end or record[pos] != tag:
      return None
    length, start = read_varint(record, pos + 1, end)
    if length is None or start + length > end:
      return None
    return start, start + length

  def value_count(start: int, end: int, kind: str) -> int:
    if kind == "bytes_list":
      count, pos = 0, start
      while pos < end:
        value = field(pos, end, wire.LIST_VALUE)
        if value is None:
          return -1
        count, pos = count + 1, value[1]
      return count
    if start == end:
      return 0
    packed = field(start, end, wire.LIST_VALUE)
    if packed is None or packed[1] != end:
      return -1
    if kind == "float_list":
      return -1 if (end - packed[0]) % 4 else (end - packed[0]) // 4
    count, pos = 0, packed[0]
    while pos < end:
      value, pos = read_varint(record, pos, end)
      if value is None:
        return -1
      count += 1
    return count

  features = field(0, len(record), wire.EXAMPLE_FEATURES)
  if features is None or features[1] != len(record):
    return None
  counts = [-1] * len(layout)
  pos = features[0]
  while pos < len(record):
    entry = field(pos, len(record), wire.FEATURES_ENTRY)
    key = entry and field(entry[0], entry[1], wire.MAP_KEY)
    if not key:
      return None
    number = numbers.get(record[key[0]:key[1]])
    if number is None or counts[number] >= 0:
      return None
    kind = layout[number][1]
    feature = field(key[1], entry[1], wire.MAP_VALUE)
    if feature is None or feature[1] != entry[1] or feature[0] == feature[1]:
      return None
    values = field(feature[0], entry[1], tags[kind])
    if values is None or values[1] != entry[1]:
      return None
    counts[number] = value_count(values[0], values[1], kind)
    if counts[number] < 0:
      return None
    pos = entry[1]
  return counts if min(counts, default=0) >= 0 else None


# ---------------------------------------------------------------- fuzzers --


class Fuzzer:
  """One parser, its input generator and its oracles."""

  name = ""

  def __init__(self, tmp: pathlib.Path):
    self.tmp = tmp
    self.counters: collections.Counter[str] = collections.Counter()

  def generate(self, rng: np.random.Generator) -> Case:
    raise NotImplementedError

  def check(self, case: Case) -> Outcome:
    raise NotImplementedError

  def valid_case(self) -> Case | None:
    """An unmutated input, checked before the clock runs: it compiles and imports what the parser loads lazily."""
    return None

  def shrink(self, case: Case, kind: str) -> Case:
    """A smaller case with a finding of the same kind (bytes deleted; meta kept)."""
    def still_fails(data: bytes) -> bool:
      try:
        return any(found == kind for found, _ in self.check(Case(data, case.meta)).findings)
      except Exception:  # pylint: disable=broad-except  # a candidate that breaks the harness is not smaller
        return False
    return Case(minimize(case.data, still_fails), case.meta)


def _documented() -> type[BaseException]:
  from tfds_builders.core import errors  # pylint: disable=import-outside-toplevel

  return errors.TfdsBuildersError


def _undocumented(error: BaseException) -> tuple[str, str]:
  return "undocumented_exception", f"{type(error).__module__}.{type(error).__qualname__}: {str(error)[:300]}"


# ------------------------------------------------------------------- walk --


class WalkFuzzer(Fuzzer):
  """record_index.scan's frame walk against the reference walk, and TF's reader where that is safe."""

  name = "walk"
  _DEFAULT_WINDOW = 0  # meta["window"] == 0: the module's own window size

  def __init__(self, tmp: pathlib.Path):
    super().__init__(tmp)
    from etils import epath  # pylint: disable=import-outside-toplevel
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    from tfds_builders.core.fast import record_index  # pylint: disable=import-outside-toplevel
    from tfds_builders.core import tfrecord_io  # pylint: disable=import-outside-toplevel

    self.tf, self.epath, self.record_index, self.tfrecord_io = tf, epath, record_index, tfrecord_io
    self.window_bytes = record_index._WINDOW_BYTES  # pylint: disable=protected-access

  def generate(self, rng: np.random.Generator) -> Case:
    names: list[str] = []
    records = []
    for _ in range(_pick(rng, (0, 1, 2, 2, 3, 4, 6))):
      if rng.random() < 0.5:
        records.append(encode_example(rng, random_entries(rng), True, []))
      else:
        records.append(_random_bytes(rng, int(_pick(rng, (0, 1, 5, 30, 200, 1500)) * rng.random())))
    frames = [bytearray(frame(record)) for record in records]
    structured = _weighted(rng, {"length_recrc": 0.35, "payload_recrc": 0.15, "truncate_boundary": 0.15,
                                 "data_crc": 0.05, "append_garbage": 0.05, "none": 0.25})
    names.append(structured)
    if frames and structured == "length_recrc":
      at = int(rng.integers(len(frames)))
      offset = sum(len(f) for f in frames[:at])
      room = sum(len(f) for f in frames) - offset - 16
      length = self._crafted_length(rng, offset, room, len(frames[at]) - 16, names)
      frames[at][:12] = frame_header(length)
    elif frames and structured == "payload_recrc":
      at = int(rng.integers(len(frames)))
      payload = bytes(frames[at][12:-4])
      if rng.random() < 0.5:
        payload = mutate_example(rng, payload, names)
      else:
        payload = _mutate_times(rng, payload, (b"\0",), names)
      frames[at] = bytearray(frame(payload))
    elif frames and structured == "data_crc":
      frames[-1][-1 - int(rng.integers(4))] ^= 1 << int(rng.integers(8))
    data = b"".join(frames)
    if frames and structured == "truncate_boundary":
      at = int(rng.integers(len(frames)))
      offset, length = sum(len(f) for f in frames[:at]), len(frames[at]) - 16
      cut = _pick(rng, (0, int(rng.integers(1, 8)), 8, int(rng.integers(9, 12)), 12, 12 + int(rng.integers(length + 1)),
                        12 + length, 12 + length + int(rng.integers(1, 4)), 16 + length))
      names.append(f"cut_at_{cut if cut in (0, 8, 12) else 'inside'}")
      data = data[:offset + cut]
    elif structured == "append_garbage":
      data += _random_bytes(rng, int(rng.integers(1, 16)))
    if rng.random() < 0.3:
      data = _mutate_times(rng, data, (b"\0" * 8, b"\xff" * 8), names)
    compressed = rng.random() < 0.15
    if compressed:
      data = gzip.compress(data, compresslevel=1, mtime=0)
      if rng.random() < 0.3:
        data, op = mutate_bytes(rng, data, (b"\0",))
        names.append(f"gzip_{op}")
    meta = {"gzip": compressed, "block_records": _pick(rng, (1, 2, 3, 64)),
            "window": _pick(rng, (self._DEFAULT_WINDOW, self._DEFAULT_WINDOW, 7, 16, 33, 100)), "mutations": names}
    return Case(data, meta)

  def valid_case(self) -> Case:
    return Case(frame(b"abc") + frame(b""), {"gzip": False, "block_records": 2, "window": 0})

  @staticmethod
  def _crafted_length(rng: np.random.Generator, offset: int, room: int, original: int, names: list[str]) -> int:
    """A length whose header CRC will be recomputed: huge, wrapping int64, just past the end, or off by a little."""
    kind = _weighted(rng, {"int64_wrap": 0.2, "uint64_top": 0.1, "special": 0.2, "huge": 0.2, "past_end": 0.2,
                           "near": 0.1})
    names.append(f"length_{kind}")
    if kind == "int64_wrap":  # offset + 16 + length passes 2**63 within the frame walk's buffer
      return 2**63 - int(rng.integers(1, offset + 64))
    if kind == "uint64_top":
      return 2**64 - int(rng.integers(1, 64))
    if kind == "special":
      return _pick(rng, (2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**32 + original, 30_000_000_000, 2**62, 2**63 - 1,
                         2**63, 2**64 - 1))
    if kind == "huge":
      bits = int(rng.integers(31, 64))
      return (1 << bits) + int(rng.integers(0, 1 << bits, dtype=np.uint64))  # [2**bits, 2**(bits + 1))
    if kind == "past_end":
      return max(0, room + int(rng.integers(1, 9)))
    return max(0, original + int(rng.integers(-8, 9)))

  def check(self, case: Case) -> Outcome:
    errors_base = _documented()
    compressed = case.meta["gzip"]
    plain = inflate_like_tf(case.data) if compressed else case.data
    path = self.tmp / ("walk.tfrecord.gz" if compressed else "walk.tfrecord")
    path.write_bytes(case.data)
    record_file = self.tfrecord_io.RecordFile(self.epath.Path(path), "GZIP" if compressed else "")
    got: list[tuple[int, int, int]] = []
    raised = None
    self.record_index._WINDOW_BYTES = case.meta["window"] or self.window_bytes  # pylint: disable=protected-access
    try:
      for block in self.record_index.scan(record_file, block_records=case.meta["block_records"]):
        got += zip(block.offsets.tolist(), block.lengths.tolist(), block.crcs.tolist())
    except errors_base as error:
      raised = error
    except Exception as error:  # pylint: disable=broad-except
      return Outcome(False, [_undocumented(error)])
    finally:
      self.record_index._WINDOW_BYTES = self.window_bytes  # pylint: disable=protected-access
    outcome = Outcome(raised is None)
    lenient = python_gunzip(case.data) if compressed else plain
    if plain != lenient:  # Python's gzip takes NUL padding and reserved flags that zlib (and TF) refuse
      self.counters["gzip_container_either_way"] += 1
      views = [reference_walk(view) for view in (plain, lenient) if view is not None]
      if raised is None and not any(view.error is None and view.frames == got for view in views):
        outcome.findings.append(("wrong_result", f"scan framed {got[:4]} in a stream read either way"))
      return outcome
    if plain is None:
      if raised is None:
        outcome.findings.append(("accepted_invalid", "scan read a damaged gzip stream without an error"))
      return outcome
    walk = reference_walk(plain)
    # A GZIP frame longer than the window is CRC-checked as it streams: scan may stop at a bad one.
    stops = [walk] + (self._bad_data_stops(walk, plain) if compressed else [])
    verdicts = [self._scan_agrees(path, got, raised, stop) for stop in stops]
    outcome.findings += verdicts[0] if all(verdicts) else []
    if walk.longest <= len(plain):  # TF's reader allocates a crafted length: only lengths inside the file
      outcome.findings += self._tf_agrees(path, compressed, plain, walk, raised is None)
    return outcome

  @staticmethod
  def _bad_data_stops(walk: Walk, plain: bytes) -> list[Walk]:
    """The walk stopped at each frame whose data does not match its CRC."""
    return [Walk(walk.frames[:index], ("data", index, offset), walk.longest)
            for index, (offset, length, stored) in enumerate(walk.frames)
            if masked_crc(plain[offset + 12:offset + 12 + length]) != stored]

  @staticmethod
  def _scan_agrees(path: pathlib.Path, got: list[tuple[int, int, int]], raised: Exception | None,
                   walk: Walk) -> list[tuple[str, str]]:
    """scan frames what the reference frames, and names the record and byte where the reference stops."""
    if raised is None and walk.error:
      return [("accepted_invalid", f"reference stops at {walk.error}; scan framed {len(got)}")]
    if raised is None and got != walk.frames:
      return [("wrong_result", f"frames {got[:4]}... differ from the reference's {walk.frames[:4]}")]
    if raised is not None and walk.error is None:
      return [("wrong_result", f"scan rejected a valid file: {str(raised)[:200]}")]
    if raised is None:
      return []
    _, index, offset = walk.error
    if got != walk.frames:
      return [("wrong_result", f"frames before the error {got[:4]} differ from {walk.frames[:4]}")]
    message = str(raised)
    named = (path.name in message and re.search(rf"record {index}\b|{'first record' if index == 0 else '^$'}", message)
             and (re.search(rf"byte {offset}\b", message) or offset == 0))
    if not named:
      return [("wrong_result", f"message does not name record {index} at byte {offset}: {message[:300]}")]
    return []

  def _tf_agrees(self, path: pathlib.Path, compressed: bool, plain: bytes, walk: Walk,
                 scan_accepted: bool) -> list[tuple[str, str]]:
    """TF's reader (the second oracle) reads the records the reference finds, up to a bad data CRC or frame."""
    self.counters["tf_compared"] += 1
    expected = []
    for offset, length, stored in walk.frames:
      record = plain[offset + 12:offset + 12 + length]
      if masked_crc(record) != stored:
        break
      expected.append(record)
    # TF ends a file quietly at a partial header (scan calls it truncated).
    ends_cleanly = len(expected) == len(walk.frames) and (walk.error is None or walk.error[0] == "short_header")
    records, failed = [], False
    try:
      for record in self.tf.compat.v1.io.tf_record_iterator(str(path), "GZIP" if compressed else None):
        records.append(record)
    except self.tf.errors.DataLossError:
      failed = True
    if compressed and failed and records == expected[:len(records)] and (len(records) < len(expected) or ends_cleanly):
      # Python's gzip (the reference's and scan's) takes what TF's zlib reader refuses: NUL padding, reserved flags.
      refused = f"TF refuses this gzip stream after {len(records)} records"
      return [("accepted_invalid", refused)] if scan_accepted else []
    if records != expected or failed == ends_cleanly:
      return [("oracle_disagreement", f"TF read {len(records)} records (error: {failed}); the reference expects "
                                      f"{len(expected)} (error: {not ends_cleanly}); reference stop {walk.error}")]
    return []


# ----------------------------------------------------------------- layout --


class LayoutFuzzer(Fuzzer):
  """ExampleLayout's compiled check (alone and inside scan) against protobuf and the docstring's canonical form."""

  name = "layout"

  def __init__(self, tmp: pathlib.Path):
    super().__init__(tmp)
    from etils import epath  # pylint: disable=import-outside-toplevel
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    from tfds_builders.core.fast import record_index  # pylint: disable=import-outside-toplevel
    from tfds_builders.core import tfrecord_io  # pylint: disable=import-outside-toplevel

    self.example_pb2, self.record_index = tf.train.Example, record_index
    self.record_file = tfrecord_io.RecordFile(epath.Path(tmp / "layout.tfrecord"), "")

  def generate(self, rng: np.random.Generator) -> Case:
    names: list[str] = []
    entries = random_entries(rng)
    canonical = rng.random() < 0.7
    record = mutate_example(rng, encode_example(rng, entries, canonical, names), names)
    layout = [(name.decode("utf-8"), kind) for name, kind, _ in entries]
    how = _weighted(rng, {"same": 0.7, "drop": 0.1, "add": 0.1, "kind": 0.05, "random": 0.05})
    if how == "drop" and len(layout) > 1:
      del layout[int(rng.integers(len(layout)))]
    elif how == "kind" and layout:
      at = int(rng.integers(len(layout)))
      layout[at] = (layout[at][0], _pick(rng, _KINDS))
    elif how in ("add", "random") or not layout:
      if how == "random":
        layout = []
      taken = dict(layout)
      extra = [(name.decode("utf-8"), _pick(rng, _KINDS)) for name in _NAMES if name.decode("utf-8") not in taken]
      layout.append(extra[int(rng.integers(len(extra)))])
    names.append(f"layout_{how}")
    return Case(record, {"layout": layout, "pad": [int(rng.integers(0, 9)), int(rng.integers(0, 9))],
                         "mutations": names})

  def valid_case(self) -> Case:
    return Case(delimited(1, delimited(1, delimited(1, b"id") + delimited(2, delimited(3, delimited(1, b"\x07"))))),
                {"layout": [["id", "int64_list"]], "pad": [1, 1]})

  def check(self, case: Case) -> Outcome:
    errors_base = _documented()
    layout = [tuple(pair) for pair in case.meta["layout"]]
    before, after = case.meta["pad"]
    buffer = np.frombuffer(b"\xa5" * before + case.data + b"\x5a" * after, np.uint8)
    try:
      compiled = self.record_index.ExampleLayout.of(dict(layout))
      conforms, counts = compiled.check(buffer, np.array([before]), np.array([before + len(case.data)]))
    except errors_base as error:
      return Outcome(False, [("wrong_result", f"check raised {error}")])
    except Exception as error:  # pylint: disable=broad-except
      return Outcome(False, [_undocumented(error)])
    conforming, counts = bool(conforms[0]), counts[0].tolist()
    outcome = Outcome(conforming)
    parsed = protobuf_features(self.example_pb2, case.data)
    reference = reference_conforms(case.data, layout)
    if conforming:
      want = {name: kind for name, kind in layout}
      if parsed is None:
        outcome.findings.append(("accepted_invalid", "conforms, but protobuf rejects the record"))
      elif {name: kind for name, (kind, _) in parsed.items()} != want:
        outcome.findings.append(("accepted_invalid", f"conforms, but protobuf reads features {parsed}"))
      elif counts != [len(parsed[name][1]) for name, _ in layout]:
        outcome.findings.append(("wrong_result", f"value counts {counts}; protobuf reads {parsed}"))
      elif reference is None:
        outcome.findings.append(("accepted_invalid", "conforms, but is not canonical per ExampleLayout's docstring"))
    elif reference is not None and parsed is not None:
      outcome.findings.append(("rejected_valid", f"a canonical record with counts {reference} does not conform"))
    elif reference is not None:
      outcome.findings.append(("oracle_disagreement", "the canonical reference accepts what protobuf rejects"))
    outcome.findings += self._scan_agrees(case.data, compiled, layout, conforming, counts)
    return outcome

  def _scan_agrees(self, record: bytes, compiled: Any, layout: list[tuple[str, str]], conforming: bool,
                   counts: list[int]) -> list[tuple[str, str]]:
    """scan(..., layout) finds what check() finds, and with a key in the layout reads the key as protobuf."""
    pathlib.Path(self.record_file.path).write_bytes(frame(record))
    keys = [name for name, kind in layout if kind == "int64_list"]
    try:
      blocks = list(self.record_index.scan(self.record_file, layout=compiled, key=keys[0] if keys else None))
    except Exception as error:  # pylint: disable=broad-except  # the frame is valid: any error is wrong
      return [_undocumented(error) if not isinstance(error, _documented()) else ("wrong_result", str(error))]
    block = blocks[0]
    if bool(block.conforms[0]) != conforming or (conforming and block.value_counts[0].tolist() != counts):
      return [("wrong_result", f"scan's layout check {block.conforms[0]} {block.value_counts[0].tolist()} "
                               f"differs from check()'s {conforming} {counts}")]
    if keys and conforming:
      parsed = protobuf_features(self.example_pb2, record) or {}
      values = parsed.get(keys[0], (None, []))[1]
      if int(block.key_counts[0]) != len(values) or (values and int(block.keys[0]) != values[-1]):
        return [("wrong_result", f"key {keys[0]!r} read as {block.key_counts[0]}, {block.keys[0]}; protobuf {values}")]
    return []


# ------------------------------------------------------------------- keys --


class KeysFuzzer(Fuzzer):
  """The join-key read of scan(..., key=...) (with and without a layout) against protobuf's parse."""

  name = "keys"

  def __init__(self, tmp: pathlib.Path):
    super().__init__(tmp)
    from etils import epath  # pylint: disable=import-outside-toplevel
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    from tfds_builders.core.fast import record_index  # pylint: disable=import-outside-toplevel
    from tfds_builders.core import tfrecord_io  # pylint: disable=import-outside-toplevel

    self.tf, self.example_pb2, self.record_index = tf, tf.train.Example, record_index
    self.record_file = tfrecord_io.RecordFile(epath.Path(tmp / "keys.tfrecord"), "")

  def generate(self, rng: np.random.Generator) -> Case:
    names: list[str] = []
    records, first = [], None
    for _ in range(int(rng.integers(1, 5))):
      entries = random_entries(rng)
      first = first if first is not None else entries
      records.append(mutate_example(rng, encode_example(rng, entries, rng.random() < 0.6, names), names))
    present = [name for name, _, _ in first]
    key = (_pick(rng, present) if present and rng.random() < 0.8 else _pick(rng, _NAMES)).decode("utf-8")
    kind = "bytes_list" if rng.random() < 0.3 else "int64_list"
    layout = [(name.decode("utf-8"), k) for name, k, _ in first] if rng.random() < 0.3 and first else None
    meta = {"key": key, "kind": kind, "layout": layout, "block_records": _pick(rng, (1, 2, 64)), "mutations": names}
    return Case(b"".join(frame(record) for record in records), meta)

  def valid_case(self) -> Case:
    record = delimited(1, delimited(1, delimited(1, b"id") + delimited(2, delimited(3, delimited(1, b"\x07")))))
    meta = {"key": "id", "kind": "int64_list", "layout": [["id", "int64_list"]], "block_records": 2}
    return Case(frame(record), meta)

  def check(self, case: Case) -> Outcome:
    errors_base = _documented()
    pathlib.Path(self.record_file.path).write_bytes(case.data)
    key, kind = case.meta["key"], case.meta["kind"]
    layout = case.meta["layout"]
    counts: list[int] = []
    keys: list[Any] = []
    try:
      compiled = self.record_index.ExampleLayout.of(dict(map(tuple, layout))) if layout else None
      for block in self.record_index.scan(self.record_file, key=key, key_kind=kind, layout=compiled,
                                          block_records=case.meta["block_records"]):
        counts += block.key_counts.tolist()
        keys += block.keys.tolist() if kind == "int64_list" else list(block.keys)
    except errors_base as error:
      return Outcome(False, [("wrong_result", f"scan raised on valid frames: {str(error)[:200]}")])
    except Exception as error:  # pylint: disable=broad-except
      return Outcome(False, [_undocumented(error)])
    walk = reference_walk(case.data)
    outcome = Outcome(True)
    if len(counts) != len(walk.frames):
      outcome.findings.append(("wrong_result", f"{len(counts)} records keyed, {len(walk.frames)} framed"))
      return outcome
    for index, ((offset, length, _), count, value) in enumerate(zip(walk.frames, counts, keys)):
      raw = case.data[offset + 12:offset + 12 + length]
      self.counters["records"] += 1
      if count == self.record_index.MALFORMED:
        parsed = protobuf_features(self.example_pb2, raw)
        if parsed is not None:  # conservative: the builder reports the record instead of joining it
          outcome.findings.append(("rejected_valid", f"record {index}: malformed for scan, not for protobuf"))
        continue
      view = self._protobuf_view(raw, key, kind)
      if view is not None and view[0] == count and (count == 0 or view[1] == value):
        continue
      # TFDS reads records with TF's own Example parser, which validates less than protobuf in some places
      # (field numbers, UTF-8 of names) and more in others (map entries): agreeing with it is right too.
      self.counters["tf_parser_consulted"] += 1
      tf_view = tf_example_view(self.tf, raw, key, kind)
      if tf_view is not None and tf_view[0] == count and (count == 0 or tf_view[1] == value):
        continue
      found = "accepted_invalid" if view is None and tf_view is None else "wrong_result"
      outcome.findings.append((found, f"record {index}: scan reads {count} values of {key!r}, last {value!r}; "
                                      f"protobuf reads {view or 'no Example'}, TF {tf_view or 'no Example'}"))
    outcome.accepted = all(count != self.record_index.MALFORMED for count in counts)
    return outcome

  def _protobuf_view(self, raw: bytes, key: str, kind: str) -> tuple[int, Any] | None:
    """(count, last value) of the key's values of that kind as protobuf parses the record; None if not."""
    parsed = protobuf_features(self.example_pb2, raw)
    if parsed is None:
      return None
    kind_set, values = parsed.get(key, (None, []))
    values = values if kind_set == kind else []
    return len(values), values[-1] if values else None

  def shrink(self, case: Case, kind: str) -> Case:
    """Records dropped, then bytes of each record (re-framed) deleted, while the finding persists."""
    def fails(records: list[bytes]) -> bool:
      try:
        found = self.check(Case(b"".join(frame(r) for r in records), case.meta)).findings
      except Exception:  # pylint: disable=broad-except
        return False
      return any(k == kind for k, _ in found)

    walk = reference_walk(case.data)
    records = [case.data[o + 12:o + 12 + n] for o, n, _ in walk.frames]
    for at in reversed(range(len(records))):
      if len(records) > 1 and fails(records[:at] + records[at + 1:]):
        del records[at]
    for at in range(len(records)):
      records[at] = minimize(records[at], lambda raw, at=at: fails(records[:at] + [raw] + records[at + 1:]), 200)
    return Case(b"".join(frame(record) for record in records), case.meta)


# -------------------------------------------------------------------- npy --

_NPY_TOKENS = (b"'descr'", b"'|O'", b"'<i8'", b"(", b")", b",", b"-1", b"True", b"{", b"}", b"\n", b" ", b"'shape'",
               b"(1,)", b"2**63", b"9223372036854775807", b"'fortran_order'", b"\x00", b"\xff", b"[", b"]")
_DESCRS = ("'|O'", "'O'", "'<i8'", "'>f4'", "'|b1'", "'<U3'", "'|S0'", "'|V8'", "'<M8[ns]'", "'<m8[s]'", "'<c16'",
           "[('a', '<i4'), ('b', '|O')]", "[('a', '<i4', (2,))]", "[('', '<i4')]", "[('a', '<i4'), ('a', '<i4')]",
           "'<U2147483647'", "'<i0'", "'x'", "1", "None", "{'names': ['a'], 'formats': ['<i4']}", "('<i4', (2,))",
           "[('a', '<U9223372036854775807')]", "'<U1000000000000'", "'<f16'", "'<V0'", "'>U2'", "'S'", "'<i8,<i8'")
_SHAPES = ("()", "(0,)", "(-1,)", "(9223372036854775808,)", "(1.5,)", "(True,)", "[3]", "(3, 4)",
           "(9223372036854775807, 2)", "('a',)", "None", "(1,) * 2", "(" + "1, " * 40 + ")", "(2, 0, 3)",
           "(4611686018427387904, 4)", "(3,)", "(-2, -3)")


def _npy_arrays() -> list[np.ndarray]:
  return [
      np.arange(6, dtype="<i8").reshape(2, 3), np.zeros(0, "<f4"), np.array(3.5), np.array([True, False]),
      np.asfortranarray(np.arange(6, dtype=">i2").reshape(2, 3)), np.array(["ab", "c"]), np.array([b"x"], "S3"),
      np.zeros(2, [("a", "<i4"), ("b", "<f8")]), np.array([1 + 2j]), np.array(["2020-01-01", "2021-02-03"], "<M8[D]"),
      np.array([None, 1], dtype=object), np.arange(24, dtype=np.uint8).reshape(2, 3, 4),
  ]


class NpyFuzzer(Fuzzer):
  """npy_files.read_header (and ArraySource's reads) against numpy.lib.format with allow_pickle=False."""

  name = "npy"

  def __init__(self, tmp: pathlib.Path):
    super().__init__(tmp)
    from etils import epath  # pylint: disable=import-outside-toplevel
    from tfds_builders.numpy_arrays import npy_files  # pylint: disable=import-outside-toplevel

    self.epath, self.npy_files = epath, npy_files
    self.seeds = []
    for array in _npy_arrays():
      for version in ((1, 0), (2, 0), (3, 0)):
        out = io.BytesIO()
        np.lib.format.write_array(out, array, version=version, allow_pickle=True)
        self.seeds.append(out.getvalue())

  def generate(self, rng: np.random.Generator) -> Case:
    names: list[str] = []
    data = _pick(rng, self.seeds)
    if rng.random() < 0.6:
      data = self._mutate_header(rng, data, names)
    if rng.random() < 0.4:
      data = _mutate_times(rng, data, _NPY_TOKENS, names)
    return Case(data, {"npz": bool(rng.random() < 0.2), "rows": _pick(rng, (None, 1, 2, 5)), "mutations": names})

  def valid_case(self) -> Case:
    return Case(self.seeds[0], {"npz": False, "rows": 1})

  @staticmethod
  def _mutate_header(rng: np.random.Generator, data: bytes, names: list[str]) -> bytes:
    """The header rewritten with one field, the length field, the version or the padding changed."""
    version = data[6]
    size_bytes = 2 if version == 1 else 4
    header_len = int.from_bytes(data[8:8 + size_bytes], "little")
    body = data[8 + size_bytes + header_len:]
    text = data[8 + size_bytes:8 + size_bytes + header_len].decode("latin1")
    fields = ast.literal_eval(text)
    items = {"descr": repr(fields["descr"]) if not isinstance(fields["descr"], str) else f"'{fields['descr']}'",
             "fortran_order": repr(fields["fortran_order"]), "shape": repr(fields["shape"])}
    how = _pick(rng, ("descr", "shape", "fortran_order", "drop_key", "extra_key", "length", "version", "padding",
                      "duplicate_key", "not_a_dict"))
    names.append(f"header_{how}")
    if how == "descr":
      items["descr"] = _pick(rng, _DESCRS)
    elif how == "shape":
      items["shape"] = _pick(rng, _SHAPES)
    elif how == "fortran_order":
      items["fortran_order"] = _pick(rng, ("True", "False", "0", "1", "None", "'yes'"))
    elif how == "drop_key":
      del items[_pick(rng, list(items))]
    elif how == "extra_key":
      items["extra"] = "1"
    text_out = "{" + ", ".join(f"'{key}': {value}" for key, value in items.items()) + ", }"
    if how == "duplicate_key":
      text_out = text_out[:-1] + "'shape': (2,), }"
    elif how == "not_a_dict":
      text_out = _pick(rng, ("[1, 2]", "1", "{", "'x'", "{'descr': '<i8', 'fortran_order': False, 'shape': (2,)"))
    header = text_out.encode("latin1")
    pad = (-(8 + size_bytes + len(header) + 1)) % 64
    header += b" " * pad + b"\n"
    if how == "padding":
      header = header.rstrip(b"\n ") + _pick(rng, (b"", b"\n\n", b"\x00", b" " * 200 + b"\n"))
    length = len(header)
    if how == "length":
      length = _pick(rng, (0, 1, length - 1, length + 1, length + 64, 65535, 2**32 - 1, 10001, 100000))
    if how == "version":
      version = _pick(rng, (0, 1, 2, 3, 4, 255))
    size_bytes_out = 2 if version == 1 else 4
    length &= (1 << (8 * size_bytes_out)) - 1
    return data[:6] + bytes([version, 0]) + length.to_bytes(size_bytes_out, "little") + header + body

  @staticmethod
  def numpy_header(data: bytes) -> tuple[tuple[int, ...], bool, np.dtype, int] | None:
    """(shape, fortran_order, dtype, data offset) as numpy reads the header with allow_pickle=False; None if not."""
    stream = io.BytesIO(data)
    try:
      with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
          shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(stream)
        elif version == (2, 0):
          shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(stream)
        elif version == (3, 0):
          from numpy.lib import _format_impl  # pylint: disable=import-outside-toplevel  # v3 has no public reader
          read_v3 = _format_impl._read_array_header  # pylint: disable=protected-access
          shape, fortran_order, dtype = read_v3(stream, version)
        else:
          return None
    except Exception:  # pylint: disable=broad-except  # numpy's parser raises more than ValueError (TokenError)
      return None
    if dtype.hasobject:  # read_array(..., allow_pickle=False) refuses it
      return None
    return tuple(shape), bool(fortran_order), dtype, stream.tell()

  def check(self, case: Case) -> Outcome:
    errors_base = _documented()
    expected = self.numpy_header(case.data)
    try:
      header = self.npy_files.read_header(io.BytesIO(case.data), "fuzz.npy")
    except errors_base:
      header = None
    except Exception as error:  # pylint: disable=broad-except
      return Outcome(False, [_undocumented(error)])
    outcome = Outcome(header is not None)
    if header is not None and expected is None:
      outcome.findings.append(("accepted_invalid", f"read_header accepts {header}; numpy (allow_pickle=False) not"))
      return outcome
    if header is None and expected is not None:
      outcome.findings.append(("rejected_valid", f"read_header rejects a header numpy reads: {expected}"))
      return outcome
    if header is not None:
      got = (tuple(header.shape), bool(header.fortran_order), header.dtype, header.data_offset)
      if got != expected:
        outcome.findings.append(("wrong_result", f"read_header gives {got}; numpy {expected}"))
        return outcome
      outcome.findings += self._read_agrees(case)
    return outcome

  def _read_agrees(self, case: Case) -> list[tuple[str, str]]:
    """ArraySource reads the array np.load reads (mapped .npy, or streamed .npz member), or a documented error."""
    self.counters["arrays_compared"] += 1
    errors_base = _documented()
    if case.meta["npz"]:
      path, member = self.tmp / "fuzz.npz", "a.npy"
      with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(member, case.data)
    else:
      path, member = self.tmp / "fuzz.npy", None
      path.write_bytes(case.data)
    try:
      with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with np.load(path, allow_pickle=False) as loaded:
          expected = loaded[member[:-4]]
    except AttributeError:  # np.load gave an array, not an NpzFile: no context manager
      expected = np.load(path, allow_pickle=False)
    except Exception:  # pylint: disable=broad-except  # numpy refuses the file: ours must too
      expected = None
    if expected is None and not case.meta["npz"]:
      try:
        expected = np.load(path, allow_pickle=False)
      except Exception:  # pylint: disable=broad-except
        expected = None
    try:
      source = self.npy_files.ArraySource(self.epath.Path(path), member) if member else self.npy_files.ArraySource(
          self.epath.Path(path))
      rows = case.meta["rows"] if source.header.shape else None
      chunks = list(source.iter_chunks(rows))
      got = chunks[0] if len(chunks) == 1 else np.concatenate(chunks) if chunks else None
    except errors_base as error:
      if expected is None:
        return []
      return [("rejected_valid", f"ArraySource refuses an array np.load reads: {error}")]
    except Exception as error:  # pylint: disable=broad-except
      return [_undocumented(error)]
    if expected is None:
      return [("accepted_invalid", f"ArraySource read {got.dtype}{got.shape if got is not None else ''}; "
                                   "np.load refuses the file")]
    if expected.size == 0 and (got is None or got.size == 0):  # np.load's empty subarray and S0 shapes vary
      return []
    # The byte order may be made native.
    same_dtype = got is not None and got.dtype.newbyteorder("<") == expected.dtype.newbyteorder("<")
    # Bytes, not values: NaN and NaT are unequal to themselves.
    if got is None or got.shape != expected.shape or not same_dtype or np.ascontiguousarray(got).astype(
        expected.dtype).tobytes() != np.ascontiguousarray(expected).tobytes():
      return [("wrong_result", f"ArraySource read {None if got is None else (got.dtype, got.shape)}; "
                               f"np.load {(expected.dtype, expected.shape)}")]
    return []


# -------------------------------------------------------------------- csv --

_CSV_TOKENS = (b",", b"\"", b"\n", b"\r\n", b"\r", b"\0", b"\t", b" ", b"\"\"", b"-", b"+", b"1e309", b"nan", b"inf",
               b"9223372036854775808", b"-9223372036854775809", b"0x1F", b"1_000", b"\xef\xbb\xbf", b"\xff",
               b"\xc3\xa9", b"\xe2\x80\xa8", b"true", b"1.5", b"\xd9\xa3", b"id")
_CELL_TOKENS = ("", " ", "\"", ",", "\n", "\r", "nan", "-nan", "inf", "-inf", "1e309", "9223372036854775808",
                "-9223372036854775808", "9223372036854775807", "1.5", "\u0663", "0x1", "\x00", "é", "true", " 7",
                "7 ", "1_000", "+3", "-0", "007", "1.0", "1e5", "\t", "NaN", "Infinity", "\u2028", "\x1c", "\x85",
                "0.1")
_CSV_COLUMNS = ("label", "score", "name", "flag", "note")


class CsvFuzzer(Fuzzer):
  """side_table.read_file on CSV against Python's csv module and side_table.build's row-by-row typing."""

  name = "csv"

  def __init__(self, tmp: pathlib.Path):
    super().__init__(tmp)
    from etils import epath  # pylint: disable=import-outside-toplevel
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    from tfds_builders.augmented import fields  # pylint: disable=import-outside-toplevel
    from tfds_builders.augmented import side_table  # pylint: disable=import-outside-toplevel

    self.epath, self.fields, self.side_table, self.example_pb2 = epath, fields, side_table, tf.train.Example

  def generate(self, rng: np.random.Generator) -> Case:
    names: list[str] = []
    key_kind = "bytes_list" if rng.random() < 0.3 else "int64_list"
    others = [_CSV_COLUMNS[i] for i in rng.permutation(len(_CSV_COLUMNS))[:int(rng.integers(1, 4))]]
    header = ["id"] + others
    if rng.random() < 0.4:
      header = [header[i] for i in rng.permutation(len(header))]
    types = {name: _pick(rng, ("int", "float", "string", "bool", "mixed", "numberish")) for name in others}
    rows = []
    for row in range(int(rng.integers(1, 7))):
      cells = []
      for name in header:
        if name == "id":
          text_key = _pick(rng, ("k", "é", "a b", "K")) + str(row)
          cells.append(str(self._key(rng, row)) if key_kind == "int64_list" else text_key)
        else:
          cells.append(self._cell(rng, types[name]))
      rows.append(cells)
    if rng.random() < 0.1 and len(rows) > 1:
      rows[-1][header.index("id")] = rows[0][header.index("id")]
      names.append("duplicate_key")
    if rng.random() < 0.35:
      how = _weighted(rng, {"cell": 1, "key_cell": 1, "drop_cell": 1, "add_cell": 1, "blank_line": 1,
                            "duplicate_row": 1, "column_named_twice": 1, "huge_cell": 0.12})
      names.append(how)
      row = rows[int(rng.integers(len(rows)))]
      if how == "cell":
        row[int(rng.integers(len(row)))] = _pick(rng, _CELL_TOKENS)
      elif how == "key_cell":
        row[header.index("id")] = _pick(rng, _CELL_TOKENS)
      elif how == "drop_cell":
        row.pop()
      elif how == "add_cell":
        row.append("extra")
      elif how == "blank_line":
        rows.insert(int(rng.integers(len(rows) + 1)), [])
      elif how == "duplicate_row":
        rows.append(list(row))
      elif how == "column_named_twice" and len(header) > 2:
        at, to = rng.permutation(len(header))[:2]
        header[at] = header[to]
      elif how == "huge_cell":
        row[-1] = "x" * 140_000  # past csv's field size limit
    suffix = ".tsv" if rng.random() < 0.15 else ".csv"
    out = io.StringIO()
    writer = csv.writer(out, delimiter="\t" if suffix == ".tsv" else ",",
                        quoting=_pick(rng, (csv.QUOTE_MINIMAL, csv.QUOTE_MINIMAL, csv.QUOTE_ALL)),
                        lineterminator=_pick(rng, ("\r\n", "\n")))
    writer.writerow(header)
    writer.writerows(rows)
    data = out.getvalue().encode("utf-8")
    if rng.random() < 0.1:
      data = b"\xef\xbb\xbf" + data
    if rng.random() < 0.2:
      data = data.rstrip(b"\r\n")
    if rng.random() < 0.4:
      data = _mutate_times(rng, data, _CSV_TOKENS, names)
    columns = [] if rng.random() < 0.75 else [_pick(rng, others + ["missing"])] * _pick(rng, (1, 1, 1, 1, 2))
    declared = {}
    if rng.random() < 0.15:
      declared[_pick(rng, others)] = _pick(rng, ("int64", "int32", "uint8", "float32", "float64", "string", "bool",
                                                 "int64[2]"))
    return Case(data, {"suffix": suffix, "key_kind": key_kind, "columns": columns, "declared": declared,
                       "mutations": names})

  def valid_case(self) -> Case:
    return Case(b"id,label\n1,a\n2,3\n", {"suffix": ".csv", "key_kind": "int64_list", "columns": [], "declared": {}})

  @staticmethod
  def _key(rng: np.random.Generator, row: int) -> int:
    return _pick(rng, (row, row * 7 - 3, 2**62 + row, -(2**63) + row, int(rng.integers(-(2**40), 2**40))))

  @staticmethod
  def _cell(rng: np.random.Generator, kind: str) -> str:
    if kind == "mixed":
      kind = _pick(rng, ("int", "float", "string", "bool"))
    if kind == "int":
      return str(_pick(rng, (0, 1, -1, 255, 256, 2**31, 2**63 - 1, int(rng.integers(-1000, 1000)))))
    if kind == "float":
      return _pick(rng, (repr(float(rng.standard_normal())), "1e5", "nan", "inf", "-0.0", "1e-320", "3"))
    if kind == "bool":
      return _pick(rng, ("true", "false", "0", "1", "yes", "No", "T"))
    if kind == "numberish":
      return _pick(rng, (" 1", "1_000", "+3", "0x10", "1.0", "\u0663", "-0", "007", "1e3", "٣٣"))
    return _pick(rng, ("a", "b c", "x,y", "q\"q", "é", "", " pad ", "line\nbreak", "日本", "\\", "'"))

  @staticmethod
  def reference_rows(data: bytes, suffix: str) -> tuple[list[str], list[str], list[list[str]]] | str:
    """(header, line labels, rows) as the csv module reads the file, or why the table is malformed."""
    try:
      text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
      return "not UTF-8"
    # A cell may be as long as the file (the csv module's 128 KiB guard is for unbounded streams).
    csv.field_size_limit(max(csv.field_size_limit(), len(text)))
    reader = csv.reader(io.StringIO(text, newline=""), dialect="excel-tab" if suffix == ".tsv" else "excel")
    try:
      header = next(reader, None)
      if not header:
        return "no header"
      lines, rows = [], []
      for row in reader:
        if not row:
          continue
        if len(row) != len(header):
          return f"line {reader.line_num}: {len(row)} cells, header {len(header)}"
        lines.append(f"line {reader.line_num}")
        rows.append(row)
    except csv.Error as error:
      return f"csv: {error}"
    return [name.strip() for name in header], lines, rows

  def check(self, case: Case) -> Outcome:
    errors_base = _documented()
    meta = case.meta
    path = self.tmp / f"side{meta['suffix']}"
    path.write_bytes(case.data)
    try:
      declared = {name: self.fields.parse_declared(name, text, "fuzz") for name, text in meta["declared"].items()}
    except errors_base:
      declared = {}
    options = {"key_column": "id", "columns": meta["columns"], "key_kind": meta["key_kind"], "declared": declared}
    try:
      table = self.side_table.read_file(self.epath.Path(path), table_format="csv", **options)
      raised = None
    except errors_base as error:
      table, raised = None, error
    except Exception as error:  # pylint: disable=broad-except
      return Outcome(False, [_undocumented(error)])
    outcome = Outcome(table is not None)
    reference = self.reference_rows(case.data, meta["suffix"])
    if isinstance(reference, str):
      if table is not None:
        outcome.findings.append(("accepted_invalid", f"read_file accepts a table the csv module refuses: {reference}"))
      return outcome
    header, lines, rows = reference
    try:
      expected = self.side_table.build(source=str(path), header=header, lines=lines, records=rows, typed=False,
                                       **options)
      refused = None
    except errors_base as error:
      expected, refused = None, error
    except Exception as error:  # pylint: disable=broad-except
      return Outcome(False, [_undocumented(error)])
    if table is None and expected is None:
      if type(raised) is not type(refused):
        outcome.findings.append(("wrong_result", f"read_file raises {type(raised).__name__}, the row path "
                                                 f"{type(refused).__name__}: {refused}"))
      return outcome
    if expected is None:
      outcome.findings.append(("accepted_invalid", f"read_file accepts what the row path refuses: {refused}"))
      return outcome
    if table is None:
      outcome.findings.append(("wrong_result", f"read_file refuses what the row path reads: {raised}"))
      return outcome
    outcome.findings += self._tables_agree(table, expected, header, rows, meta["key_kind"])
    return outcome

  def _tables_agree(self, table: Any, expected: Any, header: list[str], rows: list[list[str]],
                    key_kind: str) -> list[tuple[str, str]]:
    """Same specs, keys and entries as the row path; entries hold the cells' values for protobuf."""
    self.counters["tables_compared"] += 1
    specs = [(spec.name, spec.dtype, spec.shape) for spec in table.specs]
    if specs != [(spec.name, spec.dtype, spec.shape) for spec in expected.specs]:
      return [("wrong_result", f"specs {specs}; the row path infers {expected.specs}")]
    keys = [row[header.index("id")] for row in rows]
    keys = [int(key) for key in keys] if key_kind == "int64_list" else [key.encode("utf-8") for key in keys]
    if len(table) != len(rows) or len(table.index) != len(rows):
      return [("wrong_result", f"{len(table)} rows, {len(table.index)} keys; the csv module reads {len(rows)} rows")]
    got_rows, want_rows = table.index.rows(keys).tolist(), expected.index.rows(keys).tolist()
    for key, row, got_row, want_row in zip(keys, rows, got_rows, want_rows):
      entries = table.entries.item(got_row) if got_row >= 0 else None
      if got_row < 0 or entries != expected.entries.item(want_row):
        return [("wrong_result", f"key {key!r}: entries {entries!r} differ from the row path's "
                                 f"{expected.entries.item(want_row)!r}")]
      problem = self._entries_hold(entries, table.specs, header, row)
      if problem:
        return [("wrong_result", f"key {key!r}: {problem}")]
    return []

  def _entries_hold(self, entries: bytes, specs: Sequence[Any], header: list[str], row: list[str]) -> str | None:
    """Why a row's map entries do not hold its cells (parsed by protobuf), or None."""
    parsed = protobuf_features(self.example_pb2, delimited(1, entries))
    if parsed is None or sorted(parsed) != sorted(spec.name for spec in specs):
      return f"entries {entries!r} are no map entries of {[spec.name for spec in specs]}"
    for spec in specs:
      cell = row[header.index(spec.name)]
      kind, values = parsed[spec.name]
      if spec.dtype == "string":
        want: Any = ("bytes_list", [cell.encode("utf-8")])
      elif spec.dtype == "float64":
        want = ("bytes_list", [struct.pack("<d", float(cell))])
      elif spec.dtype in ("float32", "float16"):
        want = ("float_list", [float(np.float32(float(cell)))])
      elif spec.dtype == "bool":
        want = ("int64_list", [int(cell.strip().lower() in ("true", "t", "yes", "1"))])
      else:
        want = ("int64_list", [int(cell)])
      if (kind, values) != want and not (want[0] == "float_list" and np.isnan(want[1][0]) and np.isnan(values[0])):
        return f"column {spec.name!r} cell {cell!r} is stored as {kind} {values}, not {want}"
    return None


# --------------------------------------------------------------- manifest --

_UNSAFE_PATHS = ("../escape", "a/../../escape", "/tmp/tfds_builders_fuzz_abs", "", ".", "..", "a//b", "..\\x", "x/..",
                 "./x", "a/./b", "x\x00y", "demo/../..")
_ODD_VALUES = ("1", None, 2, 1.5, [], {}, True, -1, 10**30, "tfrecord", "npz")
_JSON_TEXTS = (b"", b"[]", b"null", b"{", b"[" * 5000 + b"]" * 5000, b'{"archive": NaN}', b"\xff\xfe",
               b'{"format_version": 1e999}', b'{"archive": 1, "archive": 2}', b"{}" * 2)


class ManifestFuzzer(Fuzzer):
  """archive.read_manifest (and import_ of what it accepts) on mutated zips and manifests."""

  name = "manifest"

  def __init__(self, tmp: pathlib.Path):
    super().__init__(tmp)
    from etils import epath  # pylint: disable=import-outside-toplevel
    from tfds_builders import archive  # pylint: disable=import-outside-toplevel

    self.epath, self.archive = epath, archive

  def generate(self, rng: np.random.Generator) -> Case:
    names: list[str] = []
    archive_format = "tfrecord" if rng.random() < 0.75 else "npz"
    prefix = _pick(rng, ("demo/cfg/1.0.0", "demo/1.0.0"))
    if archive_format == "tfrecord":
      members = {f"{prefix}/dataset_info.json": b'{"name": "demo"}', f"{prefix}/features.json": b"{}",
                 f"{prefix}/demo-train.tfrecord-00000-of-00001": _random_bytes(rng, int(rng.integers(0, 40)))}
    else:
      out = io.BytesIO()
      np.lib.format.write_array(out, np.arange(int(rng.integers(0, 5))))
      members = {"train/x.npy": out.getvalue()}
    manifest: dict[str, Any] = {
        "archive": self.archive.ARCHIVE_KIND, "format_version": self.archive.FORMAT_VERSION, "format": archive_format,
        "dataset": {"name": "demo", "config": "cfg", "version": "1.0.0"},
        "created_by": {"package": "tfds_builders", "package_version": "0"},
    }
    if archive_format == "tfrecord":
      manifest["path"] = prefix
    else:
      manifest["npz"] = {"splits": ["train"]}
    ops = [_pick(rng, ("path", "member", "field_type", "entry_type", "entry_missing", "stale_listing", "json_text",
                       "compression", "duplicate_member", "none"))
           for _ in range(_pick(rng, (0, 1, 1, 2)))]
    names += [f"manifest_{op}" for op in ops]
    if "path" in ops and archive_format == "tfrecord":
      new = _pick(rng, _UNSAFE_PATHS)
      members = {new + name[len(prefix):]: content for name, content in members.items()}
      manifest["path"] = new
    if "member" in ops:
      odd_name = _pick(rng, (f"{prefix}/../../escape.txt", "../escape.txt", "/tmp/tfds_builders_fuzz_abs.txt",
                             f"{prefix}/a\\..\\..\\x", f"{prefix}/./x", f"{prefix}//x", "other/x", f"{prefix}/x\x00y"))
      members[odd_name] = b"e"
    method = zipfile.ZIP_DEFLATED if rng.random() < 0.5 else zipfile.ZIP_STORED
    out = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(out, "w", compression=method) as archive:
      warnings.simplefilter("ignore")  # duplicate names are the point
      for name, content in members.items():
        archive.writestr(_member(name, method), content)
      if "duplicate_member" in ops:
        archive.writestr(_member(_pick(rng, list(members)), method), b"again")
      manifest["files"] = [{"name": info.filename, "size": info.file_size, "crc32": info.CRC}
                           for info in archive.infolist()]
      self._mutate_manifest(rng, manifest, ops)
      text = json.dumps(manifest, indent=1).encode("utf-8")
      if "json_text" in ops:
        text = _pick(rng, _JSON_TEXTS)
      manifest_method = zipfile.ZIP_DEFLATED
      if "compression" in ops:
        manifest_method = _pick(rng, (zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA))
      archive.writestr(_member(self.archive.MANIFEST_NAME, manifest_method), text)
    data = out.getvalue()
    if rng.random() < 0.1:
      data = self._patch_manifest_entry(rng, data, names)
    if rng.random() < 0.35:
      data = self._mutate_zip(rng, data, names)
    return Case(data, {"mutations": names})

  @staticmethod
  def _mutate_manifest(rng: np.random.Generator, manifest: dict[str, Any], ops: list[str]) -> None:
    files = manifest["files"]
    if "field_type" in ops:
      field = _pick(rng, ("format_version", "format", "files", "path", "archive", "dataset"))
      manifest[field] = _pick(rng, _ODD_VALUES)
    if "entry_type" in ops and files:
      at = int(rng.integers(len(files)))
      if rng.random() < 0.4:
        files[at] = _pick(rng, (None, "x", [], {}, 5))
      else:
        field = _pick(rng, ("name", "size", "crc32"))
        files[at][field] = _pick(rng, ("10", "ab", ["x"], -1, True, 2**40, 1.5, None, {}))
    if "entry_missing" in ops and files and isinstance(files[0], dict):
      files[0].pop(_pick(rng, ("name", "size", "crc32")), None)
    if "stale_listing" in ops and files:
      if rng.random() < 0.5:
        files.pop(int(rng.integers(len(files))))
      else:
        files.append({"name": "demo/1.0.0/missing", "size": 1, "crc32": 0})

  @staticmethod
  def _patch_manifest_entry(rng: np.random.Generator, data: bytes, names: list[str]) -> bytes:
    """The manifest's zip headers claiming encryption or an unknown compression method."""
    buf = bytearray(data)
    how = _pick(rng, ("encrypted", "method"))
    names.append(f"zip_{how}")
    for signature, flags_at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
      at = bytes(buf).rfind(signature)
      if at < 0:
        continue
      if how == "encrypted":
        buf[at + flags_at] |= 0x01
      else:
        buf[at + flags_at + 2:at + flags_at + 4] = struct.pack("<H", _pick(rng, (99, 1, 97, 0xFFFF)))
    return bytes(buf)

  @staticmethod
  def _mutate_zip(rng: np.random.Generator, data: bytes, names: list[str]) -> bytes:
    if rng.random() < 0.4:
      boundaries = [at for signature in (b"PK\x03\x04", b"PK\x01\x02", b"PK\x05\x06")
                    for at in range(len(data)) if data.startswith(signature, at)]
      cut = max(0, _pick(rng, boundaries) + int(rng.integers(-2, 30))) if boundaries else 0
      names.append("zip_truncate_boundary")
      return data[:cut]
    return _mutate_times(rng, data, (b"PK\x05\x06", b"\xff\xff\xff\xff", b"\x00\x00\x00\x00", b"..", b"/"), names)

  def check(self, case: Case) -> Outcome:
    errors_base = _documented()
    path = self.tmp / "fuzz.zip"
    path.write_bytes(case.data)
    try:
      manifest = self.archive.read_manifest(self.epath.Path(path))
    except errors_base:
      return Outcome(False)
    except Exception as error:  # pylint: disable=broad-except
      return Outcome(False, [_undocumented(error)])
    outcome = Outcome(True)
    problem = self.manifest_problem(manifest, path)
    if problem:
      kind = "unsafe_path" if problem.startswith("path") else "accepted_invalid"
      outcome.findings.append((kind, problem))
    elif manifest["format"] == "tfrecord":
      outcome.findings += self._imports_inside(path)
    return outcome

  def manifest_problem(self, manifest: Any, path: pathlib.Path) -> str | None:
    """Why an accepted manifest is unusable or unsafe for import_ ("path ..." if it leads outside), or None."""
    if not isinstance(manifest, dict) or manifest.get("archive") != self.archive.ARCHIVE_KIND:
      return "not an archive manifest"
    if manifest.get("format") not in self.archive.FORMATS:
      return f"format {manifest.get('format')!r}"
    version = manifest.get("format_version")
    if not isinstance(version, int) or version > self.archive.FORMAT_VERSION:
      return f"format_version {version!r}"
    files = manifest.get("files")
    if not isinstance(files, list) or not all(_typed_entry(entry) for entry in files):
      return f"files {files!r:.200}"
    with zipfile.ZipFile(path) as archive:
      members = {info.filename: (info.file_size, info.CRC) for info in archive.infolist()}
    members.pop(self.archive.MANIFEST_NAME, None)
    if {entry["name"]: (entry["size"], entry["crc32"]) for entry in files} != members:
      return "files differ from the zip's members"
    if manifest["format"] != "tfrecord":
      return None
    prefix = manifest.get("path")
    if not isinstance(prefix, str) or escapes(prefix):
      return f"path {prefix!r} leads outside the data_dir"
    for entry in files:
      if not entry["name"].startswith(prefix + "/") or escapes(entry["name"][len(prefix) + 1:]):
        return f"path of member {entry['name']!r} leads outside {prefix}/"
    return None

  def _imports_inside(self, path: pathlib.Path) -> list[tuple[str, str]]:
    """import_ of an accepted archive writes only below the data_dir, or raises a documented error."""
    self.counters["imports"] += 1
    root = self.tmp / "import_root"
    shutil.rmtree(root, ignore_errors=True)
    data_dir = root / "a" / "b" / "data"
    data_dir.mkdir(parents=True)
    try:
      self.archive.import_(self.epath.Path(path), self.epath.Path(data_dir))
    except _documented():
      pass
    except Exception as error:  # pylint: disable=broad-except
      return [_undocumented(error)]
    inside = {data_dir, *data_dir.parents}
    outside = [str(p) for p in root.rglob("*") if p not in inside and data_dir not in p.parents]
    return [("unsafe_path", f"import_ wrote outside the data_dir: {outside}")] if outside else []


def _member(name: str, method: int) -> zipfile.ZipInfo:
  """A zip member's header with a fixed time: the same seed gives the same archive bytes."""
  info = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
  info.compress_type, info.external_attr = method, 0o600 << 16
  return info


def _typed_entry(entry: Any) -> bool:
  """Whether a manifest `files` entry has a str name and int size and CRC (a bool is no int here)."""
  types = {"name": str, "size": int, "crc32": int}
  # pylint: disable-next=unidiomatic-typecheck
  return isinstance(entry, dict) and all(type(entry.get(key)) is kind for key, kind in types.items())


def escapes(relative: str) -> bool:
  """Whether a relative path from a file could lead outside the folder it is joined to."""
  parts = relative.replace("\\", "/").split("/")
  return not relative or relative.startswith("/") or "\x00" in relative or ".." in parts


# ----------------------------------------------------------------- canary --


class CanaryFuzzer(Fuzzer):
  """A deliberately broken parser of one-byte commands: proves the harness reports every kind of finding."""

  name = "canary"

  def generate(self, rng: np.random.Generator) -> Case:
    return Case(bytes([_weighted(rng, {"o": 0.94, "a": 0.02, "x": 0.02, "c": 0.01, "h": 0.01}).encode()[0]]),
                {"mutations": []})

  def check(self, case: Case) -> Outcome:
    command = case.data[:1]
    if command == b"c":
      import ctypes  # pylint: disable=import-outside-toplevel
      ctypes.string_at(0)  # a segfault
    if command == b"h":
      time.sleep(3600)
    if command == b"x":
      raise KeyError("an undocumented exception")
    return Outcome(command != b"a", [("accepted_invalid", "the canary's bad answer")] if command == b"a" else [])


FUZZERS: dict[str, type[Fuzzer]] = {
    fuzzer.name: fuzzer for fuzzer in (WalkFuzzer, LayoutFuzzer, KeysFuzzer, NpyFuzzer, CsvFuzzer, ManifestFuzzer,
                                       CanaryFuzzer)
}
PARSERS = ("walk", "layout", "keys", "npy", "csv", "manifest")  # `all`; the canary runs only when named


# ----------------------------------------------------------------- worker --


class Progress:
  """The index and bytes of the input being checked, in a shared file the driver reads after a crash or hang."""

  def __init__(self, path: pathlib.Path, create: bool = False):
    if create:
      path.write_bytes(struct.pack("<qq", _NOT_STARTED, 0) + b"\0" * _PROGRESS_BYTES)
    self._file = path.open("r+b")
    self._map = mmap.mmap(self._file.fileno(), 16 + _PROGRESS_BYTES)

  def record(self, index: int, case: Case) -> None:
    payload = (json.dumps(case.meta) + "\n").encode() + case.data
    payload = payload[:_PROGRESS_BYTES]
    self._map[16:16 + len(payload)] = payload
    self._map[0:16] = struct.pack("<qq", index, len(payload))

  def read(self) -> tuple[int, Case | None]:
    index, size = struct.unpack("<qq", self._map[0:16])
    if index < 0:
      return _NOT_STARTED, None
    meta, _, data = self._map[16:16 + size].partition(b"\n")
    return index, Case(data, json.loads(meta))

  def index(self) -> int:
    return struct.unpack("<q", self._map[0:8])[0]

  def finish(self) -> None:
    self._map[0:8] = struct.pack("<q", _FINISHED)

  def close(self) -> None:
    self._map.close()
    self._file.close()


def _emit(message: dict[str, Any]) -> None:
  print(json.dumps(message), flush=True)


def _finding_message(parser: str, index: int, kind: str, detail: str, case: Case) -> dict[str, Any]:
  return {"type": "finding", "parser": parser, "index": index, "kind": kind, "detail": detail,
          "input_hex": case.data[:4096].hex(), "input_bytes": len(case.data), "meta": case.meta}


def run_worker(parser: str, count: int, seed: int, batch: int, start: int, progress_path: pathlib.Path,
               tmp: pathlib.Path) -> int:
  """Checks inputs [start, count) of the seed's sequence, printing findings and stats as JSON lines."""
  import faulthandler  # pylint: disable=import-outside-toplevel
  from hypothesis import HealthCheck, Phase, given, settings, strategies  # pylint: disable=import-outside-toplevel
  import hypothesis  # pylint: disable=import-outside-toplevel

  faulthandler.enable()  # a segfault prints the Python stack to stderr, which the driver keeps
  warnings.simplefilter("ignore")
  fuzzer = FUZZERS[parser](tmp)
  progress = Progress(progress_path)
  valid = fuzzer.valid_case()
  if valid is not None:
    fuzzer.check(valid)
  stats: collections.Counter[str] = collections.Counter()
  by_kind: collections.Counter[str] = collections.Counter()
  state = {"index": 0, "batch": 0, "reported": 0.0}
  started = time.perf_counter()

  def one_batch(batch_seed: int) -> None:
    rng = np.random.default_rng([seed, state["batch"], batch_seed])
    state["batch"] += 1
    for _ in range(min(batch, count - state["index"])):
      case = fuzzer.generate(rng)  # generated even when skipped: a restart sees the same sequence
      index = state["index"]
      state["index"] += 1
      if index < start:
        continue
      progress.record(index, case)
      try:
        outcome = fuzzer.check(case)
      except Exception as error:  # pylint: disable=broad-except  # raised where the check expects none
        outcome = Outcome(False, [("undocumented_exception", "".join(traceback.format_exception(error))[-1500:])])
      stats["inputs"] += 1
      stats["accepted" if outcome.accepted else "rejected"] += 1
      for name in case.meta.get("mutations", ()):
        stats[f"mutation:{name}"] += 1
      for kind, detail in outcome.findings:
        by_kind[kind] += 1
        if by_kind[kind] <= _EXAMPLES_PER_KIND:
          small = fuzzer.shrink(case, kind)
          _emit(_finding_message(parser, index, kind, detail, small))
      if outcome.findings or time.perf_counter() - state["reported"] > 0.5:
        report("stats")
    report("stats")

  def report(kind: str) -> None:
    state["reported"] = time.perf_counter()
    _emit({"type": kind, "stats": dict(stats), "by_kind": dict(by_kind), "counters": dict(fuzzer.counters),
           "seconds": time.perf_counter() - started, "examples": state["batch"]})

  examples = max(1, -(-count // batch))

  @hypothesis.seed(seed)
  @settings(max_examples=examples, database=None, deadline=None, phases=[Phase.generate],
            suppress_health_check=list(HealthCheck), print_blob=False)
  @given(strategies.integers(min_value=0, max_value=2**63 - 1))
  def hypothesis_batches(batch_seed: int) -> None:
    if state["index"] < count:
      one_batch(batch_seed)

  hypothesis_batches()
  while state["index"] < count:  # Hypothesis skips values it has generated before: top up without it
    one_batch(state["batch"])
  progress.finish()
  progress.close()
  report("done")
  return 0


# ----------------------------------------------------------------- driver --


@dataclasses.dataclass
class _Run:
  """A parser's worker processes, one after another (a new one after each crash or hang)."""

  parser: str
  count: int
  start: int = 0
  process: subprocess.Popen | None = None
  progress: Progress | None = None
  out_path: pathlib.Path | None = None
  err_path: pathlib.Path | None = None
  last_index: int = _NOT_STARTED
  last_change: float = 0.0
  spawned: float = 0.0
  began: float = 0.0
  restarts: int = 0
  finished: bool = False
  stopped: str = ""
  stats: collections.Counter = dataclasses.field(default_factory=collections.Counter)
  by_kind: collections.Counter = dataclasses.field(default_factory=collections.Counter)
  counters: collections.Counter = dataclasses.field(default_factory=collections.Counter)
  examples: list = dataclasses.field(default_factory=list)
  seconds: float = 0.0
  hypothesis_examples: int = 0
  inputs: int = 0


def _spawn(run: _Run, args: argparse.Namespace, tmp: pathlib.Path) -> None:
  work = tmp / f"{run.parser}.{run.restarts}"
  work.mkdir()
  run.progress = Progress(work / "progress", create=True)
  run.out_path, run.err_path = work / "stdout", work / "stderr"
  command = [sys.executable, str(pathlib.Path(__file__).resolve()), "--worker", run.parser, "--count", str(run.count),
             "--seed", str(args.seed), "--batch", str(args.batch), "--start", str(run.start),
             "--progress", str(work / "progress"), "--tmp", str(work)]
  env = {**os.environ, "NO_GCE_CHECK": "true", "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONHASHSEED": "0"}
  with run.out_path.open("wb") as out, run.err_path.open("wb") as err:
    run.process = subprocess.Popen(command, stdout=out, stderr=err, env=env)  # pylint: disable=consider-using-with
  run.last_index, run.spawned = _NOT_STARTED, time.monotonic()
  run.last_change = run.spawned


def _collect(run: _Run, finished: bool) -> None:
  """Folds a worker's findings and its last stats into the run (inputs only if it finished)."""
  last_stats = None
  for line in run.out_path.read_text(errors="replace").splitlines():
    try:
      message = json.loads(line)
    except ValueError:
      continue
    if message.get("type") == "finding":
      if sum(m["kind"] == message["kind"] for m in run.examples) < _EXAMPLES_PER_KIND:
        run.examples.append(message)
    elif message.get("type") in ("stats", "done"):
      last_stats = message
  if last_stats:
    segment = collections.Counter(last_stats["stats"])
    if finished:
      run.inputs += segment["inputs"]
    del segment["inputs"]
    run.stats.update(segment)
    run.by_kind.update(last_stats["by_kind"])
    run.counters.update(last_stats["counters"])
    run.seconds += last_stats["seconds"]
    run.hypothesis_examples = max(run.hypothesis_examples, last_stats["examples"])


def _python_stack(stderr: str) -> str:
  """The Python stack faulthandler printed for a fatal signal, else stderr's end."""
  start = stderr.rfind("Fatal Python error")
  if start < 0:
    return stderr[-1500:]
  end = stderr.find("Extension modules", start)
  return stderr[start:end if end > 0 else None][:1500]


def _abort(run: _Run, kind: str, detail: str, args: argparse.Namespace, tmp: pathlib.Path) -> None:
  """Records a crash or hang at the input in progress and restarts the worker after it."""
  index, case = run.progress.read()
  stderr = _python_stack(run.err_path.read_text(errors="replace"))
  _collect(run, finished=False)
  # Its counters stop at its last full batch; its inputs are all up to the fatal one.
  run.inputs += index - run.start + 1 if index >= 0 else 0
  run.by_kind[kind] += 1
  message = {"type": "finding", "parser": run.parser, "index": index, "kind": kind, "detail": f"{detail}\n{stderr}"}
  if case is not None:
    message.update(input_hex=case.data[:4096].hex(), input_bytes=len(case.data), meta=case.meta)
  run.examples.append(message)
  run.progress.close()
  if index < 0 or run.restarts >= args.max_restarts:
    run.finished, run.stopped = True, f"stopped after {run.restarts + 1} crashes or hangs"
    return
  run.restarts += 1
  run.start = index + 1
  if run.start >= run.count:
    run.finished = True
    return
  _spawn(run, args, tmp)


def drive(args: argparse.Namespace) -> int:
  parsers = PARSERS if args.parsers == ["all"] else tuple(args.parsers)
  unknown = [name for name in parsers if name not in FUZZERS]
  if unknown:
    print(f"fuzz.py: unknown parser(s) {unknown}; use {sorted(FUZZERS)} or all", file=sys.stderr)
    return 2
  started = time.monotonic()
  in_memory = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None  # each input is written to a file
  tmp = pathlib.Path(tempfile.mkdtemp(prefix="tfds_builders_fuzz.", dir=in_memory))
  waiting = [_Run(parser, args.count) for parser in parsers]
  running: list[_Run] = []
  done_runs: list[_Run] = []
  try:
    while waiting or running:
      while waiting and len(running) < args.jobs:
        run = waiting.pop(0)
        run.began = time.monotonic()
        _spawn(run, args, tmp)
        running.append(run)
      time.sleep(0.1)
      for run in list(running):
        now = time.monotonic()
        code = run.process.poll()
        if code is None:
          index = run.progress.index()
          if index != run.last_index:
            run.last_index, run.last_change = index, now
          elif index >= 0 and now - run.last_change > args.timeout:
            run.process.kill()
            run.process.wait()
            _abort(run, "hang", f"input {index} ran over {args.timeout} s", args, tmp)
          elif index == _NOT_STARTED and now - run.spawned > args.startup_timeout:
            run.process.kill()
            run.process.wait()
            _abort(run, "hang", f"the worker did not start within {args.startup_timeout} s", args, tmp)
        elif code == 0 or run.progress.index() == _FINISHED:
          _collect(run, finished=True)
          if code:
            run.by_kind["crash"] += 1
            run.examples.append({"type": "finding", "parser": run.parser, "index": None, "kind": "crash",
                                 "detail": f"the worker exited with {code} after its last input"})
          run.progress.close()
          run.finished = True
        else:
          what = f"signal {-code}" if code < 0 else f"exit code {code}"
          _abort(run, "crash", f"the worker died ({what}) checking this input", args, tmp)
        if run.finished:
          running.remove(run)
          done_runs.append(run)
          summary = _summary(run, time.monotonic() - run.began)
          if args.verbose:
            print(json.dumps({"type": "parser", **summary}), flush=True)
  finally:
    for run in running:
      if run.process and run.process.poll() is None:
        run.process.kill()
    shutil.rmtree(tmp, ignore_errors=True)
  results = {run.parser: _summary(run, 0) for run in done_runs}
  ok = all(result["ok"] for result in results.values())
  print(json.dumps({"fuzz": "tfds_builders", "seed": args.seed, "count": args.count, "ok": ok,
                    "seconds": round(time.monotonic() - started, 1), "parsers": results}), flush=True)
  return 0 if ok else 1


def _summary(run: _Run, wall: float) -> dict[str, Any]:
  hard = sum(run.by_kind[kind] for kind in HARD)
  inputs = run.inputs
  summary = {
      "parser": run.parser, "inputs": inputs, "accepted": run.stats["accepted"], "rejected": run.stats["rejected"],
      "seconds": round(run.seconds, 2), "inputs_per_second": round(inputs / run.seconds) if run.seconds else None,
      "hypothesis_examples": run.hypothesis_examples, "restarts": run.restarts, "hard_findings": hard,
      "discrepancies": sum(run.by_kind[kind] for kind in SOFT), "by_kind": dict(run.by_kind),
      "counters": dict(run.counters),
      "mutations": {k.split(":", 1)[1]: v for k, v in sorted(run.stats.items()) if k.startswith("mutation:")},
      "stopped": run.stopped, "ok": hard == 0 and inputs >= run.count and not run.stopped, "findings": run.examples,
  }
  if wall:
    summary["wall_seconds"] = round(wall, 1)
  return summary


def replay(args: argparse.Namespace) -> int:
  """Checks one input (as a finding printed it) and prints the outcome."""
  tmp = pathlib.Path(tempfile.mkdtemp(prefix="tfds_builders_fuzz_replay."))
  try:
    fuzzer = FUZZERS[args.parsers[0]](tmp)
    outcome = fuzzer.check(Case(bytes.fromhex(args.replay), json.loads(args.meta)))
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  print(json.dumps({"accepted": outcome.accepted, "findings": outcome.findings}))
  return 1 if any(kind in HARD for kind, _ in outcome.findings) else 0


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, epilog=_USAGE,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("parsers", nargs="+", metavar="PARSER", help=f"one or more of {', '.join(PARSERS)}, or all")
  parser.add_argument("--count", type=int, default=10_000, help="inputs per parser (default 10000)")
  parser.add_argument("--seed", type=int, default=0, help="the seed of every parser's input sequence")
  parser.add_argument("--batch", type=int, default=200, help="inputs generated per Hypothesis example")
  parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), help="parsers fuzzed at a time")
  parser.add_argument("--timeout", type=float, default=10.0, help="seconds one input may run (a hang after that)")
  parser.add_argument("--startup-timeout", type=float, default=300.0, help="seconds a worker may take to start")
  parser.add_argument("--max-restarts", type=int, default=20, help="crashes or hangs before a parser's run stops")
  parser.add_argument("--verbose", action="store_true", help="print each parser's summary as it finishes")
  parser.add_argument("--replay", help="check one input, given as hex", default=None)
  parser.add_argument("--meta", default="{}", help="with --replay: the input's meta, as JSON")
  parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
  parser.add_argument("--start", type=int, default=0, help=argparse.SUPPRESS)
  parser.add_argument("--progress", help=argparse.SUPPRESS)
  parser.add_argument("--tmp", help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.worker:
    return run_worker(args.parsers[0], args.count, args.seed, args.batch, args.start, pathlib.Path(args.progress),
                      pathlib.Path(args.tmp))
  if args.replay is not None:
    return replay(args)
  return drive(args)


if __name__ == "__main__":
  sys.exit(main())
