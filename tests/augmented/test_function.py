"""New fields from a user function: inference, declared features, failures, workers, and each field's encoding."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from tfds_builders.augmented import Builder
from tfds_builders.augmented import fields
from tfds_builders.augmented import load_augmented
from tfds_builders.core import errors
from tfds_builders.core import serialization
from tests import helpers
from tests.augmented.common import FUNCTIONS
from tests.augmented.common import assert_nothing_loadable
from tests.augmented.common import examples
from tests.augmented.common import labels_csv
from tests.augmented.common import prepared_dir
from tests.augmented.common import raw_base
from tests.augmented.common import stored

make_builder = functools.partial(helpers.make_builder, Builder)
build = functools.partial(helpers.build, Builder)


# ------------------------------------------------------------- function --


def test_declared_features_override_inference(tmp_path):
  builder = build(tmp_path, base_records=raw_base(tmp_path / "raw"), function=f"{FUNCTIONS}:score_and_words",
                  features={"double_score": "float32", "words": {"dtype": "string", "shape": [None]}})
  assert builder.info.features["double_score"].np_dtype == np.float32
  assert builder.info.features["words"].shape == (None,)
  provenance_fields = builder.info.metadata["provenance"]["new_fields"]
  assert provenance_fields["double_score"]["declared"] is True
  got = examples(builder.as_dataset(split="train"))
  assert [e["double_score"] for e in got] == [np.float32(e["score"] * 2) for e in got]


def test_inferred_shape_must_hold_for_every_example(tmp_path):
  # `words` has 2 values in every example here, so it is inferred as string[2].
  builder = build(tmp_path, base_records=raw_base(tmp_path / "raw"), function=f"{FUNCTIONS}:score_and_words")
  assert builder.info.features["words"].shape == (2,)
  assert builder.info.features["double_score"].np_dtype == np.float64


def test_inconsistent_type_names_the_example_and_field(tmp_path):
  with pytest.raises(errors.SchemaError, match=r"Example train/000000010: field 'flag' from function .*type_changes_at_ten: 'ten' is string, but the feature is int64\. The feature is int64 \(inferred from the first examples\)"):
    build(tmp_path, base_records=raw_base(tmp_path / "raw", {"train": [12]}), function=f"{FUNCTIONS}:type_changes_at_ten")
  assert_nothing_loadable(tmp_path / "tfds")


def test_inconsistent_type_within_the_first_examples(tmp_path):
  with pytest.raises(errors.SchemaError, match="Field 'flag' from function .* has values of different types"):
    make_builder(tmp_path, base_records=raw_base(tmp_path / "raw", {"train": [8]}),
                 function=f"{FUNCTIONS}:type_changes_at_five")


def test_a_field_missing_on_one_example(tmp_path):
  with pytest.raises(errors.SchemaError, match=r"returned fields \['flag'\] on example train/000000009 .*the first examples returned \['flag', 'other'\]"):
    build(tmp_path, base_records=raw_base(tmp_path / "raw", {"train": [12]}), function=f"{FUNCTIONS}:drops_a_field_at_nine")


def test_a_function_returning_no_dict(tmp_path):
  with pytest.raises(errors.SchemaError, match=r"on example train/000000000 .* returned list \[100\], not a dict"):
    make_builder(tmp_path, base_records=raw_base(tmp_path / "raw"), function=f"{FUNCTIONS}:returns_a_list")


@pytest.mark.parametrize("reference, fragment", [
    ("no_such_module_xyz:f", "Cannot import module 'no_such_module_xyz'"),
    (f"{FUNCTIONS}:no_such_function", f"Module '{FUNCTIONS}' has no 'no_such_function'"),
    ("just_a_name", "is not a reference; write 'package.module:function'"),
])
def test_a_function_that_cannot_be_imported(tmp_path, reference, fragment):
  with pytest.raises(errors.ConfigError, match=fragment) as raised:
    make_builder(tmp_path, base_records=raw_base(tmp_path / "raw"), function=reference)
  if reference.startswith("no_such_module"):
    assert isinstance(raised.value.__cause__, ModuleNotFoundError)


def test_a_raising_function_names_the_example_and_chains_the_error(tmp_path):
  sources = raw_base(tmp_path / "raw", {"train": [12]})
  with pytest.raises(errors.SourceError, match=r"raised on example train/000000009 \(record 9 of train-0.tfrecord\): ZeroDivisionError: no score for 109") as raised:
    build(tmp_path, base_records=sources, function=f"{FUNCTIONS}:raises_at_nine")
  assert isinstance(raised.value.__cause__, ZeroDivisionError)
  assert_nothing_loadable(tmp_path / "tfds")


def test_workers_give_the_serial_output_and_name_failures(tmp_path):
  sources = raw_base(tmp_path / "raw", {"train": [150, 140], "test": [5]})  # several batches
  config = dict(base_records=sources, function="tfds_builders.augmented.example_functions:text_statistics",
                side_table=str(labels_csv(tmp_path / "labels.csv", range(100, 395, 2))), join_key="id")
  serial = build(tmp_path, "serial", missing_policy="skip", **config)
  parallel = build(tmp_path, "parallel", missing_policy="skip", num_workers=2, **config)
  for split in ("train", "test"):
    assert stored(parallel, split) == stored(serial, split)
  assert len(stored(serial)) == 145
  # A failure in a worker names the example and chains the original exception.
  with pytest.raises(errors.SourceError, match=r"raised on example train/000000009") as raised:
    build(tmp_path, "fails", base_records=sources, function=f"{FUNCTIONS}:raises_at_nine", num_workers=2)
  assert isinstance(raised.value.__cause__, ZeroDivisionError)
  assert any("raises_at_nine" in note for note in raised.value.__cause__.__notes__)


def test_function_on_a_prepared_base_gets_decoded_numpy_values(tmp_path, prepared_base):
  builder = build(tmp_path, base=str(prepared_dir(prepared_base)), function=f"{FUNCTIONS}:caption_length", mode="overlay")
  got = examples(load_augmented(builder.data_dir, split="test"))
  assert [e["caption_length"] for e in got] == [len(e["caption"]) for e in got]
  assert [e["mean_pixel"] for e in got] == [float(e["id"]) for e in got]


# ------------------------------------------------------- field encoding --


@pytest.mark.parametrize("spec_text, value", [
    ("bool", True), ("int8", -128), ("int16", 300), ("int32", -(2**31)), ("int64", 2**63 - 1),
    ("uint8", 255), ("uint16", 65535), ("uint32", 2**32 - 1), ("float16", 0.5), ("float32", 1.25),
    ("float64", 0.1), ("string", "é"), ("int64[3]", [1, -2, 3]), ("float32[None]", [0.5, 2.0]),
    ("float64[2,2]", [[0.1, 0.2], [1e300, -0.0]]), ("string[None]", ["a", "bé"]), ("int64[None]", []),
    ("uint8[2,None]", [[1, 2, 3], [4, 5, 6]]),
])
def test_field_encoding_matches_tfds(spec_text, value):
  spec = fields.parse_declared("f", spec_text, "test")
  ours = serialization.example([fields.FieldCodec(spec).encode(value)])
  features = tfds.features.FeaturesDict({"f": spec.feature()})
  theirs = features.serialize_example({"f": value})
  assert tf.train.Example.FromString(ours) == tf.train.Example.FromString(theirs)
  decoded = features.deserialize_example_np(ours)["f"]
  np.testing.assert_array_equal(decoded, features.deserialize_example_np(theirs)["f"])
  if spec.shape and spec.dtype != "string":
    assert decoded.dtype == np.dtype(spec.dtype)


@pytest.mark.parametrize("spec_text, value, fragment", [
    ("int64", 1.5, "1.5 is float64, but the feature is int64"),
    ("int8", 300, "300 is out of the range of int8"),
    ("bool", 1, "1 is int64, but the feature is bool"),
    ("float32[2]", [1.0, 2.0, 3.0], r"has shape \(3,\), but the feature is float32\[2\]"),
    ("string", 5, "5 is int64, but the feature is string"),
])
def test_field_values_that_do_not_fit(spec_text, value, fragment):
  with pytest.raises(fields.FieldValueError, match=fragment):
    fields.FieldCodec(fields.parse_declared("f", spec_text, "test")).encode(value)


