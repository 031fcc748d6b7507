"""The `tfds-builders` console command: list builders, inspect, publish, export, import and compact datasets."""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from collections.abc import Sequence
from typing import Any

EXIT_OK = 0
EXIT_ERROR = 1  # bad input: a missing dataset, a corrupt file, ...
EXIT_USAGE = 2  # argparse's own code for bad arguments

_EPILOG = """\
Exit codes: 0 success, 1 bad input (one line on stderr; --debug shows the
traceback), 2 bad arguments.

Building stays with TFDS's own command, for example:
  tfds build tfds_builders/numpy_arrays --data_dir ~/tensorflow_datasets
  tfds build tfds_builders/numpy_arrays --config '{"name": "mine", "splits": {"train": ["data/"]}}'
"""


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="tfds-builders",
      description="Companion command of the tfds_builders TFDS builders.",
      epilog=_EPILOG,
      formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  parser.add_argument(
      "--debug", action="store_true", help="show the full traceback on errors"
  )
  commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

  list_parser = commands.add_parser(
      "list", help="list the builders, or the datasets of a registry",
      description="Without REGISTRY: the builders this package registers, with "
      "their configs. With REGISTRY: every published dataset version, with "
      "size, example counts, build date and provenance summary.",
  )
  list_parser.add_argument("registry", nargs="?", help="registry root to list")
  list_parser.set_defaults(run=_run_list)

  publish = commands.add_parser(
      "publish", help="copy a prepared dataset into a registry, atomically",
      description="Copy a prepared dataset version into REGISTRY as "
      "<dataset>/<config>/<version>/, with a SHA-256 checksum of every file. "
      "Readers never see a half-published version. Published versions are "
      "immutable unless --overwrite is given. Symlinks and special files in "
      "DATASET_DIR, and names from its dataset_info.json that are no valid TFDS "
      "name, config or version, are refused.",
  )
  publish.add_argument("dataset_dir", help="prepared dataset version directory")
  publish.add_argument("registry", help="registry root (local path or URL)")
  publish.add_argument("--overwrite", action="store_true",
                       help="replace an existing published version of the same dataset")
  publish.add_argument("--base_registry", metavar="NAMESPACE_OR_ROOT",
                       help="an overlay's base (and parent) is published there, not in REGISTRY")
  publish.set_defaults(run=_run_publish)

  verify = commands.add_parser(
      "verify", help="re-check the checksums of published datasets",
      description="Re-check the checksums of every version at or under PATH "
      "(REGISTRY[/dataset[/config[/version]]]). Exit code 1 if any file is "
      "damaged, missing or unexpected.",
  )
  verify.add_argument("path", help="registry root, or a dataset/config/version in it")
  verify.set_defaults(run=_run_verify)

  inspect = commands.add_parser(
      "inspect",
      help="show features, splits, sizes and provenance of a prepared dataset",
      description="Show the features, splits, sizes and provenance of a "
      "prepared dataset version directory (the folder holding "
      "dataset_info.json, e.g. DATA_DIR/numpy_arrays/demo/1.0.0).",
  )
  inspect.add_argument("dataset_dir", help="prepared dataset version directory")
  inspect.add_argument(
      "--json", action="store_true", help="print one JSON object instead of text"
  )
  inspect.set_defaults(run=_run_inspect)

  croissant = commands.add_parser(
      "croissant", help="print or write the Croissant 1.1 metadata of a prepared dataset",
      description="Describe a prepared dataset version directory in Croissant "
      "1.1 JSON-LD: one RecordSet per split (fields from the features), one "
      "FileObject per shard with its SHA-256, license, citation and provenance "
      "(prov:wasDerivedFrom, prov:wasGeneratedBy), secrets redacted. Builds "
      "write it as croissant.json already; this recomputes it.",
  )
  croissant.add_argument("dataset_dir", help="prepared dataset version directory")
  croissant.add_argument("--out", metavar="FILE", help="write to FILE instead of printing")
  croissant.set_defaults(run=_run_croissant)

  export = commands.add_parser(
      "export", help="write a prepared dataset to one .zip archive, streaming",
      description="Write a prepared dataset version directory to one .zip, "
      "streaming (memory does not grow with the dataset). tfrecord: the "
      "dataset directory itself, restorable with `tfds-builders import`. npz: "
      "one .npy per split and feature (np.load(OUT)['train/image']); "
      "variable-length features are padded with --pad-value, and "
      "<split>/<feature>_length.npy keeps their true lengths (export only). "
      "parquet: OUT is a folder of <split>-NNNNN-of-NNNNN.parquet files, one "
      "per shard, one column per feature (nested features as a/b), readable "
      "by DuckDB, pandas and Hugging Face datasets, restorable with import.",
  )
  export.add_argument("dataset_dir", help="prepared dataset version directory")
  export.add_argument("out_zip", help="archive to write (parquet: folder to write)")
  export.add_argument("--format", choices=("tfrecord", "npz", "parquet"), default="tfrecord",
                      help="archive contents (default tfrecord)")
  export.add_argument("--compression", choices=("stored", "deflate"), default="stored",
                      help="zip member compression (default stored)")
  export.add_argument("--pad-value", type=float, default=0.0,
                      help="npz: pad value of variable-length numeric features (default 0)")
  export.add_argument("--split", action="append", dest="splits", metavar="SPLIT",
                      help="npz, parquet: export only this split (repeatable; default all)")
  export.set_defaults(run=_run_export)

  import_parser = commands.add_parser(
      "import", help="restore a dataset from an archive made by export",
      description="Restore a --format tfrecord archive (or a --format parquet "
      "folder, re-encoding its examples) into DATA_DIR as "
      "<dataset>/<config>/<version>/, byte for byte. The archive's manifest, "
      "its member names (no absolute or .. paths, symlinks, links or duplicates) "
      "and every member's CRC-32 are checked; a failed import leaves nothing "
      "that tfds.load accepts and writes nothing outside that folder.",
  )
  import_parser.add_argument("archive", help="archive (or parquet folder) written by `tfds-builders export`")
  import_parser.add_argument("data_dir", help="TFDS data_dir to restore into")
  import_parser.add_argument("--overwrite", action="store_true",
                             help="replace an existing prepared dataset of the same name, config and version")
  import_parser.set_defaults(run=_run_import)

  compact = commands.add_parser(
      "compact", help="materialize an augmented overlay and its chain into one dataset",
      description="Write OVERLAY (an augmented overlay, possibly sitting on other "
      "overlays) and its root base as one ordinary TFDS dataset under "
      "OUT_DATA_DIR/augmented/<name>/<version>/: the base's records with every "
      "link's fields, byte-identical to what mode=materialize writes for the same "
      "fields. The version is the minor version after the overlay's, with a release "
      "note naming the chain. The overlay and the base are only read.",
  )
  compact.add_argument("overlay", help="overlay version directory, or augmented/<config>[:version] with --data_dir")
  compact.add_argument("out_data_dir", help="TFDS data_dir to write the compacted dataset into")
  compact.add_argument("--data_dir", help="data_dir of an OVERLAY given by name")
  compact.add_argument("--name", help="config name of the compacted dataset (default: the overlay's; "
                       "NAME_compacted for the overlay of a bundled config)")
  compact.add_argument("--version", help="its version (default: the minor version after the overlay's)")
  compact.set_defaults(run=_run_compact)
  return parser


