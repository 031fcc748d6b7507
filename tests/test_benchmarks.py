"""The benchmarks cannot rot: every case runs at its smoke size, and `report` reproduces docs/benchmarks.md."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import importlib.util
import json
import math
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

from tests.helpers import REPO

pytestmark = pytest.mark.slow

# Examples each smoke input holds (benchmarks/<case>.py SMOKE): the JSON must count the same.
SMOKE_EXAMPLES = {
    "numpy_arrays": 10**6 // (32 * 32 * 3 * 4),  # 1MB of 12 KiB float32 rows
    "cross_product": 100 * 100,  # 1e4 pairs, 100 records a side
    "augmented": 10**6 // 10**4,  # 1MB of 10KB records
    "concatenated": (10**6 // 3300) // 2 * 2,  # 2 sources of ~3.3KB examples
    "database": 500,
}
CASES = [*SMOKE_EXAMPLES, "scaling", "overlay_chains", "overlay_source"]
# Tests that read smoke runs besides their own case's.
_USES_SMOKE = {
    "test_smoke_scaling_fits_the_model": {"scaling"},
    "test_smoke_overlay_chains_reads_the_base_and_the_chain": {"overlay_chains"},
    "test_smoke_overlay_source_reads_the_base_and_the_overlay_by_index": {"overlay_source"},
    "test_smoke_database_reads_against_the_raw_read_and_the_peers": {"database"},
    "test_goals_are_judged_from_the_saved_runs": {"cross_product", "numpy_arrays", "concatenated"},
}
# Each run is mostly a TensorFlow import: three at a time keep the whole file well under a minute.
PARALLEL_RUNS = 3
ENV = {**os.environ, "NO_GCE_CHECK": "true", "TF_CPP_MIN_LOG_LEVEL": "3"}


@pytest.fixture(scope="module")
def smoke_results(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, tuple[subprocess.CompletedProcess, pathlib.Path]]:
  """The selected cases' `--smoke` runs, into a temp results dir (never benchmarks/results/)."""
  items = request.session.items
  selected = {item.callspec.params["case"] for item in items if item.module.__name__ == __name__
              and hasattr(item, "callspec") and "case" in item.callspec.params}
  for test, cases in _USES_SMOKE.items():
    if any(item.name == test for item in items):
      selected |= cases
  cases = [case for case in CASES if case in selected]
  results_dir = tmp_path_factory.mktemp("results")
  work_dir = tmp_path_factory.mktemp("work")

  def run(case: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "benchmarks", case, "--smoke", "--results-dir", str(results_dir),
         "--workdir", str(work_dir)],
        cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300, check=False,
    )

  with concurrent.futures.ThreadPoolExecutor(PARALLEL_RUNS) as pool:
    runs = dict(zip(cases, pool.map(run, cases)))
  return {case: (runs[case], results_dir / f"{case}-smoke.json") for case in cases}


def _finite(value: object) -> bool:
  return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


@pytest.mark.parametrize("case", sorted(SMOKE_EXAMPLES))
def test_smoke_run_writes_its_figures(case: str, smoke_results) -> None:
  completed, path = smoke_results[case]
  assert completed.returncode == 0, completed.stderr[-3000:]
  result = json.loads(path.read_text())
  assert result["builder"] == case and result["command"].startswith(f"python -m benchmarks {case} --smoke")
  assert {"date", "machine", "method", "load"} <= set(result)
  rows = {row["phase"]: row for row in result["rows"]}
  assert {"builder", "floor"} <= set(rows), list(rows)
  assert "copy_floor" in rows, list(rows)
  for row in result["rows"]:
    if "skip_row" not in row["phase"]:  # skip_row leaves the rows with a NULL out
      assert row["examples"] == SMOKE_EXAMPLES[case], (row["phase"], row["examples"])
    assert all(_finite(row[key]) for key in ("input_bytes", "seconds", "mb_per_s", "examples_per_s")), row
    assert isinstance(row["load_before"], float) and isinstance(row["load_after"], float), row
    assert row["role"] in ("builder", "physical", "peer", "seed", "baseline", "other"), row
  assert _finite(rows["builder"]["builder_floor"]), rows["builder"]
  assert case == "concatenated" or _finite(rows["builder"]["seed_builder"]), rows["builder"]
  for line in result.get("ratios", []):
    ratios = [value for key, value in line.items() if key != "input_bytes" and not isinstance(value, str)]
    assert ratios and all(_finite(value) for value in ratios), line
  assert "| builder/floor |" in completed.stdout
  assert isinstance(result["load_max"], float) and result["cores"] == os.cpu_count()
  # Every build against its physical floor and best peer, from the same run, printed and saved.
  versus = {line["phase"]: line for line in result["versus"]}
  assert "builder" in versus and "| speed-up over baseline |" not in completed.stdout
  peers = any(row["role"] == "peer" for row in result["rows"])  # the database's peers are optional packages
  assert peers == ("| /best peer |" in completed.stdout)
  for line in versus.values():
    assert not peers or _finite(line["vs_best_peer"]), line
    assert _finite(line["vs_copy_floor"]), line


