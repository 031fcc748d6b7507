"""The issues' goals, each read from one saved run (`benchmarks/results/goals*-*.json`) and judged met or not."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

# The runs the goals are read from; docs/benchmarks.md ("Goals") gives the command of each.
RESULTS = (
    "goals-database-pg", "goals-database-pg-sweep", "goals-database-sqlite",
    "goals-cross_product", "goals-cross_product-sweep", "goals-concatenated-prepared",
    "goals-concatenated-raw", "goals-numpy_arrays", "goals-scaling-numpy_arrays",
    "goals-scaling-cross_product",
)
_FLAT = 1.15  # "RSS flat": peak at the largest input over the smallest, numpy_arrays's bound since issue 1


@dataclasses.dataclass(frozen=True)
class Figure:
  """What a goal's run measured: the figure as text, the ratio judged, and the rows it came from."""

  text: str
  ratio: float
  rows: tuple[dict[str, Any], ...] = ()


@dataclasses.dataclass(frozen=True)
class Goal:
  """One line of the issue's goal table, read from the run named `result`.

  Attributes:
    builder: The builder (and backend) the goal is about.
    goal: The goal as the issue words it.
    result: The saved run (`benchmarks/results/RESULT.json`) it is read from.
    measure: From that run's JSON to the figure; None when the run lacks the phases.
    met: Whether the ratio meets the goal.
  """

  builder: str
  goal: str
  result: str
  measure: Callable[[dict[str, Any]], Figure | None]
  met: Callable[[float], bool]


def _row(result: dict[str, Any], phase: str, table: str = "six") -> dict[str, Any] | None:
  """The phase's row at the run's largest input; on database runs, of the 6-column or the wide table."""
  rows = [row for row in result.get("rows", []) if row["phase"] == phase]
  if result.get("builder") == "database":
    wide_phases = {row["phase"] for row in result["rows"] if row["phase"].startswith("builder_mask")}
    wide_sizes = {row["input_bytes"] for row in result["rows"] if row["phase"] in wide_phases}
    rows = [row for row in rows if (row["input_bytes"] in wide_sizes) == (table == "wide")]
  return max(rows, key=lambda row: row["input_bytes"], default=None)


def _speed(phase: str, table: str = "six", unit: str = "rows/s", goal: float = 1.0) -> Callable[..., Figure | None]:
  def measure(result: dict[str, Any]) -> Figure | None:
    row = _row(result, phase, table)
    if row is None:
      return None
    return Figure(f"{row['examples_per_s']:,.0f} {unit}", row["examples_per_s"] / goal, (row,))
  return measure


def _time_ratio(numerator: str, denominator: str, table: str = "six", label: str = "") -> Callable[..., Figure | None]:
  """seconds(numerator) / seconds(denominator), both from the same run and input."""
  def measure(result: dict[str, Any]) -> Figure | None:
    top, bottom = _row(result, numerator, table), _row(result, denominator, table)
    if top is None or bottom is None:
      return None
    ratio = top["seconds"] / bottom["seconds"]
    return Figure(f"{top['seconds']:.3f} s / {bottom['seconds']:.3f} s {label}".strip(), ratio, (top, bottom))
  return measure


def _rss_flat(phase: str = "builder") -> Callable[[dict[str, Any]], Figure | None]:
  def measure(result: dict[str, Any]) -> Figure | None:
    sweep = result.get("rss_sweep") or {}
    line = next((line for line in sweep.get("phases", []) if line["phase"] == phase), None)
    if line is None:
      return None
    return Figure(f"peak {line['peak_small']:.0f} MB at {sweep['small']}, {line['peak_large']:.0f} MB at "
                  f"{sweep['large']}", line["peak_ratio"])
  return measure


def _seconds(phase: str) -> Callable[[dict[str, Any]], Figure | None]:
  """A phase's seconds at the run's largest input (the ratio is the seconds)."""
  def measure(result: dict[str, Any]) -> Figure | None:
    row = _row(result, phase)
    return None if row is None else Figure(f"{row['seconds']:.3f} s", row["seconds"], (row,))
  return measure


