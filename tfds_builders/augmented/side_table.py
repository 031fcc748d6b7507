"""Side tables joined on a key: CSV or Parquet files (or SQL rows), held in memory as key -> row."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
from collections.abc import Mapping, Sequence
from typing import Any

from etils import epath
import numpy as np

from tfds_builders.augmented import csv_grammar
from tfds_builders.augmented import fields
from tfds_builders.core import errors
from tfds_builders.core import fast
from tfds_builders.core import paths
from tfds_builders.core import tensor_codecs
from tfds_builders.core.sql import connection as sql_connection
from tfds_builders.core.sql import drivers
from tfds_builders.core.sql import statements
from tfds_builders.core.sql import types as sql_types
from tfds_builders.core.sql import values as sql_values

FORMATS = ("auto", "csv", "parquet")
INT_KEY = "int64_list"
# A join key's row when the table has none.
NO_ROW = -1
_TRUE = frozenset(("true", "t", "yes", "1"))
_FALSE = frozenset(("false", "f", "no", "0"))
JoinKey = int | bytes
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


@dataclasses.dataclass(frozen=True)
class SideTable:
  """A side table's rows, found by join key, and the features of its columns.

  Attributes:
    source: What was read, for messages and provenance (a path or `SQL query`).
    key_column: The column holding the join key.
    specs: One FieldSpec per added column, in column order.
    index: Finds the rows of join keys.
    entries: Per row, its added values serialized once as the map entries of
      a tf.train.Example (checked against `specs` on the way).
    sha256: Digest of the file's bytes (None for SQL).
    key_dtype: For a base storing its integer key as raw bytes (a
      `Tensor(encoding="bytes")`), that dtype (e.g. `<i8`): the index then
      holds each key's raw bytes. None otherwise.
  """

  source: str
  key_column: str
  specs: tuple[fields.FieldSpec, ...]
  index: KeyIndex
  entries: fast.record_blocks.ByteColumn
  sha256: str | None = None
  key_dtype: str | None = None

  def __len__(self) -> int:
    return len(self.entries)

  def encode(self, values: Sequence[Any]) -> bytes:
    """One row's values (in `specs` order) as map entries, like `entries` holds.

    Raises:
      FieldValueError: if a value does not fit its column's feature.
    """
    return b"".join(
        part for spec, value in zip(self.specs, values) for part in fields.FieldCodec(spec).encode(value)
    )

  def show_key(self, key: Any) -> str:
    """A join key as the base's record holds it, shown as the user wrote it."""
    if self.key_dtype and isinstance(key, bytes) and len(key) == np.dtype(self.key_dtype).itemsize:
      return repr(int(np.frombuffer(key, self.key_dtype)[0]))
    return show_key(key)

  def provenance(self) -> dict[str, Any]:
    return {"source": self.source, "key_column": self.key_column, "rows": len(self),
            "columns": [spec.name for spec in self.specs], "sha256": self.sha256}


class KeyIndex:
  """Row numbers of join keys: a table for dense int keys, binary search for sparse ones, a dict for strings."""

  def __init__(self, keys: np.ndarray | Sequence[bytes]):
    self._rows: dict[bytes, int] | None = None
    self._dense: np.ndarray | None = None
    if not isinstance(keys, np.ndarray):
      self._rows = {key: row for row, key in enumerate(keys)}
      self._count = len(self._rows)
      return
    self._low = int(keys.min()) if len(keys) else 0
    span = int(keys.max()) - self._low + 1 if len(keys) else 0
    if span <= 4 * len(keys) + 4096:
      self._dense = np.full(span, -1, np.int64)
      self._dense[keys - self._low] = np.arange(len(keys))
      self._count = int(np.count_nonzero(self._dense >= 0))
    else:
      self._order = np.argsort(keys, kind="stable")
      self._sorted = keys[self._order]
      self._count = int(np.count_nonzero(np.diff(self._sorted))) + 1

  def __len__(self) -> int:
    """The number of distinct keys."""
    return self._count

  def first(self) -> JoinKey | None:
    """A key of the table (the first string, the smallest integer), for messages."""
    if self._rows is not None:
      return next(iter(self._rows), None)
    if self._dense is not None:
      present = np.flatnonzero(self._dense >= 0)
      return self._low + int(present[0]) if len(present) else None
    return int(self._sorted[0]) if len(self._sorted) else None

  def rows(self, keys: np.ndarray | Sequence[bytes]) -> np.ndarray:
    """Each key's row number, -1 where the table has none."""
    if self._rows is not None:
      return np.fromiter((self._rows.get(key, -1) for key in keys), np.int64, len(keys))
    keys = np.asarray(keys, np.int64)
    if self._dense is not None:
      inside = (keys >= self._low) & (keys < self._low + len(self._dense))
      return np.where(inside, self._dense[np.where(inside, keys - self._low, 0)], -1)
    at = np.minimum(np.searchsorted(self._sorted, keys), len(self._sorted) - 1)
    return np.where(self._sorted[at] == keys, self._order[at], -1)


