"""The docs run: every sh and Python fenced block of README.md and docs/*.md, as a reader types it."""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import os
import pathlib
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time

import pytest

from tests.conftest import PG_DSN_ENV
from tests.faults import CLI, ENV, REPO

DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
SHELL_LANGUAGES = {"sh", "bash", "shell", "console"}
PYTHON_LANGUAGES = {"python", "py"}
# `<!-- docs-test: KIND [ARGUMENT] -->` on the last non-blank line before a fence:
#   skip (why)       not run; counted and reported with its reason;
#   file PATH        the block is that file's content, written under the work dir;
#   args-only (why)  a long-running script: its flags are checked against its --help.
MARKER = re.compile(r"^\s*<!--\s*docs-test:\s*(?P<kind>[\w-]+)\s*(?P<argument>.*?)\s*-->\s*$")
MARKER_KINDS = {"skip", "file", "args-only"}
FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})(?P<language>[\w+-]*)")
# Paths the docs write to that stand for the reader's machine: each goes below the run's temp dir.
PLACEHOLDER_DIRS = ("/shared/registry", "/other/data_dir")
# A quoted libpq DSN or URI in a block stands for the reader's server: the test server's DSN replaces it.
DSN = re.compile(r"""(?P<quote>['"])(?P<dsn>(?:host|hostaddr|dbname)=[^'"]*|postgres(?:ql)?://[^'"]*)(?P=quote)""")
BLOCK_TIMEOUT_SECONDS = 300
# Documents run in parallel; each block is a `tfds build` or a Python process that imports TensorFlow.
PARALLEL_DOCUMENTS = 4


@dataclasses.dataclass(frozen=True)
class Block:
  """One fenced block of a Markdown document.

  Attributes:
    path: The document.
    line: The 1-based line of the opening fence.
    language: The fence's info string ("" when none).
    code: The block's text, indentation of the fence removed.
    marker: The `docs-test` marker's kind before the fence, or "".
    argument: The marker's argument (a reason or a path).
  """

  path: pathlib.Path
  line: int
  language: str
  code: str
  marker: str = ""
  argument: str = ""

  @property
  def where(self) -> str:
    return f"{self.path.relative_to(REPO)}:{self.line}"

  @property
  def runnable(self) -> bool:
    return self.language in SHELL_LANGUAGES | PYTHON_LANGUAGES


def parse_blocks(path: pathlib.Path, text: str | None = None) -> list[Block]:
  """Every fenced block of a Markdown file, with the marker that precedes it.

  Raises:
    ValueError: An unknown marker kind, or a fence that is never closed (naming the line).
  """
  lines = (path.read_text(encoding="utf-8") if text is None else text).splitlines()
  found: list[Block] = []
  previous = ""
  index = 0
  while index < len(lines):
    opening = FENCE.match(lines[index])
    if not opening:
      if lines[index].strip():
        previous = lines[index]
      index += 1
      continue
    start, indent, fence = index, len(opening["indent"]), opening["fence"]
    body: list[str] = []
    index += 1
    while index < len(lines) and not lines[index].strip().startswith(fence):
      line = lines[index]
      body.append(line[indent:] if line[:indent].isspace() or not indent else line.lstrip())
      index += 1
    if index == len(lines):
      raise ValueError(f"{path}:{start + 1}: the fence {fence} is never closed")
    marker = MARKER.match(previous)
    if marker and marker["kind"] not in MARKER_KINDS:
      raise ValueError(f"{path}:{start}: unknown docs-test marker {marker['kind']!r}; use one of {sorted(MARKER_KINDS)}")
    found.append(Block(
        path=path, line=start + 1, language=opening["language"].lower(), code="\n".join(body) + "\n",
        marker=marker["kind"] if marker else "", argument=marker["argument"] if marker else "",
    ))
    previous = ""
    index += 1
  return found


@dataclasses.dataclass
class Outcome:
  """What running one block gave: status is passed, failed, skipped, args-only or written."""

  block: Block
  status: str
  seconds: float = 0.0
  output: str = ""


