"""The benchmarks cannot rot: every case runs at its smoke size, and `report` reproduces docs/benchmarks.md."""

from __future__ import annotations

import concurrent.futures
import json
import math
import os
import pathlib
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
CASES = [*SMOKE_EXAMPLES, "scaling"]
# Each run is mostly a TensorFlow import: three at a time keep the whole file well under a minute.
PARALLEL_RUNS = 3
ENV = {**os.environ, "NO_GCE_CHECK": "true", "TF_CPP_MIN_LOG_LEVEL": "3"}


@pytest.fixture(scope="module")
def smoke_results(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, tuple[subprocess.CompletedProcess, pathlib.Path]]:
  """The selected cases' `--smoke` runs, into a temp results dir (never benchmarks/results/)."""
  items = request.session.items
  selected = {"scaling"} if any(item.name == "test_smoke_scaling_fits_the_model" for item in items) else set()
  selected |= {item.callspec.params["case"] for item in items
               if item.module.__name__ == __name__ and hasattr(item, "callspec")}
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
  for row in rows.values():
    assert row["examples"] == SMOKE_EXAMPLES[case], (row["phase"], row["examples"])
    assert all(_finite(row[key]) for key in ("input_bytes", "seconds", "mb_per_s", "examples_per_s")), row
  assert _finite(rows["builder"]["builder_floor"]), rows["builder"]
  assert case == "concatenated" or _finite(rows["builder"]["seed_builder"]), rows["builder"]
  for line in result.get("ratios", []):
    ratios = [value for key, value in line.items() if key != "input_bytes" and not isinstance(value, str)]
    assert ratios and all(_finite(value) for value in ratios), line
  assert "| builder/floor |" in completed.stdout


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
