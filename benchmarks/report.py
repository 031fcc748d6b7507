"""Renders saved JSON results as Markdown tables, and rewrites docs/benchmarks.md's result blocks."""

from __future__ import annotations

import dataclasses
import pathlib
import re
from collections.abc import Callable, Sequence
from typing import Any

from benchmarks import goals
from benchmarks import harness

DOC = pathlib.Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
# `<!-- results: NAME[,NAME...] VIEW -->`, the table, then `<!-- /results -->`.
BLOCK = re.compile(
    r"^<!-- results: (?P<names>[\w.,-]+) (?P<view>\w+) -->\n(?P<body>.*?)^<!-- /results -->$",
    re.MULTILINE | re.DOTALL,
)


@dataclasses.dataclass(frozen=True)
class Column:
  """One table column: the record key it shows, its header and how a value prints."""

  key: str
  header: str
  text: Callable[[Any], str]
  align: str = "---:"


def _fixed(digits: int) -> Callable[[Any], str]:
  return lambda value: "-" if value is None else f"{value:.{digits}f}"


def _plain(value: Any) -> str:
  return "-" if value is None else str(value)


_SIZE = Column("input_bytes", "input", harness.format_size, "---")
ROW_COLUMNS = (
    _SIZE,
    Column("phase", "phase", _plain, "---"),
    Column("examples", "examples", _plain),
    Column("seconds", "seconds", _fixed(3)),
    Column("cpu_seconds", "cpu s", _fixed(3)),
    Column("mb_per_s", "MB/s", _fixed(0)),
    Column("examples_per_s", "examples/s", _fixed(0)),
    Column("peak_rss_mb", "peak RSS MB", _fixed(0)),
    Column("delta_rss_mb", "Δ RSS MB", _fixed(0)),
    Column("builder_floor", "builder/floor", _fixed(2)),
    Column("seed_builder", "seed/builder", _fixed(2)),
    Column("load", "load 1-min before-after", _plain),
)
# Each builder phase against the physical floors and the best peer of its run (harness.versus).
VERSUS_COLUMNS = (
    _SIZE,
    Column("phase", "build", _plain, "---"),
    Column("examples", "examples", _plain),
    Column("seconds", "seconds", _fixed(3)),
    Column("examples_per_s", "examples/s", _fixed(0)),
    Column("peak_rss_mb", "peak RSS MB", _fixed(0)),
    Column("vs_copy_floor", "/copy of output", _fixed(2)),
    Column("vs_copy_binary", "/binary COPY", _fixed(2)),
    Column("vs_sqlite_fetch", "/SQLite fetch", _fixed(2)),
    Column("best_peer", "best peer", _plain, "---"),
    Column("vs_best_peer", "/best peer", _fixed(2)),
    Column("baseline_speedup", "speed-up over baseline", _fixed(2)),
    Column("load", "load 1-min before-after", _plain),
)
RATIO_COLUMNS = {
    "augmented": (
        _SIZE,
        Column("record_size", "record size", _plain, "---"),
        Column("new_fields_share", "new fields / bytes", _plain),
        Column("base", "base", _plain, "---"),
        Column("materialize_floor", "materialize/floor (goal ≤ 1.5)", _fixed(2)),
        Column("materialize_overlay", "materialize/overlay (goal ≥ 10)", _fixed(2)),
        Column("before_this_round", "before this round", _fixed(2)),
    ),
    "overlays": (
        _SIZE,
        Column("case", "case", _plain, "---"),
        Column("overlay_seconds", "overlay s (goal < 1 at 1 GB)", _fixed(3)),
        Column("materialize_seconds", "materialize s", _fixed(3)),
        Column("materialize_overlay_time", "materialize/overlay time (goal ≥ 100)", _fixed(0)),
        Column("overlay_bytes", "overlay bytes (goal < 1 MB)", _plain),
        Column("materialize_bytes", "materialize bytes", _plain),
        Column("materialize_overlay_bytes", "materialize/overlay bytes", _fixed(0)),
    ),
    "overlay_chains": (
        _SIZE,
        Column("case", "case", _plain, "---"),
        Column("base_examples_per_s", "base alone examples/s", _fixed(0)),
        Column("chain_examples_per_s", "base + chain examples/s", _fixed(0)),
        Column("chain_base_time", "chain/base time (goal ≤ 1.3)", _fixed(2)),
    ),
    "overlay_source": (
        _SIZE,
        Column("read", "read", _plain, "---"),
        Column("base_examples_per_s", "tfds.data_source of the base examples/s", _fixed(0)),
        Column("overlay_examples_per_s", "augmented_source examples/s", _fixed(0)),
        Column("overlay_base_time", "overlay/base time", _fixed(2)),
    ),
    "concatenated": (
        _SIZE,
        Column("sources", "sources", _plain, "---"),
        Column("builder_floor", "builder/floor (goal ≤ 1.5)", _fixed(2)),
        Column("builder_copy", "builder/copy of output", _fixed(2)),
        Column("seed_npz_stored", "seed/export-npz-stored (goal ≥ 3)", _fixed(2)),
        Column("seed_npz_deflate", "seed/export-npz-deflate", _fixed(2)),
        Column("seed_tfrecord", "seed/export-tfrecord", _fixed(2)),
    ),
}
GOAL_COLUMNS = (
    Column("builder", "builder", _plain, "---"),
    Column("goal", "goal", _plain, "---"),
    Column("figure", "figure", _plain, "---"),
    Column("ratio", "ratio", _fixed(2)),
    Column("load", "1-min load", _plain, "---"),
    Column("met", "met?", _plain, "---"),
    Column("result", "run (benchmarks/results/)", _plain, "---"),
)
COMPRESSION_COLUMNS = (
    Column("input", "input", _plain, "---"),
    Column("output", "output", _plain, "---"),
    Column("build_seconds", "build s", _fixed(2)),
    Column("dataset_bytes", "dataset bytes", _plain),
    Column("zip_stored", "zip stored", _plain),
    Column("zip_deflate", "zip deflate", _plain),
)


