"""The number grammar of side-table CSV cells: which texts read as integers or decimals, checked a column at a time."""

from __future__ import annotations

import numpy as np

from tfds_builders.core import fast

NOT_A_NUMBER, INTEGER, DECIMAL = 0, 1, 2


def number_forms(texts: fast.record_blocks.ByteColumn) -> np.ndarray:
  """Per text: INTEGER (`-12`, `+7`), DECIMAL (digits with a point, an exponent or both: `1.5`,
  `.5`, `5.`, `-1e5`) or NOT_A_NUMBER (anything else, spaces, `_`, `inf` and `nan` included).

  Every INTEGER parses with Python's `int()` and every DECIMAL with `float()`.
  """
  return _number_forms(texts.data, texts.offsets)


@fast.jit  # compiled on first use, when a CSV side table is read columnar
def _number_forms(data: np.ndarray, offsets: np.ndarray) -> np.ndarray:
  """Per text of a ByteColumn's arrays, its form."""
  count = offsets.shape[0] - 1
  forms = np.zeros(count, np.int8)
  for i in range(count):
    pos, end = offsets[i], offsets[i + 1]
    if pos < end and (data[pos] == 43 or data[pos] == 45):  # + -
      pos += 1
    digits = 0
    while pos < end and 48 <= data[pos] <= 57:
      pos += 1
      digits += 1
    if pos == end:
      forms[i] = INTEGER if digits else NOT_A_NUMBER
      continue
    if data[pos] == 46:  # .
      pos += 1
      while pos < end and 48 <= data[pos] <= 57:
        pos += 1
        digits += 1
    if digits and pos < end and (data[pos] == 101 or data[pos] == 69):  # e E
      pos += 1
      if pos < end and (data[pos] == 43 or data[pos] == 45):
        pos += 1
      exponent = 0
      while pos < end and 48 <= data[pos] <= 57:
        pos += 1
        exponent += 1
      digits = digits if exponent else 0
    forms[i] = DECIMAL if digits and pos == end else NOT_A_NUMBER
  return forms
