"""Overlay chains: an overlay on an overlay, resolved link by link down to the root base, and read back byte-exact."""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from etils import epath
import numpy as np
import tensorflow_datasets as tfds

from tfds_builders.augmented import base as base_lib
from tfds_builders.augmented import constants as constants_lib
from tfds_builders.augmented import fields
from tfds_builders.augmented import overlay_format
from tfds_builders.core import errors
from tfds_builders.core import fast
from tfds_builders.core import serialization
from tfds_builders.core import tfrecord_io

_RESTORE_SHARD = "Restore the overlay's files, or rebuild it"
Locations = Mapping[str, str]  # a recorded location -> where it is now


@dataclasses.dataclass(frozen=True, eq=False)
class Link:
  """One prepared overlay of a chain.

  Attributes:
    name: Its full TFDS name (`augmented/<config>/<version>`).
    version: Its version.
    location: Its version directory.
    metadata: Its `augmented` metadata entry.
    features: Its FeaturesDict (new fields and alignment fields).
    files: Split -> `(path, bytes, records)` of each shard, in order.
  """

  name: str
  version: str
  location: str
  metadata: dict[str, Any]
  features: tfds.features.FeaturesDict
  files: dict[str, list[tuple[str, int, int]]]

  @functools.cached_property
  def digest(self) -> str:
    shards = {split: [(epath.Path(path).name, size, count) for path, size, count in files]
              for split, files in self.files.items()}
    return overlay_format.link_digest(self.metadata, shards)

  @property
  def stored_names(self) -> list[str]:
    return overlay_format.stored_names(self.metadata)

  @property
  def constant_names(self) -> list[str]:
    return overlay_format.constant_names(self.metadata)

  @property
  def title(self) -> str:
    return f"overlay {self.name} at {self.location}"

  def reference(self) -> dict[str, str]:
    """What a link sitting on this one records as its `parent`."""
    return {"name": self.name, "version": self.version, "location": self.location, "digest": self.digest}


@dataclasses.dataclass(frozen=True, eq=False)
class Chain:
  """Overlays from the one sitting on the root base (first) to the newest (last)."""

  links: tuple[Link, ...]

  @property
  def root(self) -> dict[str, Any]:
    """The root base's identity, as the links record it."""
    return self.links[0].metadata["base"]

  @property
  def top(self) -> Link:
    return self.links[-1]

  def field_owners(self) -> dict[str, Link]:
    """Each field the chain adds -> the link whose value wins (the latest to write it)."""
    return {name: link for link in self.links for name in link.metadata["new_fields"]}

  def overwritten(self, base_names: set[str] | frozenset[str]) -> set[str]:
    """Base features some link replaces."""
    return {name for link in self.links for name in link.metadata.get("overwrite_fields", ()) if name in base_names}

  def features(self, dropped: frozenset[str] = frozenset()) -> dict[str, tfds.features.FeatureConnector]:
    """The chain's fields as features, the winning link's, minus `dropped`."""
    result = {}
    for name, link in self.field_owners().items():
      if name in dropped:
        continue
      result[name] = link.features[name] if name in link.features.keys() else spec_of(link, name).feature()
    return result

  def describe(self) -> str:
    """The chain as release notes name it: root, then each link with its version."""
    return " <- ".join([f"{self.root['name']} {self.root.get('version') or ''}".strip()]
                       + [f"{link.name}" for link in self.links])

  def reference(self) -> dict[str, str]:
    return self.top.reference()


def constant_values(chain: Chain, split: str) -> dict[str, Any]:
  """The chain's constant fields in `split`, decoded (`constants.values`); a later link writing a name wins."""
  owners = chain.field_owners()
  values = {}
  for link in chain.links:
    names = [name for name in link.constant_names if owners[name] is link]
    if names:
      decoded = constants_lib.values(link.metadata, split)
      values.update({name: decoded[name] for name in names})
  return values


def spec_of(link: Link, name: str) -> fields.FieldSpec:
  """A field of a link as its metadata declares it (a constant has no feature among the link's records')."""
  return fields.FieldSpec.from_json(name, link.metadata["new_fields"][name])


