"""The concatenated seed (/work/shared/seeds/000_*.txt): its example 2, list -> np.array -> savez_compressed -> zip."""

from __future__ import annotations

import os
import pathlib
from collections.abc import Sequence

import numpy as np


# The seed write-up's example 2, with its two datasets being our sources read
# by TFDS and concatenated by tf.data; tokens, which vary in length, are
# padded as in its example 3.
def concatenate_and_zip(dataset_dirs: Sequence[pathlib.Path], out_dir: pathlib.Path) -> None:
  """list -> np.array -> np.savez_compressed -> zip, as the seed does."""
  import zipfile  # pylint: disable=g-import-not-at-top

  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  datasets = [tfds.builder_from_directory(str(d)).as_dataset(split="train") for d in dataset_dirs]
  concatenated_dataset = datasets[0]
  for dataset in datasets[1:]:
    concatenated_dataset = concatenated_dataset.concatenate(dataset)
  images = []
  labels = []
  sequences = []
  for example in concatenated_dataset:
    images.append(example["image"].numpy())
    labels.append(example["label"].numpy())
    sequences.append(example["tokens"].numpy())
  max_length = max(len(seq) for seq in sequences)
  padded_sequences = [np.pad(seq, (0, max_length - len(seq)), "constant") for seq in sequences]
  images_array = np.array(images)
  labels_array = np.array(labels)
  padded_array = np.array(padded_sequences)
  npz_path = out_dir / "concatenated_images.npz"
  np.savez_compressed(npz_path, images=images_array, labels=labels_array, tokens=padded_array)
  with zipfile.ZipFile(out_dir / "concatenated_images.zip", "w") as zipf:
    zipf.write(npz_path)
  os.remove(npz_path)