def read_file(
    path: epath.Path,
    *,
    table_format: str,
    key_column: str,
    columns: Sequence[str],
    key_kind: str,
    declared: Mapping[str, fields.FieldSpec],
    key_dtype: str | None = None,
) -> SideTable:
  """Reads a CSV or Parquet side table whole (it is the small side of the join).

  Args:
    path: The file.
    table_format: `auto` (by extension), `csv` or `parquet`.
    key_column: Column matched against the base's join key.
    columns: Columns to add (default: every column but the key).
    key_kind: `int64_list` or `bytes_list`: how the base stores the key.
    declared: Declared features of some columns; the others are inferred.
    key_dtype: The integer dtype of a key the base stores as raw bytes
      (`raw_key_dtype`); the table's keys are then integers of that dtype.

  Raises:
    SourceError: for a missing file, a missing column, a bad or duplicate key,
      an empty or null cell that cannot be stored.
  """
  if not path.exists():
    raise errors.SourceError(
        errors.with_hint(f"Side table {path} does not exist", "Check side_table (relative paths start at data_root)")
    )
  table_format = _format_of(path, table_format)
  data = path.read_bytes()
  source = str(path)
  sha256 = hashlib.sha256(data).hexdigest()
  table = _columnar(data, source, table_format, key_column, columns, key_kind, declared, sha256, key_dtype)
  if table is not None:
    return table
  if table_format == "csv":
    header, lines, records = _csv_records(data, source)
  else:
    header, lines, records = _parquet_records(data, source)
  return build(
      source=source, header=header, lines=lines, records=records, key_column=key_column,
      columns=columns, key_kind=key_kind, declared=declared, typed=table_format == "parquet",
      sha256=sha256, key_dtype=key_dtype,
  )


def read_query(
    query: str,
    connection: Mapping[str, Any],
    *,
    key_column: str,
    columns: Sequence[str],
    key_kind: str,
    declared: Mapping[str, fields.FieldSpec],
    root: str | None,
    key_dtype: str | None = None,
) -> SideTable:
  """Reads a SQL query's rows whole, through the database builder's connection code.

  Args:
    query: A read-only SELECT.
    connection: `core.sql.connection.ConnectionSpec` fields, e.g.
      `{"driver": "postgresql", "dsn_env": "MY_DSN"}` or
      `{"driver": "sqlite", "sqlite_path": "labels.db"}`.
    key_column: Column matched against the base's join key.
    columns: Columns to add (default: every column but the key).
    key_kind: How the base stores the key.
    declared: Declared features of some columns.
    root: Directory a relative `sqlite_path` is taken from.
    key_dtype: The integer dtype of a key the base stores as raw bytes.

  Raises:
    ConfigError: for an unknown connection field.
    SourceError: if the database cannot be read (password redacted).
  """
  settings = dict(connection)
  if settings.get("sqlite_path"):
    settings["sqlite_path"] = str(paths.resolve(settings["sqlite_path"], root))
  try:
    spec = sql_connection.ConnectionSpec(**settings)
  except TypeError as error:
    raise errors.ConfigError(
        f"side_table_connection {sorted(connection)}: {error}. Give the fields of "
        "ConnectionSpec: driver, dsn or dsn_env (PostgreSQL), sqlite_path (SQLite)."
    ) from None
  statement = statements.Statement(query, None, user_query=query, field="side_table_sql")
  with drivers.open_session(spec) as session:
    try:
      result = session.result_columns(statement)
    except sql_types.UntypedColumnError as error:
      # Declared `features` do not help here: the column is typed before they apply.
      raise errors.SchemaError(errors.with_hint(
          str(error), f"Cast it in the query, e.g. {error.cast_example}.")) from None
    header = [column.name for column in result]
    # Numeric and date/time columns are stored as the database builder stores them by default
    # (float64, ISO text): one column type, one feature in both builders.
    convert = {
        index: sql_values.converter(column.sql_type.kind) for index, column in enumerate(result)
        if column.name not in declared and column.sql_type is not None and not column.sql_type.array
        and column.sql_type.kind in ("numeric", *sql_values.TEMPORAL_KINDS)
    }
    records = []
    for row in session.rows(statement, label="the side-table query"):
      record = [bytes(value) if isinstance(value, memoryview) else value for value in row]
      for index, to_stored in convert.items():
        if record[index] is not None:
          try:
            record[index] = to_stored(record[index])
          except (TypeError, ValueError) as error:
            raise errors.SchemaError(
                f"Side table SQL query on {spec.where()}: row {len(records)}, column {header[index]!r} "
                f"({result[index].type_name}) holds {record[index]!r}: {error}. Cast it in the query, "
                "or declare its feature in `features`."
            ) from None
      records.append(tuple(record))
  return build(
      source=f"SQL query on {spec.where()}", header=header,
      lines=[f"row {index}" for index in range(len(records))], records=records,
      key_column=key_column, columns=columns, key_kind=key_kind, declared=declared, typed=True,
      key_dtype=key_dtype,
  )


