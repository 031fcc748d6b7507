"""Example user functions for the augmented builder (used by the bundled `demo_function` config)."""

from __future__ import annotations

from typing import Any

import numpy as np


def text_statistics(example: dict[str, Any]) -> dict[str, Any]:
  """Counts the characters and words of the example's `text` (UTF-8 bytes)."""
  text = example["text"].decode("utf-8")
  words = text.split()
  return {
      "text_length": len(text),
      "num_words": np.int32(len(words)),
      "first_word": words[0] if words else "",
  }
