"""The user function "package.module:function": imported by reference, called per example, serially or in worker processes."""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import importlib
import multiprocessing
import pickle
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from tfds_builders.augmented import base as base_lib
from tfds_builders.core import errors

# Batches in flight per worker: enough to keep workers busy while the main
# process reads and writes, few enough to keep memory flat.
_IN_FLIGHT_PER_WORKER = 2
# A pool worker's function, resolved once by `_start_worker` when the worker
# starts; it lives and dies with the worker process (never set in the main one).
_worker_function: ResolvedFunction | None = None


@dataclasses.dataclass(frozen=True)
class Call:
  """One base example to call the function on."""

  key: str
  where: str  # e.g. "record 12 of train.tfrecord", for messages
  raw: bytes


@dataclasses.dataclass(frozen=True)
class _Failure:
  """What went wrong in a (possibly remote) call, re-raised by the main process."""

  call_key: str
  call_where: str
  stage: str  # "decode", "call" or "result"
  error: BaseException
  traceback_text: str


def import_function(reference: str) -> Callable[..., Any]:
  """Imports `"package.module:function"` (the function may be `Class.method`).

  Raises:
    ConfigError: if the reference is malformed, the module cannot be
      imported or has no such callable; the original error is chained.
  """
  module_name, _, attribute = reference.partition(":")
  if not module_name or not attribute:
    raise errors.ConfigError(
        f"function={reference!r} is not a reference; write 'package.module:function', "
        "e.g. 'my_project.labels:add_label'."
    )
  try:
    target: Any = importlib.import_module(module_name)
  except Exception as error:  # an import may fail with anything the module raises
    raise errors.ConfigError(
        errors.with_hint(
            f"Cannot import module {module_name!r} of function {reference!r}: {type(error).__name__}: {error}",
            "Install the package or put its directory on PYTHONPATH (the worker "
            "processes need it too)",
        )
    ) from error
  for part in attribute.split("."):
    if not hasattr(target, part):
      raise errors.ConfigError(
          f"Module {module_name!r} has no {attribute!r} (function={reference!r}). Check the name after ':'."
      )
    target = getattr(target, part)
  if not callable(target):
    raise errors.ConfigError(f"{reference!r} is a {type(target).__name__}, not a function.")
  return target


@dataclasses.dataclass(frozen=True)
class ResolvedFunction:
  """The user function imported, with the base features that decode its examples.

  Resolved once per build (and once per pool worker), so a build after the
  user edits their module does not call an earlier build's function.
  """

  reference: str
  features_source: base_lib.FeaturesSource
  function: Callable[..., Any]
  features: Any  # tfds.features.FeaturesDict


def resolve(reference: str, features_source: base_lib.FeaturesSource) -> ResolvedFunction:
  """Imports the function by reference and rebuilds the base features from their JSON."""
  return ResolvedFunction(
      reference, features_source, import_function(reference), base_lib.features_from_json(*features_source))


def _start_worker(reference: str, features_source: base_lib.FeaturesSource) -> None:
  """A pool worker's initializer: resolves the function once for the worker's life."""
  global _worker_function  # pylint: disable=global-statement  # per worker process, set once at its start
  _worker_function = resolve(reference, features_source)


def _call_in_worker(calls: Sequence[Call]) -> list[dict[str, Any]] | _Failure:
  return _call_batch(_worker_function, calls, remote=True)


def _call_batch(
    resolved: ResolvedFunction, calls: Sequence[Call], remote: bool = False
) -> list[dict[str, Any]] | _Failure:
  """Decodes each base example to NumPy and calls the function on it.

  Runs in the main process or in a worker; a failure is returned, not
  raised, so that the main process can name the example and chain it.
  """
  results = []
  for call in calls:
    stage = "decode"
    try:
      example = resolved.features.deserialize_example_np(call.raw)
      stage = "call"
      result = resolved.function(example)
    except Exception as error:  # pylint: disable=broad-except  # user code may raise anything
      return _failure(call, stage, error, remote)
    if not isinstance(result, Mapping):
      return _Failure(call.key, call.where, "result", TypeError(
          f"returned {type(result).__name__} {result!r:.80}, not a dict of new fields"), "")
    results.append(dict(result))
  return results