@dataclasses.dataclass
class Session:
  """Where one document's blocks run: a work dir (cwd) and a home whose ~/tensorflow_datasets they share."""

  root: pathlib.Path
  dsn: str

  @property
  def work(self) -> pathlib.Path:
    return self.root / "work"

  @property
  def home(self) -> pathlib.Path:
    return self.root / "home"

  def prepare(self) -> None:
    """The work dir looks like the checkout (its folders linked), so relative paths in the docs resolve."""
    self.work.mkdir(parents=True)
    self.home.mkdir()
    for name in ("tfds_builders", "benchmarks", "dummy_data", "scripts", "docs", "tests", "setup.py", ".venv"):
      (self.work / name).symlink_to(REPO / name)

  def environment(self) -> dict[str, str]:
    environment = {**ENV, "HOME": str(self.home), "PATH": f"{pathlib.Path(sys.executable).parent}:{ENV['PATH']}"}
    for name in ("TFDS_DATA_DIR", "TFDS_BUILDERS_REGISTRY_CONFIG", "TFDS_BUILDERS_REGISTRY_VERIFY", "PYTHONPATH"):
      environment.pop(name, None)
    return environment

  def substitute(self, code: str) -> str:
    """The block as it runs here: placeholder dirs below the temp dir, DSNs to the test server's."""
    for placeholder in PLACEHOLDER_DIRS:
      code = code.replace(placeholder, str(self.root / placeholder.strip("/").replace("/", "_")))
    if DSN.search(code):
      if not self.dsn:
        raise LookupError(f"the block connects to PostgreSQL but {PG_DSN_ENV} is not set")
      code = DSN.sub(lambda found: found["quote"] + self.dsn + found["quote"], code)
    return code


def _command_lines(code: str) -> list[str]:
  """The block's commands, continuation lines joined, comments and blank lines dropped."""
  joined = re.sub(r"\\\n\s*", " ", code)
  return [line for line in (raw.strip() for raw in joined.splitlines()) if line and not line.startswith("#")]


def _check_arguments(block: Block, session: Session) -> str:
  """Checks every `--flag` of each `python SCRIPT.py|-m MODULE ...` line against its `--help`; returns problems."""
  problems, helps = [], {}
  for line in _command_lines(block.code):
    words = shlex.split(line, comments=True)
    # `python SCRIPT.py ...` or `python -m MODULE ...` (the benchmarks package).
    modules = [words[i + 1] for i, word in enumerate(words[:-1]) if word == "-m"]
    scripts = modules or [word for word in words if word.endswith(".py")]
    if not scripts:
      continue
    script = scripts[0]
    if script not in helps:
      result = subprocess.run(
          [sys.executable, *(["-m"] if modules else []), script, "--help"], cwd=session.work,
          env=session.environment(),
          capture_output=True, text=True, timeout=120, check=False,
      )
      if result.returncode != 0:
        problems.append(f"{script} --help exited {result.returncode}: {result.stderr[-2000:]}")
        continue
      helps[script] = result.stdout
    arguments = words[words.index(script) + 1:]
    for argument in arguments:
      flag = argument.split("=", 1)[0]
      if flag.startswith("--") and not re.search(rf"{re.escape(flag)}\b", helps[script]):
        problems.append(f"{script}: {flag} is not in its --help")
    # A leading positional is a choice such as the builder: it must be one --help lists.
    if arguments and not arguments[0].startswith("-") and arguments[0] not in helps[script]:
      problems.append(f"{script}: {arguments[0]!r} is not in its --help")
  return "\n".join(problems)


def _python_line(output: str, block: Block) -> str:
  """Maps `File "<string>", line N` of a traceback to the document's line."""
  return re.sub(
      r'File "<string>", line (\d+)',
      lambda found: f'File "{block.where.split(":")[0]}", line {block.line + int(found[1])}',
      output,
  )