def build(
    *,
    source: str,
    header: Sequence[str],
    lines: Sequence[str],
    records: Sequence[Sequence[Any]],
    key_column: str,
    columns: Sequence[str],
    key_kind: str,
    declared: Mapping[str, fields.FieldSpec],
    typed: bool,
    sha256: str | None = None,
    key_dtype: str | None = None,
) -> SideTable:
  """A SideTable from rows already read (CSV text cells, or typed values).

  Args:
    source: What was read, for messages.
    header: Column names.
    lines: Where each row is (e.g. `line 3`), for messages.
    records: The rows, values in header order.
    key_column: The join key column.
    columns: Columns to add (default: all but the key).
    key_kind: How the base stores the key.
    declared: Declared features of some columns.
    typed: Whether values are typed (Parquet, SQL) rather than CSV text.
    sha256: Digest of the source, for provenance.
    key_dtype: The integer dtype of a key the base stores as raw bytes.
  """
  if key_dtype:  # integer keys, range-checked, then matched as the base's raw bytes
    key_kind = INT_KEY
  if key_column not in header:
    raise errors.ConfigError(
        errors.with_hint(
            f"Side table {source} has no key column {key_column!r}; its columns are {list(header)}",
            "Set side_table_key to the column holding the join key",
        )
    )
  added = list(columns) or [name for name in header if name != key_column]
  missing = [name for name in added if name not in header]
  if missing:
    raise errors.ConfigError(
        f"Side table {source} has no column(s) {missing}; its columns are {list(header)}. "
        "Fix side_table_columns."
    )
  if not added:
    raise errors.ConfigError(f"Side table {source} has no column besides the key {key_column!r} to add.")
  listed_twice = sorted({name for name in columns if list(columns).count(name) > 1})
  if listed_twice:
    raise errors.ConfigError(f"side_table_columns lists {listed_twice} more than once. List each column once.")
  # A name given to two columns would become two features of one name: which one is meant is unknowable.
  ambiguous = sorted({name for name in [key_column, *added] if list(header).count(name) > 1})
  if ambiguous:
    remedy = "Rename the columns so that each name is unique"
    raise errors.SourceError(
        errors.with_hint(
            f"Side table {source} has column(s) {ambiguous} more than once; its columns are {list(header)}",
            remedy if columns else f"{remedy}, or pick others with side_table_columns",
        )
    )
  if not records:
    raise errors.SourceError(f"Side table {source} has no rows. Give it at least one row.")
  key_at = list(header).index(key_column)
  positions = [list(header).index(name) for name in added]
  specs = []
  columns_values = []
  for name, position in zip(added, positions):
    cells = [record[position] for record in records]
    spec = declared.get(name)
    values = None
    if spec is None and typed:
      spec = _infer_typed(name, cells, lines, source)
    elif spec is None:
      spec, values = _infer_text(name, cells, source)
    columns_values.append(values if values is not None else _convert_column(spec, cells, lines, source, typed))
    specs.append(spec)
  codecs = [fields.FieldCodec(spec) for spec in specs]
  key_cells = [record[key_at] for record in records]
  rows = _rows_at_once(codecs, columns_values, key_cells, key_kind)
  if rows is None:  # some row is wrong: find and name the first, row by row
    rows = _rows_one_by_one(codecs, columns_values, key_cells, key_kind, key_column, lines, source)
  keys = list(rows)
  if key_dtype:
    _check_key_range(keys, key_dtype, key_cells, key_column, lines, source)
  return SideTable(
      source, key_column, tuple(specs),
      KeyIndex(raw_keys(keys, key_dtype) if key_dtype else np.array(keys, np.int64) if key_kind == INT_KEY else keys),
      fast.record_blocks.ByteColumn.from_items(list(rows.values())), sha256, key_dtype,
  )