def test_smoke_database_reads_against_the_raw_read_and_the_peers(smoke_results) -> None:
  """The SQL floor (binary COPY, or SQLite's fetch) ran; a peer whose package is missing says why it did not."""
  completed, path = smoke_results["database"]
  assert completed.returncode == 0, completed.stderr[-3000:]
  result = json.loads(path.read_text())
  phases = [row["phase"] for row in result["rows"]]
  postgres = bool(os.environ.get("TFDS_BUILDERS_PG_DSN"))
  raw_read = "copy_binary" if postgres else "sqlite_fetch"
  assert raw_read in phases and all(_finite(line[f"vs_{raw_read}"]) for line in result["versus"])
  for peer, packages in {"connectorx": ["connectorx"], "hf_from_sql": ["datasets", "pandas", "sqlalchemy"],
                         "adbc": ["adbc_driver_postgresql"]}.items():
    installed = all(importlib.util.find_spec(package) is not None for package in packages)
    runs = installed and (postgres or peer != "adbc")
    assert (peer in phases) == runs, (peer, phases)
    assert (f"database: peer {peer} skipped:" in completed.stdout) != runs, completed.stdout
  wide = {row["phase"]: row for row in result["rows"] if row["input_bytes"] != result["rows"][0]["input_bytes"]}
  if not postgres:
    assert not wide and "the wide table skipped: it needs PostgreSQL" in completed.stdout
    return
  policies = {f"builder_{policy}{order}" for policy in ("mask", "default", "skip_row") for order in ("", "_ordered")}
  assert policies | {"copy_binary", "copy_floor"} <= set(wide), list(wide)
  assert wide["builder_skip_row"]["examples"] == wide["builder_skip_row_ordered"]["examples"] < 500


def test_baseline_checkout_builds_beside_this_one(tmp_path: pathlib.Path) -> None:
  """`--baseline PATH` builds the same config with PATH's tfds_builders in a worker: NAME@baseline."""
  completed = subprocess.run(
      [sys.executable, "-m", "benchmarks", "cross_product", "--smoke", "--baseline", str(REPO),
       "--results-dir", str(tmp_path), "--workdir", str(tmp_path)],
      cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300, check=False,
  )
  assert completed.returncode == 0, completed.stderr[-3000:]
  result = json.loads((tmp_path / "cross_product-smoke.json").read_text())
  baseline = next(row for row in result["rows"] if row["phase"] == "builder@baseline")
  assert baseline["role"] == "baseline" and baseline["examples"] == SMOKE_EXAMPLES["cross_product"]
  assert _finite(result["versus"][0]["baseline_speedup"]) and result["baseline"] == str(REPO)
  assert "| speed-up over baseline |" in completed.stdout


def test_goals_are_judged_from_the_saved_runs(smoke_results, tmp_path: pathlib.Path) -> None:
  """Each goal reads its figure from the run it names; a run not saved yet is `not measured`."""
  from benchmarks import goals  # pylint: disable=g-import-not-at-top
  from benchmarks import report  # pylint: disable=g-import-not-at-top

  for name, case in {"goals-cross_product": "cross_product", "goals-numpy_arrays": "numpy_arrays",
                     "goals-concatenated-prepared": "concatenated"}.items():
    completed, path = smoke_results[case]
    assert completed.returncode == 0, completed.stderr[-3000:]
    shutil.copy(path, tmp_path / f"{name}.json")
  lines = {(line["builder"], line["goal"]): line for line in goals.lines(
      {name: json.loads((tmp_path / f"{name}.json").read_text()) if (tmp_path / f"{name}.json").exists() else None
       for name in goals.RESULTS})}
  copy_floor = lines[("cross_product", "≤ 2x the copy floor of the same output bytes")]
  assert _finite(copy_floor["ratio"]) and copy_floor["met"] in ("yes", "no") and "cores" in copy_floor["load"]
  assert _finite(lines[("numpy_arrays", "hold ≥ 0.8x the copy floor's speed")]["ratio"])
  assert _finite(lines[("concatenated", "≤ 1.2x the TFRecord copy, prepared sources")]["ratio"])
  sqlite = lines[("database, SQLite", "≥ 2x today")]
  assert (sqlite["figure"], sqlite["met"]) == ("not measured", "-")
  table = report.goals_table(tmp_path)
  assert table.startswith("| builder | goal | figure | ratio | 1-min load | met? |")
  assert len(table.splitlines()) == 2 + len(goals.GOALS)


def test_smoke_scaling_fits_the_model(smoke_results) -> None:
  completed, path = smoke_results["scaling"]
  assert completed.returncode == 0, completed.stderr[-3000:]
  result = json.loads(path.read_text())
  assert [(p["partitions"], p["workers"]) for p in result["points"]] == [(2, 1)]
  assert _finite(result["local_bytes_per_s"]) and _finite(result["points"][0]["seconds"])
  assert all(math.isfinite(value) for value in result["model"].values()), result["model"]


def test_nothing_lands_in_the_saved_results(smoke_results) -> None:
  assert not list((REPO / "benchmarks" / "results").glob("*-smoke.json"))