def run_block(block: Block, session: Session) -> Outcome:
  """Runs one block in the session; never raises for a failure of the block itself."""
  started = time.monotonic()
  if block.marker == "skip" or not block.runnable:
    return Outcome(block, "skipped" if block.marker == "skip" else "not-code")
  if block.marker == "file":
    relative = pathlib.PurePosixPath(block.argument)
    if relative.is_absolute() or ".." in relative.parts:
      return Outcome(block, "failed", 0.0, f"file {block.argument!r}: give a path inside the work dir")
    target = session.work / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(block.code, encoding="utf-8")
    return Outcome(block, "written")
  if block.marker == "args-only":
    problems = _check_arguments(block, session)
    return Outcome(block, "failed" if problems else "args-only", time.monotonic() - started, problems)
  try:
    code = session.substitute(block.code)
  except LookupError as error:
    # As tests/conftest.py: PostgreSQL is optional locally, mandatory on CI.
    return Outcome(block, "failed" if os.environ.get("CI") == "true" else "skipped", 0.0, str(error))
  if block.language in PYTHON_LANGUAGES:
    argv = [sys.executable, "-c", code]
  else:
    if block.language == "console":
      code = "\n".join(line[2:] for line in code.splitlines() if line.startswith("$ "))
    # -x echoes each command into the output, so a failure shows which line of the block it was.
    argv = ["bash", "-e", "-x", "-o", "pipefail", "-c", code]
  log_path = session.root / f"block_{block.line}.log"
  with open(log_path, "w", encoding="utf-8") as log:
    process = subprocess.Popen(argv, cwd=session.work, env=session.environment(), stdout=log,
                               stderr=subprocess.STDOUT, start_new_session=True)
    try:
      returncode = process.wait(timeout=BLOCK_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
      os.killpg(process.pid, signal.SIGKILL)  # the block's whole process group: tfds build, Beam workers
      process.wait()
      returncode = None
  output = log_path.read_text(encoding="utf-8", errors="replace")
  status = "passed" if returncode == 0 else "failed"
  if returncode is None:
    output += f"\n[timed out after {BLOCK_TIMEOUT_SECONDS} s]"
  elif returncode:
    output += f"\n[exit code {returncode}]"
  if block.language in PYTHON_LANGUAGES:
    output = _python_line(output, block)
  return Outcome(block, status, time.monotonic() - started, output)


def run_document(path: pathlib.Path, root: pathlib.Path, dsn: str) -> list[Outcome]:
  """Runs a document's blocks in order in one session; a failed block does not stop the later ones."""
  session = Session(root, dsn)
  session.prepare()
  try:
    blocks = parse_blocks(path)
  except ValueError as error:  # a malformed document fails its own test, not the others'
    return [Outcome(Block(path, 0, "", ""), "failed", 0.0, str(error))]
  return [run_block(block, session) for block in blocks]


def _estimated_cost(path: pathlib.Path) -> int:
  """Process starts of a document's blocks: each `tfds build` or Python block imports TensorFlow."""
  runnable = [block for block in parse_blocks(path) if block.runnable and not block.marker]
  return sum(len(re.findall(r"\btfds build\b", block.code)) + (block.language in PYTHON_LANGUAGES)
             for block in runnable)


def _selected_documents(session: pytest.Session) -> list[pathlib.Path]:
  names = {item.callspec.params["document"] for item in session.items
           if getattr(item, "originalname", "") == "test_document_runs" and hasattr(item, "callspec")}
  return [path for path in DOCUMENTS if path.name in names]


@pytest.fixture(scope="module")
def document_outcomes(request: pytest.FixtureRequest) -> dict[str, list[Outcome]]:
  """Runs every selected document, several at a time, and reports each block's outcome at the end."""
  dsn = os.environ.get(PG_DSN_ENV, "").strip()
  # Longest first, so the last documents to start are short ones.
  documents = sorted(_selected_documents(request.session), key=_estimated_cost, reverse=True)
  with tempfile.TemporaryDirectory(prefix="tfds_builders_docs_") as temp:
    with concurrent.futures.ThreadPoolExecutor(PARALLEL_DOCUMENTS) as pool:
      futures = {path.name: pool.submit(run_document, path, pathlib.Path(temp) / path.stem, dsn)
                 for path in documents}
      outcomes = {name: future.result() for name, future in futures.items()}
  reporter = request.config.pluginmanager.get_plugin("terminalreporter")
  capture = request.config.pluginmanager.get_plugin("capturemanager")
  if reporter and capture:
    with capture.global_and_fixture_disabled():  # shown without -s, whatever the tests' outcome
      reporter.write_line("")
      for line in summary_lines(outcomes):
        reporter.write_line(line)
  return outcomes


def summary_lines(outcomes: dict[str, list[Outcome]]) -> list[str]:
  """One line per document (block counts, seconds), then every skipped block with its reason."""
  lines = ["docs blocks: document  passed failed args-only skipped written  seconds"]
  for name, results in outcomes.items():
    count = collections.Counter(outcome.status for outcome in results)
    lines.append(
        f"  {name:18} {count['passed']:6} {count['failed']:6} {count['args-only']:9} {count['skipped']:7}"
        f" {count['written']:7} {sum(outcome.seconds for outcome in results):8.1f}")
  lines += [f"  skipped {outcome.block.where}: {outcome.block.argument or outcome.output}"
            for results in outcomes.values() for outcome in results if outcome.status == "skipped"]
  return lines


@pytest.mark.slow
@pytest.mark.parametrize("document", [path.name for path in DOCUMENTS])
def test_document_runs(document: str, document_outcomes: dict[str, list[Outcome]]) -> None:
  outcomes = document_outcomes[document]
  failures = [outcome for outcome in outcomes if outcome.status == "failed"]
  report = "\n\n".join(
      f"{outcome.block.where} ({outcome.block.language}) failed after {outcome.seconds:.1f} s:\n"
      f"{outcome.block.code}--- output (last 4000 characters) ---\n{outcome.output[-4000:]}"
      for outcome in failures)
  assert not failures, f"{len(failures)} block(s) of {document} failed:\n\n{report}"
  assert any(outcome.status in ("passed", "args-only") for outcome in outcomes), f"{document}: no block ran"


def test_skips_have_reasons() -> None:
  """A skipped or args-only block says why, and a file block says where; skips stay rare."""
  blocks = [block for path in DOCUMENTS for block in parse_blocks(path)]
  for block in blocks:
    if block.marker:
      assert re.fullmatch(r"\(.+\)" if block.marker != "file" else r"[\w./-]+", block.argument), (
          f"{block.where}: marker {block.marker!r} needs {'a (reason)' if block.marker != 'file' else 'a relative path'}")
    if block.marker in ("skip", "args-only"):
      assert block.runnable, f"{block.where}: a {block.language or 'plain'} block is never run; drop the marker"
  skipped = [block.where for block in blocks if block.marker == "skip"]
  assert len(skipped) <= 3, f"too many skipped blocks: {skipped}"


def test_parse_blocks_reads_markers_lines_and_languages(tmp_path: pathlib.Path) -> None:
  text = (
      "# Title\n\n```sh\necho one\n```\n\n<!-- docs-test: skip (needs network) -->\n"
      "```python\nimport x\n```\n\n  ```text\n  indented output\n  ```\n"
      "<!-- docs-test: file my_project/labels.py -->\n\n```python\ndef f(): pass\n```\n"
  )
  blocks = parse_blocks(tmp_path / "doc.md", text)
  assert [(b.line, b.language, b.marker, b.argument) for b in blocks] == [
      (3, "sh", "", ""), (8, "python", "skip", "(needs network)"), (12, "text", "", ""),
      (17, "python", "file", "my_project/labels.py")]
  assert blocks[2].code == "indented output\n"
  with pytest.raises(ValueError, match=r"doc.md:1: unknown docs-test marker 'skp'"):
    parse_blocks(tmp_path / "doc.md", "<!-- docs-test: skp -->\n```sh\nls\n```\n")
  with pytest.raises(ValueError, match=r"doc.md:1: the fence ``` is never closed"):
    parse_blocks(tmp_path / "doc.md", "```sh\nls\n")


def test_session_substitutes_placeholders_and_dsns(tmp_path: pathlib.Path) -> None:
  session = Session(tmp_path, "host=127.0.0.1 dbname=t user=u")
  code = "publish x /shared/registry\nexport SHOP_DSN='host=db.internal dbname=shop user=reader'\n"
  assert session.substitute(code) == (
      f"publish x {tmp_path}/shared_registry\nexport SHOP_DSN='host=127.0.0.1 dbname=t user=u'\n")
  with pytest.raises(LookupError, match="TFDS_BUILDERS_PG_DSN is not set"):
    Session(tmp_path, "").substitute("x = 'postgresql://u@h/db'")


@pytest.mark.slow
def test_a_failing_block_reports_its_document_line_and_output(tmp_path: pathlib.Path) -> None:
  session = Session(tmp_path, "")
  session.prepare()
  python = run_block(Block(REPO / "docs" / "x.md", 10, "python", "print('before')\n1 / 0\n"), session)
  assert python.status == "failed"
  assert 'File "docs/x.md", line 12' in python.output and "ZeroDivisionError" in python.output
  assert python.output.startswith("before\n") and python.output.endswith("[exit code 1]")
  shell = run_block(Block(REPO / "docs" / "x.md", 20, "sh", "echo one\nfalse\necho never\n"), session)
  assert shell.status == "failed" and "never" not in shell.output  # -e: the block stops at its first failure
  assert "+ false" in shell.output and shell.output.endswith("[exit code 1]")


@pytest.mark.slow
def test_args_only_blocks_name_unknown_flags_and_choices(tmp_path: pathlib.Path) -> None:
  session = Session(tmp_path, "")
  session.prepare()
  code = ("TF_CPP_MIN_LOG_LEVEL=3 .venv/bin/python -m benchmarks numpy_arrays --size 1MB \\\n"
          "  --repeat 1 --no-such-flag\n.venv/bin/python -m benchmarks no_such_builder --size 1MB\n")
  outcome = run_block(Block(REPO / "docs" / "x.md", 1, "sh", code, "args-only", "(slow)"), session)
  assert outcome.status == "failed"
  assert outcome.output.splitlines() == [
      "benchmarks: --no-such-flag is not in its --help",
      "benchmarks: 'no_such_builder' is not in its --help"]


def _help(*command: str) -> str:
  return subprocess.run([CLI, *command, "--help"], env=ENV, capture_output=True, text=True, timeout=60,
                        check=True).stdout


@pytest.mark.slow
def test_documented_cli_commands_and_flags_exist() -> None:
  """Every `tfds-builders` line of the command tables in README.md and docs/index.md names a real subcommand and flags."""
  top = _help()
  subcommands = set(re.findall(r"^\s{4}(\w+)\s", top, re.MULTILINE))
  assert {"list", "inspect", "export", "import", "publish", "verify"} <= subcommands, top
  documented: dict[str, set[str]] = {}
  for path in (REPO / "README.md", REPO / "docs" / "index.md"):
    for block in parse_blocks(path):
      for line in block.code.splitlines():
        if line.startswith("tfds-builders "):
          words = line.split("#")[0].split()
          usage = " ".join(words[2:])
          # Flags, and the values of choice lists such as {tfrecord,npz} or tfrecord|npz.
          choices = {value for group in re.findall(r"\{([\w,]+)\}|(\w+(?:\|\w+)+)", usage)
                     for value in re.split(r"[,|]", "".join(group))}
          documented.setdefault(words[1], set()).update(re.findall(r"--[\w-]+", usage), choices)
  assert set(documented) == subcommands, f"documented {sorted(documented)}, --help lists {sorted(subcommands)}"
  for subcommand, words in documented.items():
    text = _help(subcommand)
    for word in words:
      assert re.search(rf"(?<![\w-]){re.escape(word)}\b", text), (
          f"`tfds-builders {subcommand} ... {word}` is documented but not in its --help:\n{text}")