def _bytes_written(result: dict[str, Any]) -> Figure | None:
  """The bytes the overlay wrote (every file of its version directory), in MB."""
  line = max(result.get("ratios", []), key=lambda line: line["input_bytes"], default=None)
  if line is None:
    return None
  return Figure(f"{line['overlay_bytes']:,} bytes on a {line['input_bytes'] / 1e9:.3g} GB base "
                f"(materialize: {line['materialize_bytes']:,})", line["overlay_bytes"] / 1e6)


def _beam_speedup(result: dict[str, Any]) -> Figure | None:
  """1-worker over 2-worker seconds at 1 GiB (or the largest size), most partitions."""
  points = result.get("points", [])
  if not points:
    return None
  size = 2**30 if any(point["size_bytes"] == 2**30 for point in points) else max(p["size_bytes"] for p in points)
  partitions = max(point["partitions"] for point in points if point["size_bytes"] == size)
  seconds = {point["workers"]: point["seconds"] for point in points
             if point["size_bytes"] == size and point["partitions"] == partitions}
  if 1 not in seconds or 2 not in seconds:
    return None
  return Figure(f"{seconds[1]:.2f} s / {seconds[2]:.2f} s at {size / 2**30:.3g} GiB, {partitions} partitions",
                seconds[1] / seconds[2])


GOALS = (
    Goal("database, PostgreSQL", "≥ 1,000,000 rows/s on the 6-column table", "goals-database-pg",
         _speed("builder", goal=1e6), lambda ratio: ratio >= 1),
    Goal("database, PostgreSQL", "≥ 4x today (6 columns)", "goals-database-pg",
         _time_ratio("builder@baseline", "builder", label="(today / now)"), lambda ratio: ratio >= 4),
    Goal("database, PostgreSQL", "wide table: ≥ 3x faster than HF `from_sql`", "goals-database-pg",
         _time_ratio("hf_from_sql", "builder_mask", "wide", "(from_sql / builder)"), lambda ratio: ratio >= 3),
    Goal("database, PostgreSQL", "≤ 1.5x the raw binary COPY (6 columns)", "goals-database-pg",
         _time_ratio("builder", "copy_binary"), lambda ratio: ratio <= 1.5),
    Goal("database, PostgreSQL", "≤ 1.5x the raw binary COPY (wide table)", "goals-database-pg",
         _time_ratio("builder_mask", "copy_binary", "wide"), lambda ratio: ratio <= 1.5),
    Goal("database, PostgreSQL", "faster than ADBC→Arrow→TFRecord (6 columns)", "goals-database-pg",
         _time_ratio("builder", "adbc"), lambda ratio: ratio < 1),
    Goal("database, PostgreSQL", "faster than ADBC→Arrow→TFRecord (wide table)", "goals-database-pg",
         _time_ratio("builder_mask", "adbc", "wide"), lambda ratio: ratio < 1),
    Goal("database, PostgreSQL", f"RSS flat from 1e5 to 1e7 rows (peak ratio ≤ {_FLAT})", "goals-database-pg-sweep",
         _rss_flat(), lambda ratio: ratio <= _FLAT),
    Goal("database, SQLite", "≥ 2x today", "goals-database-sqlite",
         _time_ratio("builder@baseline", "builder", label="(today / now)"), lambda ratio: ratio >= 2),
    Goal("database, SQLite", f"RSS flat (peak ratio ≤ {_FLAT})", "goals-database-sqlite",
         _rss_flat(), lambda ratio: ratio <= _FLAT),
    Goal("cross_product", "≥ 3,000,000 pairs/s on 170-byte pairs", "goals-cross_product",
         _speed("builder", unit="pairs/s", goal=3e6), lambda ratio: ratio >= 1),
    Goal("cross_product", "≥ 4x today", "goals-cross_product",
         _time_ratio("builder@baseline", "builder", label="(today / now)"), lambda ratio: ratio >= 4),
    Goal("cross_product", "≤ 2x the copy floor of the same output bytes", "goals-cross_product",
         _time_ratio("builder", "copy_floor"), lambda ratio: ratio <= 2),
    Goal("cross_product", f"RSS flat to 1e8 pairs (peak ratio ≤ {_FLAT})", "goals-cross_product-sweep",
         _rss_flat(), lambda ratio: ratio <= _FLAT),
    Goal("concatenated", "≤ 1.2x the TFRecord copy, prepared sources", "goals-concatenated-prepared",
         _time_ratio("builder", "floor"), lambda ratio: ratio <= 1.2),
    Goal("concatenated", "≤ 1.2x the TFRecord copy, raw sources", "goals-concatenated-raw",
         _time_ratio("builder", "floor"), lambda ratio: ratio <= 1.2),
    Goal("numpy_arrays", "hold ≥ 0.8x the copy floor's speed", "goals-numpy_arrays",
         _time_ratio("copy_floor", "builder", label="(copy / builder)"), lambda ratio: ratio >= 0.8),
    Goal("Beam, 2 workers", "≥ 1.6x over 1 worker at 1 GB, numpy_arrays", "goals-scaling-numpy_arrays",
         _beam_speedup, lambda ratio: ratio >= 1.6),
    Goal("Beam, 2 workers", "≥ 1.6x over 1 worker at 1 GB, cross_product", "goals-scaling-cross_product",
         _beam_speedup, lambda ratio: ratio >= 1.6),
)