def test_report_reproduces_the_docs_tables() -> None:
  """docs/benchmarks.md is what `python -m benchmarks report` makes of benchmarks/results/."""
  from benchmarks import harness  # pylint: disable=g-import-not-at-top
  from benchmarks import report  # pylint: disable=g-import-not-at-top

  text = report.DOC.read_text(encoding="utf-8")
  assert len(report.BLOCK.findall(text)) >= 10
  assert report.regenerate(text, harness.RESULTS_DIR) == text, "run `python -m benchmarks report`"


def test_units_are_named_once() -> None:
  from benchmarks import harness  # pylint: disable=g-import-not-at-top

  assert (harness.MB, harness.MIB) == (10**6, 2**20)
  assert harness.parse_size("64MB") == 64 * 10**6 and harness.parse_size("64MiB") == 64 * 2**20
  assert harness.format_size(499_998_720) == "500MB"


@pytest.mark.parametrize("wide", [False, True], ids=["six_columns", "wide"])
def test_adbc_peer_writes_the_builders_bytes(postgres_dsn: str, tmp_path: pathlib.Path, wide: bool) -> None:
  """The ADBC peer does the builder's work: its file is the ordered build's shards, byte for byte."""
  pytest.importorskip("adbc_driver_postgresql", reason="a benchmark-only peer: pip install -e '.[bench]'")
  from benchmarks import database  # pylint: disable=g-import-not-at-top
  from benchmarks import harness  # pylint: disable=g-import-not-at-top
  from benchmarks import postgres  # pylint: disable=g-import-not-at-top

  rows = 700  # the wide table then has NULLs in each of its nullable columns (tailnum: every 150th row)
  table = (postgres.wide_postgres_table if wide else postgres.postgres_table)(postgres_dsn, rows)[0]
  try:
    options = {"nulls": "mask"} if wide else {}
    database.builder_write(table, tmp_path / "built", order_by="id", **options)
    peer_path = tmp_path / "adbc.tfrecord"  # read in key order, as the build stores the rows
    database.adbc_write(dataclasses.replace(table, order_by="id"), peer_path, postgres.WIDE_NULLABLE if wide else ())
    built = b"".join(shard.read_bytes() for shard in harness.built_shards(tmp_path / "built"))
    assert len(built) > rows * 50 and peer_path.read_bytes() == built
  finally:
    postgres.drop_postgres_table(postgres_dsn, rows, wide=wide)


@pytest.mark.parametrize("absent, peer", [("sqlalchemy", "hf_from_sql"), ("datasets", "hf_from_sql"),
                                          ("connectorx", "connectorx")])
def test_a_peer_missing_any_of_its_packages_is_skipped_naming_it(monkeypatch, absent, peer) -> None:
  from benchmarks import database  # pylint: disable=import-outside-toplevel

  monkeypatch.setitem(sys.modules, absent, None)  # what find_spec reports for a package not installed
  missing = database._missing_peers(sqlite=False)  # pylint: disable=protected-access
  named, _, rest = missing[peer].partition(" not installed ")
  assert absent in named.split(", ") and rest == "(pip install -e '.[bench]')"


def test_smoke_overlay_chains_reads_the_base_and_the_chain(smoke_results) -> None:
  """A read, not a build: the base alone and base + 3 links, their examples/s and the ratio of their times."""
  completed, path = smoke_results["overlay_chains"]
  assert completed.returncode == 0, completed.stderr[-3000:]
  result = json.loads(path.read_text())
  rows = {row["phase"]: row for row in result["rows"]}
  assert set(rows) == {"base_read", "chain_read"}
  assert all(row["examples"] == 10**6 // 10**4 and _finite(row["examples_per_s"]) for row in rows.values())
  (line,) = result["ratios"]
  assert line["case"] == "base + 3-link chain" and _finite(line["chain_base_time"])
  assert "| chain/base time (goal ≤ 1.3) |" in completed.stdout


def test_smoke_overlay_source_reads_the_base_and_the_overlay_by_index(smoke_results) -> None:
  """Random reads of an ArrayRecord base (tfds.data_source) and of augmented_source over it, single and batched."""
  from benchmarks import overlay_source  # pylint: disable=g-import-not-at-top

  completed, path = smoke_results["overlay_source"]
  assert completed.returncode == 0, completed.stderr[-3000:]
  result = json.loads(path.read_text())
  rows = {row["phase"]: row for row in result["rows"]}
  assert list(rows) == ["base_source", "overlay_source", "base_source_batched", "overlay_source_batched"]
  reads = min(overlay_source.READS, 10**6 // overlay_source.record_bytes())  # 1MB of ~3.3KB records
  assert all(row["examples"] == reads and _finite(row["examples_per_s"]) for row in rows.values())
  assert {row["role"] for row in rows.values()} == {"physical", "builder"}
  assert [line["read"] for line in result["ratios"]] == ["source[i]", "__getitems__ of 64"]
  for line in result["ratios"]:
    assert _finite(line["overlay_base_time"]) and _finite(line["overlay_examples_per_s"]), line
  assert "| overlay/base time |" in completed.stdout