def open_link(location: str, data_dir: str | None = None) -> Link:
  """A prepared overlay as a chain link.

  Raises:
    SourceError: if it is not there or is no overlay (`overlay_format.read_metadata`).
  """
  builder = tfrecord_io.prepared_builder(location, data_dir)
  return link_of(builder)


def link_of(builder: tfds.core.DatasetBuilder) -> Link:
  metadata = json.loads(json.dumps(overlay_format.read_metadata(builder)))  # plain dicts, as stored
  files = {}
  for split, info in builder.info.splits.items():
    paths = [str(path) for path in info.filepaths] if info.num_examples else []
    files[split] = [(path, base_lib.file_size(path, "Overlay shard", _RESTORE_SHARD), count)
                    for path, count in zip(paths, info.shard_lengths)]
  return Link(
      name=builder.info.full_name, version=str(builder.version), location=str(builder.data_path),
      metadata=metadata, features=builder.info.features, files=files,
  )


def is_overlay(location: str, data_dir: str | None = None) -> bool:
  """Whether `location` is a prepared overlay (a base that makes a chain)."""
  try:
    builder = tfrecord_io.prepared_builder(location, data_dir)
  except errors.SourceError:
    return False
  entry = (builder.info.metadata or {}).get(overlay_format.METADATA_KEY) or {}
  return entry.get("mode") == "overlay"


def resolve(top: Link, locations: Locations | None = None) -> Chain:
  """The chain under `top`, each parent opened where it was recorded (or where `locations` says it moved).

  Raises:
    SourceError: for a cycle, a missing link, a link whose digest differs
      from the one recorded, or a link with another root base.
    ConfigError: for two links writing one field that the later does not
      list in `overwrite_fields`.
  """
  locations = locations or {}
  links, seen = [top], {_resolved(top.location): top}
  while links[-1].metadata.get(overlay_format.PARENT):  # the whole chain first: a cycle is named as one
    child = links[-1]
    recorded = child.metadata[overlay_format.PARENT]
    where = locations.get(recorded["location"], recorded["location"])
    try:
      parent = open_link(where)
    except errors.SourceError as error:
      raise errors.SourceError(
          errors.with_hint(
              f"Overlay chain link {recorded['name']} is missing: {child.title} records it at "
              f"{recorded['location']}, and {where} holds no overlay ({error})",
              f"If it moved, pass locations={{{recorded['location']!r}: '<where it is now>'}}",
          )
      ) from error
    again = seen.get(_resolved(parent.location)) or next((link for link in links if link.digest == parent.digest), None)
    if again is not None:
      raise errors.SourceError(
          errors.with_hint(
              f"Overlay chain has a cycle: {child.title} records parent {parent.title}, which is "
              f"already in the chain ({' -> '.join(link.location for link in links)} -> {again.location})",
              "Each overlay must sit on an older one; rebuild the link whose parent is wrong",
          )
      )
    seen[_resolved(parent.location)] = parent
    links.append(parent)
  for child, parent in zip(links, links[1:]):
    _check_parent(child, parent)
  chain = Chain(tuple(reversed(links)))
  check_fields(chain.links)
  return chain


def _check_parent(child: Link, parent: Link) -> None:
  """Refuses a parent that is not the link the child was built on, or sits on another root base."""
  recorded = child.metadata[overlay_format.PARENT]
  if parent.digest != recorded["digest"]:
    raise errors.SourceError(
        errors.with_hint(
            f"Overlay chain link {parent.title} is not the one {child.title} was built on: its "
            f"digest is {parent.digest[:12]}..., {child.name} recorded {recorded['digest'][:12]}... "
            "(the link was rebuilt or modified since)",
            f"Restore that link, or rebuild {child.name} on it",
        )
    )
  if parent.metadata["base"]["digest"] != child.metadata["base"]["digest"]:
    raise errors.SourceError(
        f"Overlay chain links {child.title} and {parent.title} have different root bases "
        f"({child.metadata['base']['name']} and {parent.metadata['base']['name']}, digests differ). "
        f"Rebuild {child.name} on {parent.name}."
    )