def raw_key_dtype(dtype: Any) -> str:
  """The dtype (as `np.dtype.str`) whose raw bytes TFDS stores for an integer `Tensor(encoding="bytes")`."""
  # TFDS decodes those bytes as little-endian (tf.io.decode_raw's default), as numpy_arrays writes them.
  return np.dtype(dtype).newbyteorder("<").str


def raw_keys(keys: Sequence[int] | np.ndarray, key_dtype: str) -> list[bytes]:
  """Integer keys (already in the dtype's range) as the raw bytes a base stores them."""
  width = np.dtype(key_dtype).itemsize
  data = np.asarray(keys, np.int64).astype(key_dtype).tobytes()
  return [data[at:at + width] for at in range(0, len(data), width)]


def _out_of_range(keys: np.ndarray, key_dtype: str) -> np.ndarray:
  """Where int64 keys do not fit the integer dtype."""
  info = np.iinfo(np.dtype(key_dtype))
  return (keys < max(info.min, _INT64_MIN)) | (keys > min(info.max, _INT64_MAX))


def _check_key_range(
    keys: Sequence[int], key_dtype: str, key_cells: Sequence[Any], key_column: str, lines: Sequence[str], source: str,
) -> None:
  """Raises SchemaError naming the first row whose key the base's dtype cannot hold."""
  outside = np.flatnonzero(_out_of_range(np.array(keys, np.int64), key_dtype))
  if not len(outside):
    return
  bad = keys[int(outside[0])]
  # rows keeps the first row of each (unique) key in order: find that key's row among the cells.
  index = next(i for i, cell in enumerate(key_cells) if _key(cell, INT_KEY, key_column, lines[i], source) == bad)
  info = np.iinfo(np.dtype(key_dtype))
  raise errors.SchemaError(
      errors.with_hint(
          f"Side table {source}: {lines[index]}: join key {bad} in column {key_column!r} is outside "
          f"[{info.min}, {info.max}], the range of the base's {np.dtype(key_dtype).name} join key",
          "Fix or drop the row: no base example can have that key",
      )
  )


def _rows_at_once(
    codecs: Sequence[fields.FieldCodec], columns_values: Sequence[Sequence[Any]], key_cells: Sequence[Any], key_kind: str,
) -> dict[JoinKey, bytes] | None:
  """`rows` built column by column (few Python calls per row); None if any row is wrong."""
  keys = _plain_keys(key_cells, key_kind)
  if keys is None:
    return None
  try:
    columns_entries = [[b"".join(codec.encode(value)) for value in values] for codec, values in zip(codecs, columns_values)]
  except fields.FieldValueError:
    return None
  entries = columns_entries[0] if len(columns_entries) == 1 else list(map(b"".join, zip(*columns_entries)))
  rows = dict(zip(keys, entries))
  return rows if len(rows) == len(keys) else None  # else a duplicate key


def _plain_keys(key_cells: Sequence[Any], key_kind: str) -> list[JoinKey] | None:
  """Keys as `_key` gives them, or None where `_key` may differ or refuse one."""
  # pylint: disable=unidiomatic-typecheck  # bool is an int, numpy scalars are not: both go to _key
  wanted = int if key_kind == INT_KEY else bytes
  if all(type(cell) is wanted for cell in key_cells):  # typed keys (Parquet, SQL), as they are
    keys = list(key_cells)
  elif not all(type(cell) is str for cell in key_cells):
    return None
  elif key_kind == INT_KEY:
    try:
      keys = list(map(int, key_cells))  # fails on "" as _key does
    except ValueError:
      return None
  else:
    return None if "" in key_cells else [cell.encode("utf-8") for cell in key_cells]
  if key_kind == INT_KEY and keys and not (_INT64_MIN <= min(keys) and max(keys) <= _INT64_MAX):
    return None
  return keys