def _run_compact(args: argparse.Namespace) -> int:
  from tfds_builders.augmented import compaction  # pylint: disable=g-import-not-at-top

  path = compaction.compact(args.overlay, args.out_data_dir, data_dir=args.data_dir, name=args.name, version=args.version)
  print(f"compacted {args.overlay} into {path}")
  return EXIT_OK


def _run_export(args: argparse.Namespace) -> int:
  from tfds_builders import archive  # pylint: disable=g-import-not-at-top

  if args.format == "parquet":
    from tfds_builders import parquet_export  # pylint: disable=g-import-not-at-top

    path = parquet_export.export(args.dataset_dir, args.out_zip, splits=args.splits)
    print(f"exported {args.dataset_dir} to {path} (parquet)")
    return EXIT_OK
  path = archive.export(args.dataset_dir, args.out_zip, args.format, compression=args.compression,
                        pad_value=args.pad_value, splits=args.splits)
  print(f"exported {args.dataset_dir} to {path} ({args.format})")
  return EXIT_OK


def _run_import(args: argparse.Namespace) -> int:
  from tfds_builders import archive  # pylint: disable=g-import-not-at-top
  from tfds_builders import parquet_export  # pylint: disable=g-import-not-at-top

  if parquet_export.is_parquet_export(args.archive):
    target, identical = parquet_export.import_(args.archive, args.data_dir, overwrite=args.overwrite)
    print(f"imported {target} (shards {'byte-identical to' if identical else 're-encoded from'} the exported ones)")
    return EXIT_OK
  print(f"imported {archive.import_(args.archive, args.data_dir, overwrite=args.overwrite)}")
  return EXIT_OK