def _resolved(location: str) -> str:
  path = epath.Path(location)
  try:
    return str(path.resolve())
  except (OSError, NotImplementedError):
    return str(path)


def check_fields(links: Sequence[Link]) -> None:
  """Refuses two links writing one field unless the later one lists it in `overwrite_fields`."""
  written: dict[str, Link] = {}
  for link in links:
    allowed = set(link.metadata.get("overwrite_fields", ()))
    for name in link.metadata["new_fields"]:
      if name in written and name not in allowed:
        raise errors.ConfigError(
            errors.with_hint(
                f"Overlay chain links {written[name].title} and {link.title} both write field {name!r}",
                f"List {name!r} in overwrite_fields of {link.name} (the later link wins), or rename it",
            )
        )
      written[name] = link


def open_root(chain_or_identity: Chain | Mapping[str, Any], base: Any = None, base_data_dir: str | None = None,
              locations: Locations | None = None) -> base_lib.Base:
  """The root base as recorded (or `base`, or where `locations` says it moved).

  Raises:
    ConfigError: for a `base` of the wrong kind.
  """
  recorded = chain_or_identity.root if isinstance(chain_or_identity, Chain) else chain_or_identity
  locations = locations or {}
  splits = list(recorded["splits"])
  if isinstance(base, Mapping):
    if recorded["kind"] != base_lib.RECORDS:
      raise errors.ConfigError(
          f"base={dict(base)!r} names raw TFRecord files, but the overlay was built from the "
          f"prepared dataset {recorded['name']}; pass its directory or name."
      )
    return base_lib.records_from_identity(recorded, base, "auto", None)
  if recorded["kind"] == base_lib.RECORDS:
    if base is not None:
      raise errors.ConfigError(
          f"base={base!r}: the overlay was built from raw TFRecord files; pass them as "
          "base={split: files or globs}, or leave base out to use the recorded paths."
      )
    moved = {split: [locations.get(path, path) for path in paths] for split, paths in recorded["paths"].items()}
    return base_lib.records_from_identity(recorded, moved, "auto", None)
  location = base if base is not None else locations.get(recorded["location"], recorded["location"])
  return base_lib.open_prepared(location, base_data_dir, splits)


def published(overlay: str, locations: Locations | None) -> tuple[str, Locations | None]:
  """A namespace name (`team:augmented/cfg:1.0.0`) as its registry's version directory, with where its base and links are."""
  from tfds_builders import registry  # pylint: disable=g-import-not-at-top  # only namespace loads need it

  resolved = registry.namespace_overlay(overlay)
  if resolved is None:
    return overlay, locations
  return os.fspath(resolved.version_dir), {**resolved.locations, **(locations or {})}


def check_tfrecord_links(chain: Chain, reader: str) -> None:
  """Refuses a link stored as ArrayRecord where links are read as TFRecord files (`load_augmented`, compaction).

  Raises:
    SourceError: naming the link, its file and the reader that does read it.
  """
  for link in chain.links:
    shards = [path for files in link.files.values() for path, _, _ in files]
    stored = next((path for path in shards if base_lib.is_array_record_shard(path)), None)
    if stored is not None:
      raise errors.SourceError(
          errors.with_hint(
              f"Overlay chain link {link.title} is stored as ArrayRecord ({epath.Path(stored).name}); "
              f"{reader} reads a link's records as TFRecord",
              "Read the chain by index with tfds_builders.augmented_source(...) (its base stored as "
              "ArrayRecord too), or rebuild the link with --file_format tfrecord",
          )
      )