def render(columns: Sequence[Column], records: Sequence[dict[str, Any]]) -> str:
  """A Markdown table; a column no record has is left out, a cell a record lacks is blank."""
  shown = [column for column in columns if any(column.key in record for record in records)]
  lines = [
      "| " + " | ".join(column.header for column in shown) + " |",
      "|" + "|".join(column.align for column in shown) + "|",
  ]
  for record in records:
    cells = [column.text(record[column.key]) if column.key in record else "" for column in shown]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


def rows_table(records: Sequence[dict[str, Any]]) -> str:
  """Phase rows; a record's `label`, when set, is shown instead of its phase."""
  shown = [dict(record, phase=record.get("label", record["phase"])) for record in records]
  for record in shown:
    if record.get("load_before") is not None and record.get("load_after") is not None:
      record["load"] = f"{record['load_before']:.2f}-{record['load_after']:.2f}"
  return render(ROW_COLUMNS, shown)


def rss_table(sweep: dict[str, Any]) -> str:
  """Peak RSS at the largest input over the smallest one, per phase."""
  small, large = sweep["small"], sweep["large"]
  columns = (
      Column("phase", "phase", _plain, "---"),
      Column("peak_small", f"peak RSS MB {small}", _fixed(0)),
      Column("peak_large", f"peak RSS MB {large}", _fixed(0)),
      Column("peak_ratio", "peak large/small", _fixed(2)),
      Column("delta_small", f"Δ RSS MB {small}", _fixed(0)),
      Column("delta_large", f"Δ RSS MB {large}", _fixed(0)),
  )
  return render(columns, sweep["phases"])


def view(results: Sequence[dict[str, Any]], name: str) -> str:
  """One of the views a results block names: table, rss, ratios or compression."""
  if name == "table":
    return rows_table([record for result in results for record in result["rows"]])
  if name == "rss":
    (result,) = results
    return rss_table(result["rss_sweep"])
  if name == "ratios":
    builder = results[0]["builder"]
    return render(RATIO_COLUMNS[builder], [record for result in results for record in result["ratios"]])
  if name == "compression":
    return render(COMPRESSION_COLUMNS, [line for result in results for line in result["compression"]])
  if name == "versus":
    return render(VERSUS_COLUMNS, [line for result in results for line in result.get("versus", [])])
  raise ValueError(f"unknown results view {name!r}: use table, rss, ratios, compression or versus")


def goals_table(results_dir: pathlib.Path, table: str = "goals") -> str:
  """An issue's goals (`goals.TABLES[table]`) judged from the saved runs; a run not saved yet shows `not measured`."""
  results = {}
  for name in goals.TABLES[table][0]:
    path = results_dir / f"{name}.json"
    results[name] = harness.read_result(path) if path.is_file() else None
  return render(GOAL_COLUMNS, goals.lines(results, table))


def regenerate(text: str, results_dir: pathlib.Path) -> str:
  """`text` with the body of every results block rendered from the JSON in `results_dir`."""

  def body(found: re.Match[str]) -> str:
    names = found["names"].split(",")
    if found["view"] == "goals":  # `<!-- results: goals14 goals -->`: the runs are goals.TABLES["goals14"]'s
      table = goals_table(results_dir, found["names"])
    else:
      table = view([harness.read_result(results_dir / f"{name}.json") for name in names], found["view"])
    return f"<!-- results: {found['names']} {found['view']} -->\n{table}\n<!-- /results -->"

  return BLOCK.sub(body, text)


def main(results_dir: pathlib.Path, doc: pathlib.Path, check: bool) -> int:
  """Rewrites `doc` from the results (or, with `check`, says whether it is up to date)."""
  text = doc.read_text(encoding="utf-8")
  updated = regenerate(text, results_dir)
  blocks = len(BLOCK.findall(text))
  if check:
    if updated != text:
      print(f"{doc}: {blocks} result blocks, out of date: run `python -m benchmarks report`")
      return 1
    print(f"{doc}: {blocks} result blocks, up to date")
    return 0
  doc.write_text(updated, encoding="utf-8")
  print(f"{doc}: {blocks} result blocks regenerated from {results_dir}")
  return 0
