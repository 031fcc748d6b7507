"""The command line: `python -m benchmarks BUILDER [options]`, `python -m benchmarks report`."""

from __future__ import annotations

import argparse
import datetime
import os
import pathlib
import shlex
import shutil
import sys
import tempfile
from collections.abc import Sequence
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# pylint: disable=g-import-not-at-top,wrong-import-position
from benchmarks import augmented
from benchmarks import concatenated
from benchmarks import cross_product
from benchmarks import database
from benchmarks import harness
from benchmarks import numpy_arrays
from benchmarks import overlay_chains
from benchmarks import overlay_source
from benchmarks import overlays
from benchmarks import report
from benchmarks import scaling

CASES = {
    "augmented": augmented,
    "concatenated": concatenated,
    "cross_product": cross_product,
    "database": database,
    "numpy_arrays": numpy_arrays,
    "overlay_chains": overlay_chains,
    "overlay_source": overlay_source,
    "overlays": overlays,
    "scaling": scaling,
}
REPORT_HELP = "rewrite the result tables of docs/benchmarks.md from the saved JSON (--results-dir)"


def build_parser() -> argparse.ArgumentParser:
  """The CLI: a builder name (or `report`), the input size(s) and the measurement options."""
  cases = "\n".join(f"  {name:14s} {case.HELP}" for name, case in sorted(CASES.items()))
  parser = argparse.ArgumentParser(
      prog="python -m benchmarks",
      description=(
          "Times a builder beside its physical floors (a copy of the same output bytes; "
          "for SQL the raw read), its peers (the TFRecord loops; for SQL ADBC, ConnectorX, "
          "Hugging Face from_sql) and the seed, back to back in one process (page cache "
          "warmed, best of --repeat, round-robin), with per-phase peak RSS and the load "
          "around each phase. Prints Markdown tables and saves them as JSON "
          "(--results-dir); `report` turns the JSON into docs/benchmarks.md's tables. "
          "Sizes: MB = 10**6 bytes, MiB = 2**20."
      ),
      epilog=f"builders:\n{cases}\n  {'report':14s} {REPORT_HELP}\n\nexample:\n"
      "  %(prog)s numpy_arrays --size 500MB\n"
      "  %(prog)s numpy_arrays --rss-sweep 100MB,2GB --skip-seed\n"
      "  %(prog)s cross_product --smoke --results-dir /tmp/results\n"
      "  %(prog)s report",
      formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  parser.add_argument(
      "builder", metavar="BUILDER", choices=[*sorted(CASES), "report"],
      help=f"which builder to measure: {', '.join(sorted(CASES))}; or report",
  )
  sizes = parser.add_mutually_exclusive_group()
  sizes.add_argument(
      "--size", type=harness.parse_size, default=harness.parse_size("500MB"),
      help="input data size, e.g. 100MB, 2GB, 512MiB (default 500MB)",
  )
  sizes.add_argument(
      "--rss-sweep", type=harness.parse_sizes, metavar="SIZES",
      help="comma-separated sizes, e.g. 100MB,2GB: measure each (fresh files) and "
      "report peak RSS largest/smallest",
  )
  parser.add_argument(
      "--repeat", type=int, default=3, help="timed runs per phase; the best is kept (default 3)",
  )
  parser.add_argument(
      "--smoke", action="store_true",
      help="a tiny input and one repeat: checks the case still runs (seconds; database on "
      "SQLite unless TFDS_BUILDERS_PG_DSN is set)",
  )
  parser.add_argument(
      "--skip-seed", action="store_true",
      help="leave out the seed peer, which holds the whole dataset in memory "
      "(meant for inputs > 1GB)",
  )
  parser.add_argument(
      "--workdir", type=pathlib.Path,
      help="where inputs and outputs go (a temporary subdirectory, removed at the "
      "end; default: the system temp dir)",
  )
  parser.add_argument(
      "--results-dir", type=pathlib.Path, default=harness.RESULTS_DIR, metavar="DIR",
      help="where the run's JSON goes, and where `report` reads it (default benchmarks/results)",
  )
  parser.add_argument(
      "--name", help="the JSON's file name without .json (default: BUILDER-SIZE, or BUILDER-smoke)",
  )
  parser.add_argument(
      "--rss-method", choices=("auto", "clear_refs", "sample"), default="auto",
      help="peak RSS by resetting VmHWM via /proc/self/clear_refs, or by sampling "
      "VmRSS every 10 ms (auto: clear_refs when it works)",
  )
  parser.add_argument(
      "--baseline", type=pathlib.Path, metavar="PATH",
      help="a checkout (e.g. of an older commit) whose tfds_builders also builds each case, in a "
      "worker process, interleaved with this one's: phases NAME@baseline and the speed-up",
  )
  parser.add_argument(
      "--profile", action="store_true",
      help="after timing, run the builder once more under cProfile and print the top entries",
  )
  parser.add_argument(
      "--profile-top", type=int, default=25, metavar="N",
      help="how many cProfile entries to print per ordering (default 25)",
  )
  for case in CASES.values():
    case.add_arguments(parser)
  group = parser.add_argument_group("report options")
  group.add_argument(
      "--doc", type=pathlib.Path, default=report.DOC,
      help="the Markdown file whose `<!-- results: ... -->` blocks are rewritten (default docs/benchmarks.md)",
  )
  group.add_argument(
      "--check", action="store_true", help="only say whether --doc matches the JSON (exit 1 if not)",
  )
  return parser


def _quiet_tfds() -> None:
  """No GCS look-ups, no absl chatter, no progress bars: they would interleave with the tables."""
  import absl.logging
  import tensorflow_datasets as tfds

  from tfds_builders import tfds_internals

  tfds_internals.disable_gcs_access()
  absl.logging.set_verbosity(absl.logging.ERROR)
  tfds.disable_progress_bar()


def _default_name(args: argparse.Namespace) -> str:
  """BUILDER-SIZE: the sizes or counts that set the run's input."""
  if args.smoke:
    return f"{args.builder}-smoke"
  if args.builder == "cross_product":
    labels = [harness.format_count(count) for count in args.pairs_sweep or [args.pairs]]
  elif args.builder == "database":
    labels = database.name_labels(args)
  elif args.builder == "scaling":
    labels = [args.workload]
  else:
    labels = [harness.format_size(size) for size in args.sizes]
  return "-".join([args.builder, *labels])


def _print_tables(builder: str, document: dict[str, Any]) -> None:
  """What the run measured, as the Markdown tables `report` writes into the docs."""
  print(f"\n{builder}:\n{report.rows_table(document['rows'])}")
  sweep = document.get("rss_sweep")
  if sweep:
    print(f"\nRSS sweep {sweep['small']} -> {sweep['large']} (goal for the builder: peak ratio <= 1.15)")
    print(report.rss_table(sweep))
  if document.get("versus"):
    print(f"\n{builder}: each build against the physical floors and the best peer, from this run:")
    print(report.view([document], "versus"))
  if document.get("ratios"):
    print(f"\n{builder} ratios:\n{report.view([document], 'ratios')}")
  if document.get("compression"):
    print("\nconcatenated compression (dataset bytes: every file of the version directory):")
    print(report.view([document], "compression"))


def _measure(args: argparse.Namespace, work_dir: pathlib.Path) -> dict[str, Any]:
  """Runs the chosen case; returns its JSON document (without the run's context)."""
  case = CASES[args.builder]
  if args.builder == "scaling":
    return case.run(args, work_dir)
  result = case.run(args, work_dir)
  records = harness.row_records(result.rows)
  document: dict[str, Any] = {"builder": args.builder, "rows": records}
  swept = [record for record in records
           if result.sweep_sizes is None or record["input_bytes"] in result.sweep_sizes]
  sweep = harness.rss_sweep(swept, result.rss_labels)
  if sweep:
    document["rss_sweep"] = sweep
  lines = harness.versus(records)
  if lines:
    document["versus"] = lines
  if result.ratios:
    document["ratios"] = result.ratios
  if result.compression:
    document["compression"] = result.compression
  _print_tables(args.builder, document)
  return document


def main(argv: Sequence[str] | None = None) -> int:
  parser = build_parser()
  argv = sys.argv[1:] if argv is None else list(argv)
  args = parser.parse_args(argv)
  if args.builder == "report":
    return report.main(args.results_dir, args.doc, args.check)
  if args.repeat < 1:
    parser.error("--repeat must be at least 1")
  args.sizes = sorted(args.rss_sweep) if args.rss_sweep else [args.size]
  if args.smoke:
    args.repeat = 1
    for key, value in CASES[args.builder].SMOKE.items():
      setattr(args, key, value)
  if args.builder != "scaling" and not args.skip_seed and max(args.sizes) > 10**9:
    print("warning: the seed peer holds the whole input and its examples in "
          "memory (about 2x the input); pass --skip-seed to leave it out",
          file=sys.stderr)
  if args.rss_method == "auto":
    args.rss_method = "clear_refs" if harness.clear_refs_works() else "sample"
  elif args.rss_method == "clear_refs" and not harness.clear_refs_works():
    parser.error("/proc/self/clear_refs does not reset VmHWM here; use --rss-method sample")
  _quiet_tfds()
  machine = harness.machine()
  method = (f"best of {args.repeat}, round-robin, page cache warmed, "
            f"peak RSS via {args.rss_method}")
  load = harness.load_note()
  print(f"machine: {machine}")
  print(f"method: {method}")
  print(f"load: {load}")
  harness.warn_if_loaded(harness.one_minute_load(), "at the start")
  if args.workdir:
    args.workdir.mkdir(parents=True, exist_ok=True)
  work_dir = pathlib.Path(tempfile.mkdtemp(prefix="tfds_bench_", dir=args.workdir))
  args.baseline_builds = harness.Baseline(args.baseline) if args.baseline else None
  if args.baseline_builds:
    print(f"baseline: tfds_builders of {args.baseline_builds.checkout}, built in a worker process")
  try:
    document = _measure(args, work_dir)
  finally:
    if args.baseline_builds:
      args.baseline_builds.close()
    shutil.rmtree(work_dir, ignore_errors=True)
  if args.baseline:
    document["baseline"] = str(args.baseline)
  end_load = harness.load_note()
  loads = [row.get("load_max") or 0.0 for row in document.get("rows", [])] + [harness.one_minute_load() or 0.0]
  document.update({
      "builder": args.builder, "command": shlex.join(["python", "-m", "benchmarks", *argv]),
      "date": datetime.date.today().isoformat(), "machine": machine, "method": method,
      "load": f"{end_load} at the end of the run", "load_start": load,
      "load_max": max(loads), "cores": os.cpu_count(),
  })
  print(f"\nload: {end_load} at the end; highest 1-minute load around a phase {max(loads):.2f}")
  if harness.warn_if_loaded(max(loads), "during this run"):
    document["overloaded"] = True
  path = harness.write_result(args.results_dir / f"{args.name or _default_name(args)}.json", document)
  print(f"\nresults: {path}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