def _rows_one_by_one(
    codecs: Sequence[fields.FieldCodec], columns_values: Sequence[Sequence[Any]], key_cells: Sequence[Any],
    key_kind: str, key_column: str, lines: Sequence[str], source: str,
) -> dict[JoinKey, bytes]:
  """`rows`, raising for the first row with a bad or duplicate key or a value that does not fit."""
  rows: dict[JoinKey, bytes] = {}
  first_line: dict[JoinKey, str] = {}
  for index, key_cell in enumerate(key_cells):
    key = _key(key_cell, key_kind, key_column, lines[index], source)
    if key in rows:
      raise errors.SourceError(
          errors.with_hint(
              f"Side table {source} has join key {show_key(key)} twice ({first_line[key]} and {lines[index]})",
              "Join keys must be unique: remove or merge the duplicate rows",
          )
      )
    parts = []
    for codec, values in zip(codecs, columns_values):
      try:
        parts += codec.encode(values[index])
      except fields.FieldValueError as error:
        raise errors.SchemaError(
            f"Side table {source}: {lines[index]}, column {codec.spec.name!r}: {error}. "
            f"{fields.hint_for(codec.spec)}."
        ) from None
    rows[key] = b"".join(parts)
    first_line[key] = lines[index]
  return rows


# ------------------------------------------------------------ columnar --
#
# A CSV or Parquet table read by pyarrow and encoded a column at a time. It
# takes only tables whose every cell it reads as the row-by-row path would
# (`build`); anything else (quoted CSV, nulls, odd number formats, bad or
# duplicate keys, values that do not fit) goes to that path, which decides
# and names the row.

_UTF8_BOM = b"\xef\xbb\xbf"


def _columnar(
    data: bytes, source: str, table_format: str, key_column: str, columns: Sequence[str],
    key_kind: str, declared: Mapping[str, fields.FieldSpec], sha256: str, key_dtype: str | None = None,
) -> SideTable | None:
  """The side table read column by column, or None where `build` must read it row by row."""
  typed = table_format == "parquet"
  table = _parquet_table(data) if typed else _csv_table(data, source)
  if table is None or table.num_rows == 0:
    return None
  header = table.column_names
  added = list(columns) or [name for name in header if name != key_column]
  if (len(set(header)) != len(header) or len(set(added)) != len(added) or key_column not in header or not added
      or not set(added) <= set(header)):
    return None
  keys = _columnar_keys(table.column(key_column), INT_KEY if key_dtype else key_kind, typed)
  if keys is None:
    return None
  if key_dtype:
    if _out_of_range(keys, key_dtype).any():
      return None  # build names the row
    keys = raw_keys(keys, key_dtype)
  index = KeyIndex(keys)
  if len(index) != table.num_rows:  # a duplicate key
    return None
  specs, entries = [], []
  for name in added:
    encoded = _columnar_field(name, table.column(name), declared.get(name), typed, source)
    if encoded is None:
      return None
    specs.append(encoded[0])
    entries.append(encoded[1])
  return SideTable(source, key_column, tuple(specs), index, fast.record_blocks.joined_rows(entries), sha256, key_dtype)


def _csv_table(data: bytes, source: str) -> Any:
  """All cells as strings, or None for CSV that Python's csv module must read (quotes, lone CRs, NULs)."""
  import pyarrow as pa  # pylint: disable=g-import-not-at-top
  from pyarrow import csv as pa_csv  # pylint: disable=g-import-not-at-top

  data = data[len(_UTF8_BOM):] if data.startswith(_UTF8_BOM) else data
  if b'"' in data or b"\0" in data or (b"\r" in data and data.count(b"\r") != data.count(b"\r\n")):
    return None
  delimiter = "\t" if source.lower().endswith(".tsv") else ","
  first_line = data[:data.find(b"\n")] if b"\n" in data else data
  try:
    header = [name.strip() for name in first_line.rstrip(b"\r").decode("utf-8").split(delimiter)]
    names = [f"c{i}" for i in range(len(header))]
    table = pa_csv.read_csv(
        pa.py_buffer(data),
        read_options=pa_csv.ReadOptions(column_names=names, skip_rows=1),
        parse_options=pa_csv.ParseOptions(delimiter=delimiter, quote_char=False),
        convert_options=pa_csv.ConvertOptions(column_types=dict.fromkeys(names, pa.string()), strings_can_be_null=False),
    )
  except (UnicodeDecodeError, pa.ArrowException):
    return None
  return table.rename_columns(header)