def _run_list(args: argparse.Namespace) -> int:
  if args.registry:
    return _list_registry(args.registry)
  import tfds_builders  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  for name in tfds_builders.BUILDERS:
    builder_cls = tfds.builder_cls(name)
    summary = (builder_cls.__doc__ or "").strip().splitlines()[0]
    print(f"{name}: {summary}")
    for config in builder_cls.BUILDER_CONFIGS:
      print(f"  {name}/{config.name}: {config.description}")
  return EXIT_OK


def _list_registry(root: str) -> int:
  from tfds_builders import registry  # pylint: disable=g-import-not-at-top

  entries = registry.list_versions(root)
  if not entries:
    print(f"{root}: no published datasets")
  for entry in entries:
    counts = ", ".join(f"{split} {count}" for split, count in entry.num_examples.items())
    print(f"{entry.dataset}/{entry.config}:{entry.version}  {entry.num_bytes} bytes  "
          f"[{counts}]  built {entry.built_at or 'unknown'}  {entry.provenance_summary}")
  return EXIT_OK


def _run_publish(args: argparse.Namespace) -> int:
  from tfds_builders import registry  # pylint: disable=g-import-not-at-top

  target = registry.publish(args.dataset_dir, args.registry, overwrite=args.overwrite,
                            base_registry=args.base_registry)
  print(f"published {target}")
  return EXIT_OK


def _run_verify(args: argparse.Namespace) -> int:
  from tfds_builders import registry  # pylint: disable=g-import-not-at-top

  checked, damages = registry.verify(args.path)
  for damage in damages:
    print(f"DAMAGED {damage.path}: {damage.problem}")
  print(f"checked {checked} version(s): {len(damages)} problem(s)")
  return EXIT_ERROR if damages else EXIT_OK


def dataset_summary(dataset_dir: str) -> dict[str, Any]:
  """Features, splits, sizes and provenance of a prepared dataset directory."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from tfds_builders import tfds_internals  # pylint: disable=g-import-not-at-top
  from tfds_builders.core import provenance  # pylint: disable=g-import-not-at-top

  info_path = tfds.core.Path(dataset_dir) / "dataset_info.json"
  if not info_path.exists():
    raise FileNotFoundError(
        f"{info_path} not found: pass a prepared dataset version directory "
        "such as DATA_DIR/numpy_arrays/demo/1.0.0."
    )
  info = tfds.builder_from_directory(dataset_dir).info
  try:
    built_from = provenance.read_provenance(dataset_dir)
  except FileNotFoundError:
    built_from = {}
  return {
      "name": info.name,
      "config": info.config_name,
      "version": str(info.version),
      "file_format": info.file_format.value,
      "features": {
          name: {"dtype": np.dtype(tensor.np_dtype).name, "shape": list(tensor.shape)}
          for name, tensor in tfds_internals.flatten_nest_dict(
              info.features.get_tensor_info()
          ).items()
      },
      "features_text": str(info.features),
      "splits": {
          name: {
              "num_examples": split.num_examples,
              "num_shards": split.num_shards,
              "num_bytes": int(split.num_bytes),
          }
          for name, split in info.splits.items()
      },
      "provenance": built_from,
  }


def _run_inspect(args: argparse.Namespace) -> int:
  description = dataset_summary(args.dataset_dir)
  if args.json:
    description.pop("features_text")
    print(json.dumps(description, indent=2, default=str))
    return EXIT_OK
  print(f"{description['name']}/{description['config']}:{description['version']}"
        f"  ({description['file_format']})")
  print("features:")
  print(textwrap.indent(description["features_text"], "  "))
  print("splits:")
  for name, split in description["splits"].items():
    print(f"  {name}: {split['num_examples']} examples, "
          f"{split['num_shards']} shards, {split['num_bytes']} bytes")
  print("provenance:")
  print(textwrap.indent(json.dumps(description["provenance"], indent=2), "  "))
  return EXIT_OK


def _run_croissant(args: argparse.Namespace) -> int:
  from tfds_builders.core import croissant  # pylint: disable=g-import-not-at-top

  if args.out:
    print(f"wrote {croissant.write(args.dataset_dir, args.out)}")
  else:
    print(json.dumps(croissant.croissant_for(args.dataset_dir), indent=2))
  return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
  """Runs the command; returns its exit code."""
  args = _parser().parse_args(argv)
  try:
    return args.run(args)
  except Exception as error:  # pylint: disable=broad-except
    if args.debug:
      raise
    from tfds_builders.core import provenance  # pylint: disable=g-import-not-at-top

    message = " ".join(provenance.redact(str(error)).split()) or type(error).__name__  # a URL's password, a DSN's
    print(f"tfds-builders {args.command}: error: {message}", file=sys.stderr)
    return EXIT_ERROR


if __name__ == "__main__":
  sys.exit(main())