# Issue 14 (beyond the peers): overlays that evolve, and the virtual cross product.
RESULTS_14 = ("goals14-overlays", "goals14-overlay_chains", "goals14-cross_product")
GOALS_14 = (
    Goal("augmented, constant field", "1 GB base: the overlay writes < 1 MB", "goals14-overlays",
         _bytes_written, lambda ratio: ratio < 1),
    Goal("augmented, constant field", "1 GB base: the overlay builds in < 1 s", "goals14-overlays",
         _seconds("constant_overlay"), lambda ratio: ratio < 1),
    Goal("augmented, constant field", "≥ 100x faster than materialize of the same field", "goals14-overlays",
         _time_ratio("constant_materialize", "constant_overlay", label="(materialize / overlay)"),
         lambda ratio: ratio >= 100),
    Goal("augmented, overlay chain", "reading base + 3-link chain ≤ 1.3x reading the base alone",
         "goals14-overlay_chains", _time_ratio("chain_read", "base_read", label="(chain / base)"),
         lambda ratio: ratio <= 1.3),
    Goal("cross_product, virtual", "≥ 200,000 random pairs/s from one process", "goals14-cross_product",
         _speed("virtual_random_access", unit="pairs/s", goal=2e5), lambda ratio: ratio >= 1),
    Goal("cross_product, virtual", "≥ 200,000 random pairs/s, sampled (rate 1/16)", "goals14-cross_product",
         _speed("virtual_random_access_sampled", unit="pairs/s", goal=2e5), lambda ratio: ratio >= 1),
    Goal("cross_product, virtual", f"memory of the inputs, not the pairs (peak ratio ≤ {_FLAT}, 1e6 → 1e7 pairs)",
         "goals14-cross_product", _rss_flat("virtual_random_access"), lambda ratio: ratio <= _FLAT),
)
# The goal tables of docs/benchmarks.md: `<!-- results: NAME goals -->` -> the runs and goals it judges.
TABLES = {"goals": (RESULTS, GOALS), "goals14": (RESULTS_14, GOALS_14)}


def _load(figure: Figure, result: dict[str, Any]) -> str:
  """The highest 1-minute load around the phases compared (else the run's), with the core count."""
  loads = [row["load_max"] for row in figure.rows if row.get("load_max") is not None]
  load = max(loads) if loads else result.get("load_max")
  if load is None:
    return "-"
  cores = result.get("cores")
  return f"{load:.2f}" + (f" / {cores} cores" + (" (high: rerun)" if load > cores else "") if cores else "")


def lines(results: dict[str, dict[str, Any] | None], table: str = "goals") -> list[dict[str, Any]]:
  """One line per goal of a table (`TABLES`): its figure, ratio, load and whether it is met, or `not measured`."""
  found = []
  for goal in TABLES[table][1]:
    result = results.get(goal.result)
    figure = goal.measure(result) if result else None
    line = {"builder": goal.builder, "goal": goal.goal, "result": goal.result}
    if figure is None:
      line.update(figure="not measured", ratio=None, load="-", met="-")
    else:
      line.update(figure=figure.text, ratio=figure.ratio, load=_load(figure, result),
                  met="yes" if goal.met(figure.ratio) else "no")
    found.append(line)
  return found

