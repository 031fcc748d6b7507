"""Result columns -> column codecs: type overrides, NULL policies and SQL-computed preprocessing."""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import math
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import tensorflow_datasets as tfds

from tfds_builders.core import errors
from tfds_builders.core.sql import sessions
from tfds_builders.core.sql import types as sql_types
from tfds_builders.database import codecs as codecs_lib
from tfds_builders.database import queries

OPTION_KEYS = (
    "type", "array", "numeric", "temporal", "nulls", "default", "impute",
    "categorical", "vocabulary", "unknown", "normalize", "apply",
)
IMPUTE_STATISTICS = ("mean", "median", "mode", "min", "max")
NORMALIZATIONS = ("standard", "minmax")
_CATEGORICAL_KINDS = ("int", "text", "enum", "uuid")


@dataclasses.dataclass(frozen=True)
class ColumnOptions:
  """Per-column settings from `BuilderConfig.columns[name]` (see the dataset card)."""

  type: str | None = None
  array: bool | None = None
  numeric: str | None = None
  temporal: str | None = None
  nulls: str | None = None
  default: Any = None
  impute: str | None = None
  categorical: bool = False
  vocabulary: tuple[str, ...] | None = None
  unknown: str | None = None
  normalize: str | None = None
  apply: bool = True

  @classmethod
  def parse(cls, column: str, raw: Mapping[str, Any]) -> ColumnOptions:
    """Reads one column's settings.

    Raises:
      ConfigError: naming the column, for unknown keys or values.
    """
    def fail(message: str) -> errors.ConfigError:
      return errors.ConfigError(f"columns[{column!r}]: {message}")

    if not isinstance(raw, Mapping):
      raise fail(f"must be a mapping of settings, got {raw!r}.")
    unknown = sorted(set(raw) - set(OPTION_KEYS))
    if unknown:
      raise fail(f"unknown settings {unknown}; use {list(OPTION_KEYS)}.")
    vocabulary = raw.get("vocabulary")
    if vocabulary is not None:
      if not isinstance(vocabulary, (list, tuple)) or not vocabulary:
        raise fail("`vocabulary` must be a non-empty list of class names.")
      vocabulary = tuple(codecs_lib.class_name(name) for name in vocabulary)
      if len(set(vocabulary)) != len(vocabulary):
        raise fail("`vocabulary` lists a class name twice.")
    options = cls(
        type=raw.get("type"), array=raw.get("array"), numeric=raw.get("numeric"),
        temporal=raw.get("temporal"), nulls=raw.get("nulls"), default=raw.get("default"),
        impute=raw.get("impute"),
        categorical=bool(raw.get("categorical", False)) or vocabulary is not None,
        vocabulary=vocabulary, unknown=raw.get("unknown"), normalize=raw.get("normalize"),
        apply=bool(raw.get("apply", True)),
    )
    if options.type is not None:
      errors.check_choice(options.type, sql_types.KINDS, "type", fail)
    if options.impute is not None:
      errors.check_choice(options.impute, IMPUTE_STATISTICS, "impute", fail)
    if options.impute is not None and options.default is not None:
      raise fail("give either `default` (a constant) or `impute` (a statistic), not both.")
    if options.impute is not None and options.nulls not in (None, "default", "mask"):
      raise fail(f"`impute` fills NULLs, but nulls={options.nulls!r}; use 'default' or 'mask'.")
    if options.normalize is not None:
      errors.check_choice(options.normalize, NORMALIZATIONS, "normalize", fail)
    if options.normalize and options.categorical:
      raise fail("a column is either categorical or normalized, not both.")
    if options.unknown is not None and not options.categorical:
      raise fail("`unknown` only applies to categorical columns.")
    return options


@dataclasses.dataclass(frozen=True)
class Defaults:
  """Config-wide settings that columns inherit."""

  nulls: str = "error"
  numeric: str = "float64"
  temporal: str = "iso"


