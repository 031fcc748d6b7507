"""SQL column types -> kinds: what PostgreSQL and SQLite report, as one vocabulary.

A column's database type maps to a *kind* (`int`, `float64`, `date`, ...).
The database builder and augmented's SQL side tables both type result
columns through this mapping, so one column gets one feature in both.
"""

from __future__ import annotations

import dataclasses
import re

from tfds_builders.core import errors

KINDS = (
    "int", "float32", "float64", "numeric", "bool", "text", "bytes", "json",
    "enum", "uuid", "date", "time", "timestamp", "timestamptz",
)

# PostgreSQL type names (pg_type.typname of the type or of an array's element).
_POSTGRES_KINDS = {
    "int2": "int", "int4": "int", "int8": "int", "oid": "int",
    "float4": "float32", "float8": "float64", "numeric": "numeric",
    "bool": "bool",
    "text": "text", "varchar": "text", "bpchar": "text", "name": "text",
    "char": "text", "citext": "text",
    "bytea": "bytes", "json": "json", "jsonb": "json", "uuid": "uuid",
    "date": "date", "time": "time", "timestamp": "timestamp",
    "timestamptz": "timestamptz",
}
# PostgreSQL text types that take COLLATE "C" (code-point order); "char" does not.
POSTGRES_TEXT_TYPES = ("text", "varchar", "bpchar", "name", "citext")
# SQLite declared types with a meaning beyond their affinity, by first word.
_SQLITE_NAMED_KINDS = {
    "BOOLEAN": "bool", "BOOL": "bool", "DATE": "date", "DATETIME": "timestamp",
    "TIMESTAMP": "timestamp", "TIMESTAMPTZ": "timestamptz", "TIME": "time",
    "JSON": "json", "JSONB": "json", "NUMERIC": "numeric", "DECIMAL": "numeric",
    "UUID": "uuid", "BLOB": "bytes",
}
_SQLITE_STORAGE_KINDS = {
    frozenset({"integer"}): "int",
    frozenset({"real"}): "float64",
    frozenset({"integer", "real"}): "float64",
    frozenset({"text"}): "text",
    frozenset({"blob"}): "bytes",
}


@dataclasses.dataclass(frozen=True)
class SqlType:
  """What a result column holds: a kind, maybe as a one-dimensional array.

  Attributes:
    kind: One of `KINDS`.
    array: Whether each value is a list of `kind` values.
    source: The type as the database names it, for messages and provenance.
  """

  kind: str
  array: bool = False
  source: str = ""

  def label(self) -> str:
    """The kind as messages show it: `text`, or `text[]` for an array."""
    return f"{self.kind}{'[]' if self.array else ''}"


def postgres_type(
    type_name: str, *, is_enum: bool = False, element: str | None = None,
    element_is_enum: bool = False,
) -> SqlType | None:
  """Maps a PostgreSQL type (a `pg_type` row) to a SqlType; None if unsupported.

  Args:
    type_name: `pg_type.typname` of the column's type.
    is_enum: Whether the type is an enum (`typtype = 'e'`).
    element: For an array type, the element's `typname`.
    element_is_enum: Whether the array's element is an enum.
  """
  if element is not None:
    kind = "enum" if element_is_enum else _POSTGRES_KINDS.get(element)
    return SqlType(kind, array=True, source=f"{element}[]") if kind else None
  kind = "enum" if is_enum else _POSTGRES_KINDS.get(type_name)
  return SqlType(kind, source=type_name) if kind else None


def sqlite_declared_type(declared: str) -> SqlType | None:
  """Maps a SQLite declared column type to a SqlType; None when undeclared.

  Names with a meaning (BOOLEAN, DATE, DATETIME, JSON, DECIMAL, ...) come
  first; the rest follow SQLite's own affinity rules (INT -> integer, CHAR /
  CLOB / TEXT -> text, REAL / FLOA / DOUB -> real, other names -> numeric).
  """
  upper = declared.strip().upper()
  if not upper:
    return None
  source = f"{declared.strip()} (declared)"
  first_word = re.split(r"[\s(]", upper, maxsplit=1)[0]
  if upper.startswith("TIMESTAMP WITH TIME ZONE"):
    return SqlType("timestamptz", source=source)
  if first_word in _SQLITE_NAMED_KINDS:
    return SqlType(_SQLITE_NAMED_KINDS[first_word], source=source)
  if "INT" in upper:
    return SqlType("int", source=source)
  if any(word in upper for word in ("CHAR", "CLOB", "TEXT")):
    return SqlType("text", source=source)
  if "BLOB" in upper:
    return SqlType("bytes", source=source)
  if any(word in upper for word in ("REAL", "FLOA", "DOUB")):
    return SqlType("float64", source=source)
  return SqlType("numeric", source=source)


class UntypedColumnError(errors.SchemaError):
  """A SQLite result column whose type neither its declaration nor its values tell.

  The message names the column and what it holds; the builder reading it adds
  how to type it in its own config (`with_hint`).

  Attributes:
    column: The column's name.
    cast_example: The cast that types it in the query (`CAST(x AS TEXT) AS x`).
  """

  def __init__(self, column: str, found: str):
    super().__init__(
        f"Column {column!r} has no declared type and holds {found} values, "
        "so its feature type cannot be inferred"
    )
    self.column = column
    self.cast_example = f"CAST({column} AS TEXT) AS {column}"


def sqlite_storage_type(column: str, storage_classes: set[str]) -> SqlType:
  """Maps the storage classes (`typeof()`) an undeclared SQLite column holds.

  Raises:
    UntypedColumnError: if the column holds only NULLs or mixes unrelated classes.
  """
  classes = frozenset(storage_classes) - {"null"}
  kind = _SQLITE_STORAGE_KINDS.get(classes)
  if kind is None:
    raise UntypedColumnError(column, ", ".join(sorted(classes)) or "only NULL")
  return SqlType(kind, source=f"{'/'.join(sorted(classes))} (storage classes)")