def _parquet_table(data: bytes) -> Any:
  try:
    import pyarrow as pa  # pylint: disable=g-import-not-at-top
    import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top
    return pq.read_table(pa.BufferReader(data))
  except Exception:  # pylint: disable=broad-except  # the row-by-row path names the problem
    return None


def _columnar_keys(column: Any, key_kind: str, typed: bool) -> np.ndarray | list[bytes] | None:
  import pyarrow as pa  # pylint: disable=g-import-not-at-top

  if column.null_count:
    return None
  if key_kind == INT_KEY:
    if typed and not pa.types.is_integer(column.type):
      return None
    if not typed and (csv_grammar.number_forms(_byte_column(column)) != csv_grammar.INTEGER).any():
      return None
    try:
      return column.cast(pa.int64()).to_numpy()
    except pa.ArrowException:  # out of the int64 range
      return None
  if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)
          or (typed and (pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type)))):
    return None
  keys = _byte_column(column).items()
  return None if b"" in keys else keys


def _columnar_field(
    name: str, column: Any, spec: fields.FieldSpec | None, typed: bool, source: str
) -> tuple[fields.FieldSpec, fast.record_blocks.ByteColumn] | None:
  """A column's spec and map entries, as the row-by-row path would make them; or None."""
  import pyarrow as pa  # pylint: disable=g-import-not-at-top

  if column.null_count:
    return None
  arrow_type = column.type
  is_text = pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type)
  if typed:
    if is_text or pa.types.is_binary(arrow_type) or pa.types.is_large_binary(arrow_type):
      values = _byte_column(column)
    elif pa.types.is_integer(arrow_type) or pa.types.is_floating(arrow_type) or pa.types.is_boolean(arrow_type):
      values = column.to_numpy()
    else:
      return None
    if spec is None:
      sample = _arrow_column(column.slice(0, 100), name, source)
      spec = _infer_typed(name, sample, [f"row {index}" for index in range(len(sample))], source)
  else:
    texts = _byte_column(column)
    forms = csv_grammar.number_forms(texts)
    spec = spec or _infer_text_spec(name, texts, forms, source)
    values = None if spec is None else _text_values(column, texts, forms, spec)
  if spec is None or values is None:
    return None
  try:
    entries = fields.FieldCodec(spec).encode_column(values)
  except fields.FieldValueError:
    return None
  return None if entries is None else (spec, entries)


def _infer_text_spec(
    name: str, texts: fast.record_blocks.ByteColumn, forms: np.ndarray, source: str
) -> fields.FieldSpec | None:
  """`_infer_text`'s spec, or None where only Python's int() and float() can tell."""

  where = f"side table {source}"
  for dtype, parse, odd in (("int64", int, forms != csv_grammar.INTEGER),
                            ("float64", float, forms == csv_grammar.NOT_A_NUMBER)):
    if not odd.any():
      return fields.FieldSpec(name, dtype, (), where)
    cells = (texts.item(i).decode("utf-8") for i in np.flatnonzero(odd))  # the first usually decides
    if all(_parses(parse, cell) for cell in cells):
      return None  # numbers in a form taken here only by Python (" 1", "1_000", "inf")
  return fields.FieldSpec(name, tensor_codecs.STRING, (), where)


def _parses(parse: Any, cell: str) -> bool:
  try:
    parse(cell)
    return True
  except ValueError:
    return False


def _text_values(
    column: Any, texts: fast.record_blocks.ByteColumn, forms: np.ndarray, spec: fields.FieldSpec
) -> np.ndarray | fast.record_blocks.ByteColumn | None:
  """CSV cells as the spec's values, where their form shows Python would parse them the same."""
  import pyarrow as pa  # pylint: disable=g-import-not-at-top

  if spec.shape != ():
    return None
  if spec.dtype == tensor_codecs.STRING:
    return texts
  if spec.dtype == "bool":
    return None
  integer = spec.dtype.startswith(("int", "uint"))
  if (forms != csv_grammar.INTEGER).any() if integer else (forms == csv_grammar.NOT_A_NUMBER).any():
    return None
  try:
    return column.cast(pa.int64() if integer else pa.float64()).to_numpy()
  except pa.ArrowException:  # out of the int64 range
    return None