def _failure(call: Call, stage: str, error: BaseException, remote: bool) -> _Failure:
  if not remote:  # the exception keeps its traceback in this process
    return _Failure(call.key, call.where, stage, error, "")
  try:
    pickle.dumps(error)
  except Exception:  # pylint: disable=broad-except  # unpicklable exceptions cannot leave a worker
    error = RuntimeError(f"{type(error).__name__}: {error}")
  return _Failure(call.key, call.where, stage, error, traceback.format_exc())


def raise_failure(failure: _Failure, reference: str) -> None:
  """Raises the error naming the example, chaining the original exception."""
  original = failure.error
  if failure.traceback_text:
    # Came from a worker: keep its traceback readable in the chained error.
    original.add_note(f"Traceback in the worker process:\n{failure.traceback_text}")
  if failure.stage == "decode":
    raise errors.SourceError(
        f"Base example {failure.call_key} ({failure.call_where}) cannot be decoded with the base's "
        f"features: {type(original).__name__}: {original}. The base record is corrupt or does not "
        "match the base's features; repair or regenerate it."
    ) from original
  if failure.stage == "result":
    raise errors.SchemaError(
        f"Function {reference} on example {failure.call_key} ({failure.call_where}) {original}. "
        "Return a dict {field name: value}."
    )
  raise errors.SourceError(
      errors.with_hint(
          f"Function {reference} raised on example {failure.call_key} ({failure.call_where}): "
          f"{type(original).__name__}: {original}",
          "Fix the function or the example; the original exception is chained below",
      )
  ) from original


class FunctionRunner:
  """Calls the function on batches of examples, in order, in this process or a pool.

  The pool, if any, is the one `worker_pool` opened for this function for the
  build (a local build with `num_workers > 1`), whose workers resolved the
  function when they started; without one (Beam workers, single-worker
  builds) calls run here, with `resolved`. Results come back in input order
  either way, so the output does not depend on the number of workers.
  """

  def __init__(self, resolved: ResolvedFunction, num_workers: int, pool: Any = None):
    self.reference = resolved.reference
    self._resolved = resolved
    self._pool = pool
    self._in_flight = max(1, num_workers * _IN_FLIGHT_PER_WORKER)

  def map(self, batches: Iterator[tuple[Any, Sequence[Call]]]) -> Iterator[tuple[Any, list[dict[str, Any]]]]:
    """Yields `(tag, results)` per `(tag, calls)` batch, in order.

    Raises:
      SourceError / SchemaError: for the first example whose decoding or call
        failed (see `raise_failure`).
    """
    if self._pool is None:
      for tag, calls in batches:
        yield tag, self._checked(_call_batch(self._resolved, calls))
      return
    pending: collections.deque = collections.deque()
    for tag, calls in batches:
      pending.append((tag, self._pool.apply_async(_call_in_worker, (list(calls),))))
      if len(pending) >= self._in_flight:
        done_tag, result = pending.popleft()
        yield done_tag, self._checked(result.get())
    while pending:
      done_tag, result = pending.popleft()
      yield done_tag, self._checked(result.get())

  def _checked(self, outcome: list[dict[str, Any]] | _Failure) -> list[dict[str, Any]]:
    if isinstance(outcome, _Failure):
      raise_failure(outcome, self.reference)
    return outcome


def call_serially(reference: str, features_source: base_lib.FeaturesSource, calls: Sequence[Call]) -> list[dict[str, Any]]:
  """The function's results on a few examples, in this process (used to infer features)."""
  outcome = _call_batch(resolve(reference, features_source), calls)
  if isinstance(outcome, _Failure):
    raise_failure(outcome, reference)
  return outcome


@contextlib.contextmanager
def worker_pool(num_workers: int, resolved: ResolvedFunction | None) -> Iterator[Any]:
  """Opens `num_workers` processes for the duration of a build; yields the pool (None for one worker).

  Workers are started with `spawn` (a fork of a process running TensorFlow
  may deadlock), so the function must be importable by reference in a fresh
  interpreter; each worker resolves it once, when it starts.
  """
  if num_workers <= 1 or resolved is None:
    yield None
    return
  pool = multiprocessing.get_context("spawn").Pool(
      num_workers, initializer=_start_worker, initargs=(resolved.reference, resolved.features_source))
  try:
    yield pool
  finally:
    pool.terminate()
    pool.join()
