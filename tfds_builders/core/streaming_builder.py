"""A GeneratorBasedBuilder whose examples arrive already serialized, written as they come."""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import os
import socket
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

from absl import logging
from etils import epath
import tensorflow_datasets as tfds

from tfds_builders import tfds_internals
from tfds_builders.core import build_dirs
from tfds_builders.core import dataset_card
from tfds_builders.core import errors
from tfds_builders.core import progress
from tfds_builders.core import provenance
from tfds_builders.core import remote
from tfds_builders.core import shard_plan
from tfds_builders.core import shard_writer

# Same cap as TFDS's default ShardConfig, so readers see familiar shard sizes.
DEFAULT_MAX_SHARD_BYTES = 1024 * 1024 * 1024
# Where a split's write-time shuffle spills, inside the incomplete build dir.
SHUFFLE_DIR_PREFIX = ".shuffle-"

# Written into a build's incomplete dir while our builder runs, so the next
# build can tell a dead build's leftovers from a live one.
OWNER_MARKER = ".tfds_builders_owner.json"
# An incomplete dir without a marker (a TFDS build not of ours, or one killed
# before it wrote the marker) is removed only after this long untouched.
UNMARKED_STALE_SECONDS = 24 * 3600

PartitionFn = Callable[[], Iterator[shard_writer.StreamItem]]
PlanT = TypeVar("PlanT")


@dataclasses.dataclass
class StreamingConfig(tfds.core.BuilderConfig):
  """Config fields every builder of ours shares.

  Attributes:
    use_beam: Run the split's partitions on Apache Beam. Also chosen
      automatically when `tfds build` gets `--beam_pipeline_options`; with
      neither, the build runs in this process.
    ordered: Whether readers must see the examples in stored order
      (`DatasetInfo.disable_shuffling`; then `shuffle_files=True` is refused,
      as TFDS does). None: the builder's default (`default_ordered()`).
    shuffle: Write the examples in a deterministic order by hashed key, as
      TFDS's own writer does, instead of generation order.
    supervised_keys: `(input, target)` feature names for
      `tfds.load(..., as_supervised=True)`. None: the builder's default.
    homepage: The dataset's homepage. None: the builder's default.
    citation: BibTeX for the dataset. None: the builder's default.
    license: The dataset's license (an SPDX id or a URL).
  """

  use_beam: bool = False
  ordered: bool | None = None
  shuffle: bool = False
  supervised_keys: tuple[str, str] | list[str] | None = None
  homepage: str | None = None
  citation: str | None = None
  license: str | None = None


@dataclasses.dataclass(frozen=True)
class Partitions:
  """A split as independent example generators whose outputs follow each other.

  Locally the partitions run one after another into TFDS-sized shards; on
  Beam each runs on a worker into a piece, and the pieces are joined or cut
  into the same shard sizes. Either way the dataset holds the same examples,
  keys and order. Each generator must be picklable
  (a `functools.partial` of a module-level function, say).
  """

  generators: Sequence[PartitionFn]

  def __iter__(self) -> Iterator[shard_writer.StreamItem]:
    return itertools.chain.from_iterable(generate() for generate in self.generators)


class StreamingBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Base of our builders: `_generate_examples` yields `(key, Example bytes)`.

  The bytes must be a serialized `tf.train.Example` that
  `self.info.features` decodes; `core.serialization` builds them. Runs of
  small examples may come as one block, `(keys, tfrecord_io.FramedRecords)`, framed
  by `core.record_blocks` and written with one call. Skipping
  TFDS's per-example Python encoding and its shuffle buffer is what keeps our
  builds near the raw TFRecord floor with flat memory. Examples are stored in
  generation order (or, with `shuffle: true`, in TFDS's hashed-key order), so
  keys only need to be unique and deterministic. Whether readers must keep
  that order is `is_ordered()`.
  """

  MAX_SHARD_BYTES = DEFAULT_MAX_SHARD_BYTES

  # The dataset card's summary; each builder sets it from its `_DESCRIPTION`.
  DESCRIPTION = ""
  # Whether features named as an (input, target) pair (`image`/`label`, `x`/`y`,
  # ...) become the default `supervised_keys` (core/dataset_card.py).
  PAIRS_SUPERVISED_KEYS = False

  def _info(self) -> tfds.core.DatasetInfo:
    # A prepared version's features come from its features.json, so loading it
    # needs neither the sources nor a new inference.
    return tfds.core.DatasetInfo(
        builder=self,
        description=self.DESCRIPTION,
        features=None if self.has_prepared_version() else self.inferred_features(),
        disable_shuffling=self.is_ordered(),
        metadata=tfds.core.MetadataDict(),
        **dataset_card.info_fields(self),
    )

  def default_ordered(self) -> bool:
    """Whether this builder's outputs are ordered when the config does not say.

    A builder whose examples mean something only in stored order (rows the
    user sorted, an overlay zipped with its base by position) returns True.
    """
    return False

  def is_ordered(self) -> bool:
    """Whether readers must see the stored order (`DatasetInfo.disable_shuffling`).

    Raises:
      ConfigError: if the config asks for both `ordered` and `shuffle`.
    """
    ordered = getattr(self.builder_config, "ordered", None)
    if getattr(self.builder_config, "shuffle", False):
      if ordered:
        raise errors.ConfigError(
            f"Config {self.builder_config.name!r} sets both ordered: true and shuffle: true: "
            "a shuffled layout has no order to keep. Drop one of them."
        )
      return False
    return self.default_ordered() if ordered is None else bool(ordered)

  def planned(self, make_plan: Callable[[Any], PlanT], reads: str) -> PlanT:
    """Runs the builder's planning step on its config, logged as a phase.

    Planning is the only reading a builder does before its build starts: it
    checks the config and reads what the features, the example counts and
    the config's errors depend on. TFDS asks for the features when the
    builder is constructed (`_info`, unless the version is already prepared),
    so planning runs then. Each builder makes its plan only here, from one
    `functools.cached_property` (`_plan`), so its sources are read once per
    builder. What each builder's plan reads is listed in docs/index.md,
    "What a builder reads when it is constructed":

    - numpy_arrays: the `.npy` headers and `.npz` directories of every source;
    - concatenated: each source's `dataset_info.json` and features, or the
      raw files' records to infer their schema and count them;
    - cross_product: both inputs in full, to count and type their records;
    - database: the query's result columns (LIMIT 0) and NULL guarantees;
    - augmented: the base's info (or its raw records), the side table in
      full, and the user's function on the first few examples; and, in a
      step of its own (`canonical_version`, needed before TFDS can tell
      whether the version is prepared), a prepared base's version.

    Args:
      make_plan: Makes the plan from the builder config.
      reads: What planning reads, for the log line.
    """
    with progress.timed_phase("%s/%s: planning (%s)", self.name, self.builder_config.name, reads):
      return make_plan(self.builder_config)

  def expected_examples(self, split: str) -> int | None:
    """The split's example count if known before it is generated, else None.

    A builder that can tell cheaply (array lengths, a row count) gets shards
    planned up front by TFDS's rule, written without a copy, and a progress
    bar with a total.
    """
    del split
    return None

  def inferred_features(self) -> tfds.features.FeaturesDict:
    """The features this config's sources give; read only before preparing."""
    raise NotImplementedError

  def has_prepared_version(self) -> bool:
    """Whether this version's dataset_info.json is already on disk (then features come from it).

    TFDS restores a builder's info when that file exists; its `is_prepared`
    asks more (features.json, a version-named folder), so it is not used here.
    """
    data_path = tfds_internals.prepared_data_dir(self)
    return bool(data_path) and (
        tfds.core.Path(data_path) / "dataset_info.json"
    ).exists()

  def record_provenance(self, **details: Any) -> None:
    """Stores what this build reads (secrets redacted) in `metadata.json`."""
    self.info.metadata[provenance.PROVENANCE_KEY] = provenance.build_provenance(
        builder_name=self.name,
        config=self.builder_config,
        dataset_version=str(self.version),
        **details,
    )

  def _uses_beam(self, download_config: tfds.download.DownloadConfig) -> bool:
    return bool(
        download_config.beam_runner
        or download_config.beam_options
        or getattr(self.builder_config, "use_beam", False)
    )

  # --- The build: the designated overrides of TFDS methods (see tfds_internals), and the hooks they call. ---

  def download_and_prepare(self, **kwargs: Any) -> None:
    """TFDS's `download_and_prepare`; a failure also removes the folders it created (core/build_dirs.py)."""
    with build_dirs.removed_on_failure(self, kwargs.get("download_dir"), kwargs.get("download_config")):
      super().download_and_prepare(**kwargs)

  @contextlib.contextmanager
  def _build_context(self, download_config: tfds.download.DownloadConfig) -> Iterator[Any]:
    """Opens what one build holds and yields it, frozen, to `_split_streams`.

    A builder that needs a session, a worker pool or a spill dir opens it
    here and closes it on the way out, whether the build succeeds or fails.
    Nothing of the build is kept on the builder. The default holds nothing.

    Args:
      download_config: The build's TFDS download config (Beam or local, limits).

    Yields:
      The builder's build context (None by default).
    """
    del download_config
    yield None

  def _split_streams(
      self, dl_manager: tfds.download.DownloadManager, context: Any
  ) -> Mapping[str, Iterable[shard_writer.StreamItem] | Partitions]:
    """Each split's examples, given the build's context.

    The default is TFDS's `_split_generators(dl_manager)`, for builders that
    hold nothing during a build.
    """
    del context
    return self._split_generators(dl_manager)

  def _after_build(self, context: Any, split_infos: Sequence[tfds.core.SplitInfo]) -> None:
    """Runs once every split is written, still inside the build context.

    Builders record what the generation counted (provenance, metadata) here.
    """
    del context, split_infos

  # TFDS's two abstract methods: a builder that holds build state defines
  # `_split_streams` instead, and may yield from any function it names.
  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    raise NotImplementedError(f"{type(self).__name__} defines _split_streams(dl_manager, context).")

  def _generate_examples(self, *args: Any, **kwargs: Any):
    raise NotImplementedError(f"{type(self).__name__} generates its examples in _split_streams.")

  def _generate_splits(
      self,
      dl_manager: tfds.download.DownloadManager,
      download_config: tfds.download.DownloadConfig,
  ) -> list[tfds.core.SplitInfo]:
    # TFDS renames this incomplete dir into the dataset once we return.
    remote.require_tensorflow_reads(
        self.data_dir_root, "--data_dir",
        "Build into a local --data_dir, then tfds-builders publish DATA_DIR/<name>/<config>/<version> "
        "s3://bucket/registry; namespace loads fetch it into a local cache")
    build_dir = epath.Path(self.data_dir)
    owned = bool(tfds_internals.incomplete_dir_pattern().match(build_dir.name))
    if owned:
      BuildOwner.current().mark(build_dir)
      remove_stale_builds(build_dir.parent, keep=build_dir)
    try:
      with self._build_context(download_config) as context:
        split_infos = self._write_splits(self._split_streams(dl_manager, context), download_config)
        self._after_build(context, split_infos)
      # dataset_card reads the split infos TFDS would set after we return.
      self.info.set_splits(tfds.core.SplitDict(split_infos))
      dataset_card.after_build(self)
      return split_infos
    finally:
      if owned:
        # The dir becomes the dataset when TFDS renames it; no marker in it.
        (build_dir / OWNER_MARKER).unlink(missing_ok=True)

  def _write_splits(
      self,
      streams: Mapping[str, Iterable[shard_writer.StreamItem] | Partitions],
      download_config: tfds.download.DownloadConfig,
  ) -> list[tfds.core.SplitInfo]:
    sizing = shard_plan.ShardSizing.of(download_config.get_shard_config(), self.MAX_SHARD_BYTES)
    shuffle = bool(getattr(self.builder_config, "shuffle", False))
    if not self._uses_beam(download_config):
      return [
          self._write_split(name, examples, download_config, sizing, shuffle)
          for name, examples in streams.items()
      ]
    if shuffle:
      raise errors.ConfigError(
          f"Config {self.builder_config.name!r} sets shuffle: true, which runs only in a local "
          "build (the hashed-key sort is not distributed). Build without Beam, or drop shuffle."
      )
    with progress.timed_phase("%s/%s: running the splits' partitions on Beam", self.name, self.builder_config.name), \
        tfds_internals.beam_pipeline(self, download_config) as pipeline:
      finalizers = [
          shard_writer.write_partitions_with_beam(
              pipeline,
              _partitions_of(name, examples).generators,
              tfds_internals.filename_template(self, name),
              self.info.file_format,
              sizing=sizing,
              max_examples=download_config.max_examples_per_split,
              counter=progress.beam_counted(name),
          )
          for name, examples in streams.items()
      ]
    return [finalize() for finalize in finalizers]

  def _write_split(
      self,
      split_name: str,
      examples: Iterable[shard_writer.StreamItem],
      download_config: tfds.download.DownloadConfig,
      sizing: shard_plan.ShardSizing,
      shuffle: bool,
  ) -> tfds.core.SplitInfo:
    expected = self.expected_examples(split_name)
    limit = download_config.max_examples_per_split
    if limit is not None:
      examples = shard_writer.head(examples, limit)
      expected = None if expected is None else min(expected, limit)
    writer = shard_writer.SplitWriter(
        filename_template=tfds_internals.filename_template(self, split_name),
        file_format=self.info.file_format,
        sizing=sizing,
    )
    examples = progress.tracked(examples, split_name, expected)
    if not shuffle:
      return writer.write(examples, expected_examples=expected)
    from tfds_builders.core import shuffling  # pylint: disable=g-import-not-at-top  # only when asked for

    # TFDS salts the hashed keys with the split's name; the spill stays in the build dir.
    work_dir = epath.Path(self.data_dir) / f"{SHUFFLE_DIR_PREFIX}{split_name}"
    try:
      return writer.write(shuffling.shuffled(examples, work_dir, salt=split_name), expected_examples=expected)
    finally:
      if work_dir.exists():
        work_dir.rmtree()


def _partitions_of(split_name: str, examples: Iterable[shard_writer.KeySerialized]) -> Partitions:
  if not isinstance(examples, Partitions):
    raise errors.ConfigError(
        f"Split {split_name!r} cannot run on Beam: its examples are not "
        "divided into Partitions. Build it without Beam."
    )
  return examples


@dataclasses.dataclass(frozen=True)
class BuildOwner:
  """The process that writes an incomplete build dir, and how to tell it is gone.

  Attributes:
    host: `socket.gethostname()` of the building machine.
    boot_id: The Linux boot id ('' elsewhere): a new one means a reboot.
    pid_namespace: The process's pid namespace ('' elsewhere): pids of another
      namespace (another container) cannot be checked from here.
    pid: The building process.
    start_ticks: The process's start time in clock ticks after boot ('' if
      unknown), so a pid reused by a newer process is not taken for the builder.
  """

  host: str
  boot_id: str
  pid_namespace: str
  pid: int
  start_ticks: str

  @classmethod
  def current(cls) -> BuildOwner:
    pid = os.getpid()
    return cls(socket.gethostname(), _boot_id(), _pid_namespace(), pid, _start_ticks(pid))

  def mark(self, build_dir: epath.Path) -> None:
    """Records this owner in `build_dir` (written whole, then renamed)."""
    partial = build_dir / f"{OWNER_MARKER}.partial"
    partial.write_text(json.dumps(dataclasses.asdict(self)))
    partial.replace(build_dir / OWNER_MARKER)

  @classmethod
  def read(cls, build_dir: epath.Path) -> BuildOwner | None:
    """The owner recorded in `build_dir`, or None if none (or unreadable)."""
    try:
      fields = json.loads((build_dir / OWNER_MARKER).read_text())
      return cls(**{field.name: fields[field.name] for field in dataclasses.fields(cls)})
    except (OSError, ValueError, TypeError, KeyError):
      return None

  def is_dead(self) -> bool:
    """True only when this machine can prove the owner ended; else False."""
    here = BuildOwner.current()
    if type(self.pid) is not int or self.pid <= 0:
      return False
    if (self.host, self.pid_namespace) != (here.host, here.pid_namespace):
      return False  # another machine or container: its pids mean nothing here
    if self.boot_id and here.boot_id and self.boot_id != here.boot_id:
      return True  # rebooted since: every process of that boot is gone
    try:
      os.kill(self.pid, 0)
    except ProcessLookupError:
      return True
    except PermissionError:
      pass  # alive, owned by another user
    except OverflowError:
      return False
    return bool(self.start_ticks) and _start_ticks(self.pid) not in ("", self.start_ticks)


def remove_stale_builds(
    config_dir: epath.PathLike, keep: epath.PathLike | None = None
) -> list[epath.Path]:
  """Removes the incomplete build dirs in `config_dir` that no live build writes.

  A dir is stale when its marker names a process this machine proves dead, or,
  without a marker, when nothing in it changed for `UNMARKED_STALE_SECONDS`.
  Dirs of live builds, of other machines and of unknown owners are kept.

  Args:
    config_dir: `<data_dir>/<dataset>/<config>`.
    keep: The caller's own build dir.

  Returns:
    The removed dirs.
  """
  config_dir = epath.Path(config_dir)
  keep = epath.Path(keep) if keep else None
  removed = []
  for build_dir in sorted(config_dir.glob("incomplete.*")):
    if build_dir == keep or not tfds_internals.incomplete_dir_pattern().match(build_dir.name) or not build_dir.is_dir():
      continue
    owner = BuildOwner.read(build_dir)
    stale = owner.is_dead() if owner else _untouched_for(build_dir) > UNMARKED_STALE_SECONDS
    if not stale:
      continue
    try:
      build_dir.rmtree()
    except OSError as error:  # removed meanwhile by another build, or not ours to remove
      logging.warning("Could not remove the stale build dir %s: %s", build_dir, error)
      continue
    logging.info("Removed %s, left by a build that %s.", build_dir,
                 f"ended (pid {owner.pid} on {owner.host})" if owner else "stopped long ago")
    removed.append(build_dir)
  return removed


def _untouched_for(build_dir: epath.Path) -> float:
  """Seconds since anything in `build_dir` was written or created (0 if unknown)."""
  if "://" in str(build_dir):
    return 0.0  # remote file systems: ages are not compared, only markers
  latest = 0.0
  # A dir's mtime moves whenever an entry is created, renamed or removed in it.
  for directory, _, files in os.walk(build_dir):
    for path in [directory, *(os.path.join(directory, name) for name in files)]:
      try:
        latest = max(latest, os.stat(path).st_mtime)
      except OSError:
        return 0.0  # changing under us: someone is writing
  return time.time() - latest if latest else 0.0


def _boot_id() -> str:
  try:
    with open("/proc/sys/kernel/random/boot_id") as boot:  # noqa: PTH123
      return boot.read().strip()
  except OSError:
    return ""


def _pid_namespace() -> str:
  try:
    return os.readlink("/proc/self/ns/pid")
  except OSError:
    return ""


def _start_ticks(pid: int) -> str:
  try:
    with open(f"/proc/{pid}/stat") as stat:  # noqa: PTH123
      # The command name (field 2) may hold spaces; fields after it do not.
      return stat.read().rsplit(")", 1)[1].split()[19]
  except (OSError, IndexError):
    return ""