@dataclasses.dataclass(frozen=True)
class ColumnPlan:
  """A column's type and settings before the statistics are known.

  Attributes:
    nullable: False when the database guarantees no NULL (a NOT NULL table
      column read as is); True when it may hold one, or nobody can tell.
  """

  name: str
  sql_type: sql_types.SqlType
  options: ColumnOptions
  defaults: Defaults
  nullable: bool = True

  @property
  def null_action(self) -> str:
    if self.options.nulls:
      return self.options.nulls
    if self.options.impute or self.options.default is not None:
      return "default"
    if self.defaults.nulls == "mask" and not self.nullable:
      return "error"  # a config-wide mask would be always false here: no feature for it
    return self.defaults.nulls

  @property
  def classes_from_data(self) -> bool:
    """Whether the ClassLabel names are the distinct values, known only at build time."""
    return self.options.categorical and not self.options.vocabulary

  @property
  def fills_nulls(self) -> bool:
    """Whether a NULL is stored as a value (`default` or `impute`), not skipped, refused or a placeholder."""
    filled = self.options.default is not None or bool(self.options.impute)
    return filled and self.null_action in ("default", "mask")

  def codec(self, statistics: Mapping[str, Any] | None = None) -> codecs_lib.ColumnCodec:
    """The codec; without `statistics`, placeholders stand for SQL-computed values."""
    statistics = statistics or {}
    options = self.options
    class_names = None
    unknown_class = None
    if options.categorical:
      class_names = tuple(options.vocabulary or statistics.get("class_names", ()))
      if options.unknown not in (None, "error"):
        unknown_class = options.unknown
        if class_names and unknown_class not in class_names:
          class_names = (*class_names, unknown_class)
    affine = None
    if options.normalize and options.apply:
      affine = statistics.get("affine", (0.0, 1.0))
    default = options.default
    if options.impute:
      default = statistics.get("impute")
    if default is None and unknown_class is not None and self.null_action == "mask":
      default = unknown_class  # a masked NULL takes the unknown class, never a real one
    return codecs_lib.ColumnCodec(
        name=self.name,
        sql_type=self.sql_type,
        nulls=codecs_lib.NullPolicy(self.null_action, default),
        numeric=options.numeric or self.defaults.numeric,
        temporal=options.temporal or self.defaults.temporal,
        class_names=class_names,
        unknown_class=unknown_class,
        affine=affine,
    )

  def features(self) -> dict[str, tfds.features.FeatureConnector]:
    return self.codec().features()

  def needs_statistics(self) -> bool:
    options = self.options
    return bool(
        options.impute or options.normalize or (options.categorical and not options.vocabulary)
    )


def plan_columns(
    result: Sequence[sessions.ResultColumn],
    options_by_name: Mapping[str, Mapping[str, Any]],
    defaults: Defaults,
    cast_example: str,
    not_null: Collection[str] = (),
) -> list[ColumnPlan]:
  """Checks the result columns and applies the config's per-column settings.

  Args:
    result: The query's columns, as the database describes them.
    options_by_name: `BuilderConfig.columns`.
    defaults: The config-wide settings.
    cast_example: How to cast a column in this database's SQL.
    not_null: Columns the database guarantees to hold no NULL.

  Raises:
    ConfigError: for settings of a column the query does not return, or
      settings that do not suit the column's type.
    SchemaError: for duplicate or unusable column names, and unsupported types.
  """
  names = [column.name for column in result]
  unknown = sorted(set(options_by_name) - set(names))
  if unknown:
    raise errors.ConfigError(
        f"`columns` sets options for {unknown}, which the query does not return. "
        f"Its columns are {names}; fix the names or add them to the SELECT."
    )
  seen: set[str] = set()
  plans = []
  for column in result:
    if column.name in seen:
      raise errors.SchemaError(
          f"The query returns two columns named {column.name!r}. Give them "
          "distinct names with AS (feature names must be unique)."
      )
    seen.add(column.name)
    if not column.name or "/" in column.name:
      raise errors.SchemaError(
          f"Column name {column.name!r} cannot be a feature name (empty or holding "
          "'/'). Rename it in the query with AS."
      )
    options = ColumnOptions.parse(column.name, options_by_name.get(column.name, {}))
    sql_type = column.sql_type
    if options.type is not None:
      array = sql_type.array if sql_type is not None else False
      sql_type = sql_types.SqlType(
          options.type, array if options.array is None else bool(options.array),
          source=f"{column.type_name} as {options.type} (override)",
      )
    elif options.array is not None and sql_type is not None:
      sql_type = dataclasses.replace(sql_type, array=bool(options.array))
    if sql_type is None:
      raise codecs_lib.unsupported_type(
          column.name, column.type_name, cast_example.replace("column", column.name)
      )
    plan = ColumnPlan(column.name, sql_type, options, defaults, column.name not in not_null)
    _check_plan(plan)
    plans.append(plan)
  masks = {plan.name + codecs_lib.MASK_SUFFIX for plan in plans if plan.null_action == "mask"}
  clashes = sorted(masks & seen)
  if clashes:
    raise errors.SchemaError(
        f"NULL masks would add features {clashes}, which are also columns of the "
        "query. Rename those columns with AS."
    )
  return plans