def check_root(chain: Chain, found: base_lib.Base, hint: str | None = None) -> None:
  """Checks the base found (`open_root`) against the identity the chain recorded.

  Args:
    chain: The resolved chain.
    found: Its root base as opened.
    hint: What to do about another base (default: pass the one it was built from).

  Raises:
    SourceError: for another base, another version of it, or files changed
      in number, name, size or record count, saying what differs.
  """
  recorded = chain.root
  if found.digest() != recorded["digest"]:
    raise errors.SourceError(
        errors.with_hint(
            f"Overlay {chain.top.name} was built from another base than {found.title()}: "
            f"{overlay_format.identity_difference(recorded, found.identity())}",
            hint or (f"Pass the base it was built from ({recorded['name']}"
                     f"{' ' + recorded['version'] if recorded.get('version') else ''} at {recorded['location']}), "
                     "or rebuild the overlay against this base"),
        )
    )


# ------------------------------------------------------------ compaction --


class CompactedEntries:
  """A chain's field entries for consecutive base records of one file, taken byte-exact from its links.

  Per record: every link's stored entries (chain order, alignment entries
  and entries a later link or this config overwrites left out), then every
  link's constants; None if a link flags the record unmatched.
  """

  def __init__(self, chain: Chain, split: str, file: base_lib.BaseFile, offset: int, dropped: frozenset[str]):
    owners = chain.field_owners()
    self._split, self._offset = split, offset
    self._frames = base_lib.file_fingerprints(file)
    self._readers = []
    for link in chain.links:
      keep = {name for name in link.stored_names if owners[name] is link and name not in dropped}
      if link.stored_names:  # a link of constants only has no records to read
        self._readers.append((link, keep, _link_records(link, split, offset, len(self._frames))))
    self._constants = b"".join(
        constants_lib.entry(link.metadata, name, split)
        for link in chain.links for name in link.constant_names if owners[name] is link and name not in dropped
    )
    self._unmatched = b"".join(serialization.int64_feature(serialization.FeatureKey(overlay_format.MATCHED), (0,)))

  def entries(self, start: int, count: int) -> list[bytes | None]:
    """The chain's entries of file records [start, start + count)."""
    result = []
    for position in range(start, start + count):
      parts: list[bytes] | None = []
      for link, keep, records in self._readers:
        record = next(records, None)
        where = f"{self._split}[{self._offset + position}]"
        if record is None:
          raise errors.SourceError(
              f"Overlay chain link {link.title} has fewer records than its base: none for base example "
              f"{where}. Rebuild {link.name}.")
        found = dict(serialization.map_entries(record))
        self._check(link, found, position, where)
        if found.get(overlay_format.MATCHED) == self._unmatched:
          parts = None
        if parts is not None:
          parts.extend(entry for key, entry in found.items() if key in keep)
      result.append(None if parts is None else b"".join(parts) + self._constants)
    return result

  def _check(self, link: Link, found: Mapping[str, bytes], position: int, where: str) -> None:
    index = _raw_int64(found.get(overlay_format.BASE_INDEX))
    fingerprint = _raw_int64(found.get(overlay_format.BASE_FINGERPRINT))
    if index != self._offset + position:
      raise errors.SourceError(
          f"Overlay chain link {link.title} is misaligned with its base: the record read for base example "
          f"{where} holds base index {index}. Rebuild {link.name}.")
    if fingerprint != int(self._frames[position]):
      raise errors.SourceError(
          f"Overlay chain link {link.title} does not match its base at base example {where}: the base "
          f"record's fingerprint differs from the one the link was built from. Rebuild {link.name} against this base.")


def _raw_int64(entry: bytes | None) -> int | None:
  """An alignment value: an int64 stored as 8 raw bytes, the entry's last 8."""
  return None if entry is None else int(np.frombuffer(entry[-8:], "<i8")[0])


def _link_records(link: Link, split: str, first: int, count: int) -> Iterator[bytes]:
  """A link's records of split examples [first, first + count)."""
  if split not in link.files:
    raise errors.SourceError(f"Overlay chain link {link.title} has no split {split!r}; it has {sorted(link.files)}.")
  start = 0
  for path, _, records in link.files[split]:
    stop = start + records
    if stop > first and start < first + count:
      skip = max(first - start, 0)
      reader = fast.record_index.read_records(tfrecord_io.RecordFile(epath.Path(path), ""))
      for index, record in enumerate(reader):
        if index < skip:
          continue
        if start + index >= first + count:
          break
        yield record
    start = stop