def _byte_column(column: Any) -> fast.record_blocks.ByteColumn:
  """A string or binary Arrow column's values, without copying them one by one."""
  import pyarrow as pa  # pylint: disable=g-import-not-at-top

  array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
  large = pa.types.is_large_string(array.type) or pa.types.is_large_binary(array.type)
  _, offsets_buffer, data_buffer = array.buffers()
  offsets = np.frombuffer(offsets_buffer, np.int64 if large else np.int32)[array.offset:array.offset + len(array) + 1]
  offsets = offsets.astype(np.int64)
  data = np.frombuffer(data_buffer, np.uint8) if data_buffer is not None else np.zeros(0, np.uint8)
  return fast.record_blocks.ByteColumn(data[offsets[0]:offsets[-1]], offsets - offsets[0])


def show_key(key: Any) -> str:
  """A join key as it appears in messages."""
  if isinstance(key, np.generic):
    key = key.item()
  if isinstance(key, bytes):
    try:
      return repr(key.decode("utf-8"))
    except UnicodeDecodeError:
      return repr(key)
  return repr(key)


def _format_of(path: epath.Path, table_format: str) -> str:
  errors.check_choice(table_format, FORMATS, "side_table_format")
  if table_format != "auto":
    return table_format
  suffix = path.suffix.lower()
  if suffix in (".parquet", ".pq"):
    return "parquet"
  if suffix in (".csv", ".tsv", ".txt"):
    return "csv"
  raise errors.ConfigError(
      f"Cannot tell the format of side table {path} from its extension; set side_table_format to 'csv' or 'parquet'."
  )


def _csv_records(data: bytes, source: str) -> tuple[list[str], list[str], list[list[str]]]:
  try:
    text = data.decode("utf-8-sig")
  except UnicodeDecodeError as error:
    raise errors.SourceError(f"Side table {source} is not UTF-8 text ({error}). Save it as UTF-8 CSV.") from error
  dialect = "excel-tab" if source.lower().endswith(".tsv") else "excel"
  # The csv module refuses cells over 128 KiB (a guard for unbounded streams), which pyarrow's
  # path reads: the whole text is in memory already, so a cell may be as long as the text.
  # Only ever raised, so a concurrent reader never sees the limit drop under it.
  if csv.field_size_limit() < len(text):
    csv.field_size_limit(len(text))
  reader = csv.reader(io.StringIO(text, newline=""), dialect=dialect)
  header = next(reader, None)
  if not header:
    raise errors.SourceError(f"Side table {source} is empty; it needs a header row and data rows.")
  header = [name.strip() for name in header]
  lines, records = [], []
  for record in reader:
    if not record:
      continue  # blank line
    if len(record) != len(header):
      raise errors.SourceError(
          f"Side table {source}: line {reader.line_num} has {len(record)} cells, the header has {len(header)}. "
          "Fix the row (quote cells that contain the delimiter)."
      )
    lines.append(f"line {reader.line_num}")
    records.append(record)
  return header, lines, records


def _parquet_records(data: bytes, source: str) -> tuple[list[str], list[str], list[tuple[Any, ...]]]:
  try:
    import pyarrow as pa  # pylint: disable=g-import-not-at-top
    import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top
  except ImportError as error:
    raise errors.ConfigError(f"Reading Parquet side table {source} needs pyarrow: pip install pyarrow.") from error
  try:
    table = pq.read_table(pa.BufferReader(data))
  except (pa.ArrowException, OSError) as error:
    raise errors.SourceError(f"Side table {source} is not a readable Parquet file ({error}).") from error
  header = list(table.column_names)
  columns = [_arrow_column(table.column(name), name, source) for name in header]
  records = list(zip(*columns)) if columns else []
  return header, [f"row {index}" for index in range(len(records))], records


def _arrow_column(column: Any, name: str, source: str) -> list[Any]:
  import pyarrow as pa  # pylint: disable=g-import-not-at-top

  arrow_type = column.type
  value_type = arrow_type.value_type if pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type) else arrow_type
  if not (pa.types.is_integer(value_type) or pa.types.is_floating(value_type)
          or pa.types.is_boolean(value_type) or pa.types.is_string(value_type)
          or pa.types.is_large_string(value_type) or pa.types.is_binary(value_type)
          or pa.types.is_large_binary(value_type)):
    raise errors.SchemaError(
        f"Side table {source}: column {name!r} has Arrow type {arrow_type}, which has no "
        "feature here. Cast it to a number, bool or string column (e.g. timestamps to int64)."
    )
  values = column.to_pylist()
  if value_type != arrow_type:  # list column: arrays of the element type
    dtype = None if pa.types.is_string(value_type) or pa.types.is_binary(value_type) else value_type.to_pandas_dtype()
    return [None if value is None else np.asarray(value, dtype=dtype or object) for value in values]
  if pa.types.is_integer(arrow_type) or pa.types.is_floating(arrow_type):
    dtype = np.dtype(arrow_type.to_pandas_dtype())
    return [None if value is None else dtype.type(value) for value in values]
  return values