def _check_plan(plan: ColumnPlan) -> None:
  options, kind, name = plan.options, plan.sql_type.kind, plan.name

  def fail(message: str) -> errors.ConfigError:
    return errors.ConfigError(f"columns[{name!r}]: {message}")

  if options.categorical and (kind not in _CATEGORICAL_KINDS or plan.sql_type.array):
    raise fail(
        f"categorical needs a scalar column of kind {_CATEGORICAL_KINDS}, but it "
        f"is {plan.sql_type.label()}. Cast it in the query."
    )
  numeric_only = options.normalize or options.impute == "mean"
  if numeric_only and (not codecs_lib.is_numeric_kind(kind) or plan.sql_type.array):
    what = f"normalize={options.normalize!r}" if options.normalize else "impute='mean'"
    raise fail(f"{what} needs a numeric column, but it is {plan.sql_type.label()}.")
  if options.impute == "mean" and kind == "int" and not (options.normalize and options.apply):
    raise fail(
        "the mean of an integer column is not an integer; use impute='median', "
        "'mode', 'min' or 'max', or set type='float64'."
    )
  if options.impute and plan.sql_type.array:
    raise fail("`impute` does not apply to array columns; use `default`.")
  if options.impute and kind == "json":
    raise fail(
        f"impute={options.impute!r} needs values that can be ordered and compared, "
        "and JSON cannot; cast the column to text in the query, or use `default`."
    )
  if options.impute is None:
    # Classes computed from the data are unknown yet: `finalize` checks the default.
    codecs_lib.check_codec(plan.codec(), check_default=not plan.classes_from_data)


# ------------------------------------------------------------ statistics --


def compute_statistics(
    session: sessions.ReadSession,
    plans: Sequence[ColumnPlan],
    sources: Sequence[queries.SplitSource],
    statistics_source: queries.SplitSource | None,
) -> dict[str, dict[str, Any]]:
  """Vocabularies (over all splits) and statistics (over the statistics split), in SQL.

  Only the rows the dataset stores count: rows that a `skip_row` column
  leaves out are left out of every statistic.

  Returns:
    Column name -> {"class_names", "affine", "impute", "record"}; "record"
    is what goes into the dataset's metadata.
  """
  required = [plan.name for plan in plans if plan.null_action == "skip_row"]
  found: dict[str, dict[str, Any]] = {}
  for plan in plans:
    if not plan.needs_statistics():
      continue
    options, record = plan.options, {}
    stats: dict[str, Any] = {"record": record}
    if options.categorical:
      if options.vocabulary:
        names = list(options.vocabulary)
        record["categorical"] = {"source": "vocabulary"}
      else:
        values: set[Any] = set()
        for source in sources:
          statement = queries.distinct_sql(session, source, plan.name, required)
          values.update(row[0] for row in session.fetch_all(statement))
        names = _sorted_names(values)
        record["categorical"] = {"source": f"distinct values of splits {[s.split for s in sources]}"}
      stats["class_names"] = tuple(names)
      record["categorical"]["names"] = list(plan.codec(stats).class_names)
      record["categorical"]["unknown"] = plan.codec(stats).unknown_class or "error"
    if options.normalize or options.impute:
      source = _require_statistics_source(plan, statistics_source)
      summary = _summary(session, plan, source, required)
      if options.impute:
        value = _imputed(session, plan, source, summary, required)
        stats["impute"] = value
        record["impute"] = {
            "statistic": options.impute, "value": json_value(value), "split": source.split,
        }
      if options.normalize:
        moments = _Moments.of(summary)
        if plan.fills_nulls:
          # The stored column is normalized, filled NULLs included: its statistics are theirs too.
          fill = stats["impute"] if options.impute else options.default
          moments = moments.with_constant(_number(plan, fill), summary["rows"] - summary["count"])
        stats["affine"], record["normalize"] = _normalization(plan, source.split, moments)
    found[plan.name] = stats
  return found


def _summary(session, plan: ColumnPlan, source, required: Sequence[str]) -> dict[str, Any]:
  """The aggregates the column's settings need (avg and stddev only for numbers)."""
  options = plan.options
  aggregates = ["rows", "count"]
  if options.normalize == "standard" or options.impute == "mean":
    aggregates.append("avg")
  if options.normalize == "standard":
    aggregates.append("stddev_pop")
  if options.normalize == "minmax":
    aggregates += ["min", "max"]
  statement = queries.summary_sql(session, source, plan.name, aggregates, required)
  summary = dict(zip(aggregates, session.fetch_all(statement)[0]))
  if not summary["count"]:
    raise errors.SourceError(
        f"Column {plan.name!r} has no non-NULL value in split {source.split!r}, "
        "so its statistics are undefined. Check the query, or drop the "
        "normalize/impute settings."
    )
  return summary


