"""core.fast: importing the facade costs nothing; Numba is imported on first use of a compiled module."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

from tfds_builders.core import fast

_REPO = pathlib.Path(__file__).resolve().parents[3]
_PROBE = """
import json, sys
from tfds_builders.core import fast
before = "numba" in sys.modules
fast.record_index.ExampleLayout.none()
print(json.dumps({"before": before, "after": "numba" in sys.modules, "bound": "record_index" in vars(fast)}))
"""


def test_importing_fast_does_not_import_numba_and_first_use_does() -> None:
  # A fresh interpreter: this one has imported Numba through other tests.
  done = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True, cwd=_REPO,
                        env={**os.environ, "NO_GCE_CHECK": "true", "TF_CPP_MIN_LOG_LEVEL": "2"})
  found = json.loads(done.stdout.strip().splitlines()[-1])
  assert found == {"before": False, "after": True, "bound": True}


def test_an_unknown_name_is_an_attribute_error() -> None:
  with pytest.raises(AttributeError, match="has no attribute 'record_walks'"):
    fast.record_walks  # pylint: disable=pointless-statement
