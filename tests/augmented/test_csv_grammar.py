"""augmented.csv_grammar: which side-table CSV cells read as integers or decimals, checked against Python's parsers."""

from __future__ import annotations

import pytest

from tfds_builders.augmented import csv_grammar
from tfds_builders.core.fast import record_blocks


@pytest.mark.parametrize("text, form", [
    ("0", csv_grammar.INTEGER), ("-12", csv_grammar.INTEGER), ("+7", csv_grammar.INTEGER),
    ("007", csv_grammar.INTEGER), ("1.5", csv_grammar.DECIMAL), (".5", csv_grammar.DECIMAL),
    ("5.", csv_grammar.DECIMAL), ("-1e5", csv_grammar.DECIMAL), ("2.5E-3", csv_grammar.DECIMAL),
    ("", csv_grammar.NOT_A_NUMBER), ("-", csv_grammar.NOT_A_NUMBER), (".", csv_grammar.NOT_A_NUMBER),
    (" 1", csv_grammar.NOT_A_NUMBER), ("1_000", csv_grammar.NOT_A_NUMBER), ("0x1F", csv_grammar.NOT_A_NUMBER),
    ("inf", csv_grammar.NOT_A_NUMBER), ("1e", csv_grammar.NOT_A_NUMBER), ("e5", csv_grammar.NOT_A_NUMBER),
    ("1.5.2", csv_grammar.NOT_A_NUMBER), ("\u0665", csv_grammar.NOT_A_NUMBER),
])
def test_number_forms_are_strict_and_agree_with_python(text: str, form: int) -> None:
  found = csv_grammar.number_forms(record_blocks.ByteColumn.from_items([text.encode()]))
  assert found.tolist() == [form]
  if form == csv_grammar.INTEGER:
    int(text)  # every INTEGER parses with int(), every DECIMAL with float()
  elif form == csv_grammar.DECIMAL:
    float(text)