def _infer_text(name: str, cells: Sequence[str], source: str) -> tuple[fields.FieldSpec, list[Any]]:
  """int64 if every cell is an integer, float64 if every cell is a number, else string; and the values."""
  where = f"side table {source}"
  for dtype, parse in (("int64", int), ("float64", float)):
    try:
      return fields.FieldSpec(name, dtype, (), where), list(map(parse, cells))
    except ValueError:
      pass
  return fields.FieldSpec(name, tensor_codecs.STRING, (), where), list(cells)


def _infer_typed(name: str, cells: Sequence[Any], lines: Sequence[str], source: str) -> fields.FieldSpec:
  present = [(cell, line) for cell, line in zip(cells, lines) if cell is not None]
  if not present:
    raise errors.SchemaError(
        f"Side table {source}: column {name!r} holds only nulls; its type cannot be "
        "inferred. Declare it in `features`, or leave the column out."
    )
  sample = present[:100]
  return fields.infer(name, [cell for cell, _ in sample], f"side table {source}", [line for _, line in sample])


def _convert_column(
    spec: fields.FieldSpec, cells: Sequence[Any], lines: Sequence[str], source: str, typed: bool
) -> list[Any]:
  """The column's values as Python values (CSV text parsed by the feature's dtype)."""
  values = []
  for cell, line in zip(cells, lines):
    if cell is None or (not typed and cell == "" and spec.dtype != tensor_codecs.STRING):
      raise errors.SourceError(
          errors.with_hint(
              f"Side table {source}: {line}, column {spec.name!r} is empty",
              "Fill the cell, drop the row (missing_policy decides what happens to "
              "its base example), or leave the column out",
          )
      )
    value = cell if typed else _from_text(cell, spec, line, source)
    if isinstance(value, np.generic):
      value = value.item()  # Python scalars take the encoders' fast paths
    values.append(value)
  return values


def _from_text(cell: str, spec: fields.FieldSpec, line: str, source: str) -> Any:
  try:
    if spec.dtype == tensor_codecs.STRING:
      return cell
    if spec.shape != ():
      raise ValueError(f"a CSV cell holds one value, the feature is {spec.spec_text()}")
    if spec.dtype == "bool":
      lowered = cell.strip().lower()
      if lowered not in _TRUE | _FALSE:
        raise ValueError(f"{cell!r} is not a boolean (true/false/1/0)")
      return lowered in _TRUE
    if spec.dtype.startswith(("int", "uint")):
      return int(cell)
    return float(cell)
  except ValueError as error:
    raise errors.SchemaError(
        f"Side table {source}: {line}, column {spec.name!r}: {error}. {fields.hint_for(spec)}."
    ) from None


def _key(value: Any, key_kind: str, key_column: str, line: str, source: str) -> JoinKey:
  """A side-table key in the base's form: int, or UTF-8 bytes."""
  if value is None or value == "":
    raise errors.SourceError(f"Side table {source}: {line} has no join key ({key_column!r} is empty). Fill or drop the row.")
  if key_kind == INT_KEY:
    try:
      if isinstance(value, (float, np.floating)) and not float(value).is_integer():
        raise ValueError
      key = int(value)
      if not _INT64_MIN <= key <= _INT64_MAX:
        raise ValueError
      return key
    except (TypeError, ValueError):
      raise errors.SchemaError(
          f"Side table {source}: {line}: join key {value!r} in column {key_column!r} "
          "is not an integer in the int64 range, but the base stores the key as int64. Fix the key column."
      ) from None
  if isinstance(value, str):
    return value.encode("utf-8")
  if isinstance(value, bytes):
    return value
  raise errors.SchemaError(
      f"Side table {source}: {line}: join key {value!r} in column {key_column!r} is "
      f"{type(value).__name__}, but the base stores the key as a string. Cast the key column to text."
  )