@dataclasses.dataclass(frozen=True)
class _Moments:
  """Population statistics of a numeric column (None where not computed)."""

  count: int
  mean: float | None
  std: float | None
  low: float | None
  high: float | None

  @classmethod
  def of(cls, summary: Mapping[str, Any]) -> _Moments:
    number = lambda name: None if summary.get(name) is None else float(summary[name])
    return cls(summary["count"], number("avg"), number("stddev_pop"), number("min"), number("max"))

  def with_constant(self, value: float, times: int) -> _Moments:
    """The statistics after `times` more values equal to `value` (Chan et al.'s update)."""
    if not times:
      return self
    total = self.count + times
    mean = std = None
    if self.mean is not None:
      mean = (self.count * self.mean + times * value) / total
    if self.std is not None:
      squares = (self.count * (self.std**2 + (self.mean - mean) ** 2)
                 + times * (value - mean) ** 2)
      std = math.sqrt(squares / total)
    low = None if self.low is None else min(self.low, value)
    high = None if self.high is None else max(self.high, value)
    return _Moments(total, mean, std, low, high)


def _number(plan: ColumnPlan, value: Any) -> float:
  return codecs_lib.finite_or_fail(plan.name, "NULL fill value", value)


def _require_statistics_source(plan: ColumnPlan, source: queries.SplitSource | None):
  if source is None:
    raise errors.ConfigError(
        f"columns[{plan.name!r}] needs statistics of the training split, but no "
        "split is named like `statistics_split`. Set `statistics_split` to one "
        "of the split names."
    )
  return source


def _normalization(plan: ColumnPlan, split: str, moments: _Moments) -> tuple[tuple[float, float], dict]:
  method = plan.options.normalize
  name = plan.name
  if method == "standard":
    shift = codecs_lib.finite_or_fail(name, "mean", moments.mean)
    scale = codecs_lib.finite_or_fail(name, "standard deviation", moments.std)
    record = {"method": "standard", "mean": shift, "std": scale}
  else:
    shift = codecs_lib.finite_or_fail(name, "minimum", moments.low)
    scale = codecs_lib.finite_or_fail(name, "maximum", moments.high) - shift
    record = {"method": "minmax", "min": shift, "max": shift + scale}
  record.update(split=split, applied=plan.options.apply, count=moments.count)
  if plan.options.apply and scale == 0:
    raise errors.SchemaError(
        f"Column {name!r} is constant in split {split!r} ({shift}), so "
        f"normalize={method!r} would divide by zero. Drop `normalize`, or set "
        "apply=false to only record the statistics."
    )
  if plan.options.apply:
    record["formula"] = f"({name} - {shift!r}) / {scale!r}, stored as float32"
  return (shift, scale), record


def _imputed(session, plan: ColumnPlan, source, summary: Mapping[str, Any], required) -> Any:
  """The statistic that fills NULLs, computed over the non-NULL values."""
  statistic = plan.options.impute
  if statistic == "mean":
    return float(summary["avg"])
  text = plan.options.type is None and plan.sql_type.source in sql_types.POSTGRES_TEXT_TYPES
  key = queries.sort_key(session, plan.name, plain_text=text)
  if statistic == "mode":
    statement = queries.mode_sql(session, source, plan.name, key, required)
  else:
    # median: percentile_disc(0.5), the lower middle value, the same on every engine.
    offset = (summary["count"] - 1) // 2 if statistic == "median" else 0
    statement = queries.ordered_value_sql(
        session, source, plan.name, key, offset, descending=statistic == "max", required=required,
    )
  return session.fetch_all(statement)[0][0]


def _sorted_names(values: set[Any]) -> list[str]:
  numbers = sorted(value for value in values if isinstance(value, int) and not isinstance(value, bool))
  others = sorted(codecs_lib.class_name(value) for value in values if value not in numbers)
  return [str(number) for number in numbers] + others


def json_value(value: Any) -> Any:
  """A statistic or key value as JSON for the metadata."""
  if isinstance(value, (bytes, memoryview)):
    return bytes(value).decode("utf-8", errors="replace")
  if isinstance(value, decimal.Decimal):
    return str(value)
  if isinstance(value, (datetime.date, datetime.time)):
    return value.isoformat()
  return value


def finalize(
    plans: Sequence[ColumnPlan], statistics: Mapping[str, Mapping[str, Any]]
) -> list[codecs_lib.ColumnCodec]:
  """The codecs with vocabularies, normalization and imputed values in place."""
  codecs = []
  for plan in plans:
    codec = plan.codec(statistics.get(plan.name))
    codecs_lib.check_codec(codec)
    codecs.append(codec)
  return codecs
