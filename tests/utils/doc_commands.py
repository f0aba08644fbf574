"""The commands the documentation shows, as a user would paste them, and a check of what each answers.

`documented_commands(path)` reads a Markdown file's fenced `bash` blocks (continuation lines joined) and keeps
every `curl` and `trainyard` line; the variable lines of the file (`API=…`, `export …`) come with them, run
first as a user who pasted the top of the page would have. `python_snippets(path)` are its `python` blocks.
`report_commands(html)` are the `curl` and `trainyard` lines of a job's report page.

`run_command` runs one line in bash and checks it: a `curl` line answers the status the API documents for its
route (each curl is given `-w` to print its status; nothing else in the line changes), a `trainyard` line exits 0.
"""

from __future__ import annotations

import html
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_FENCE = re.compile(r"^\s*```(\w*)\s*$")
_ASSIGNMENT = re.compile(r"^(export\s+)?[A-Z_][A-Z0-9_]*=")
_STATUS_MARK = "__http_status__"
_URL = re.compile(r"\$API(/[^\s\"'?]*)|https?://[^/\s\"']+(/[^\s\"'?]*)")
_PRE = re.compile(r"<pre>(.*?)</pre>", re.DOTALL)
# Documented lines tests/e2e/test_documented_commands.py does not run, each with its reason and where the same is
# tested instead.
NOT_RUN = {
    "trainyard down": "stops the stack every other line needs; tests/infra/test_local_stack.py covers `down`",
    "trainyard batch-predictions cancel <run id>": "needs a run in progress; tests/e2e/test_batch_cluster.py "
    "cancels a real run (its actors freed, its manifest cancelled), tests/trainyard/test_batch_cli.py this command",
    "trainyard batch-predictions retry <run id>": "needs a cancelled run whose driver has stopped; "
    "tests/e2e/test_batch_cluster.py retries one (kept shards skipped), tests/trainyard/test_batch_cli.py this command",
}
# Python snippets that are parts of one program or need a counterpart (a marker each holds, and the test that runs
# them as such); every other snippet runs on its own and prints an answer.
SNIPPETS_RUN_ELSEWHERE = {
    "def preprocess(": "tests/e2e/test_integrations.py runs README's export snippets as one program, without Trainyard",
    "torch.jit.load(": "the TorchScript part of that program",
    "onnxruntime.InferenceSession(": "the ONNX part of that program",
    "def verify(": "tests/service/test_webhooks.py checks real webhooks' signatures with docs/api.md's snippet",
}


@dataclass(frozen=True)
class DocCommand:
    source: str  # where it is written: "README.md:141"
    line: str  # as written, continuation lines joined
    setup: tuple[str, ...] = ()  # the page's variable lines above it

    @property
    def kind(self) -> str:
        return self.line.split(maxsplit=1)[0]


def _blocks(text: str, language: str) -> list[tuple[int, list[str]]]:
    """(first line number, lines) of each fenced block in `language`."""
    blocks: list[tuple[int, list[str]]] = []
    inside = False
    current: list[str] | None = None
    for number, line in enumerate(text.splitlines(), 1):
        fence = _FENCE.match(line)
        if fence:
            inside = not inside
            current = [] if inside and fence.group(1) == language else None
            if current is not None:
                blocks.append((number + 1, current))
        elif current is not None:
            current.append(line)
    return blocks


def _logical_lines(lines: list[str]) -> list[tuple[int, str]]:
    """Lines with their `\\` continuations joined, comments and blanks dropped: (offset, line)."""
    joined: list[tuple[int, str]] = []
    buffer, start = "", 0
    for offset, raw in enumerate(lines):
        line = raw.strip()
        if not buffer:
            start = offset
        if line.endswith("\\"):
            buffer += line[:-1].rstrip() + " "
            continue
        buffer += line
        if buffer and not buffer.startswith("#"):
            joined.append((start, buffer))
        buffer = ""
    return joined


def _strip_comment(line: str) -> str:
    """The line without a trailing `# comment` (outside quotes)."""
    quote = None
    for i, ch in enumerate(line):
        if ch in "'\"" and quote in (None, ch):
            quote = None if quote == ch else ch
        elif ch == "#" and quote is None and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line


def documented_commands(path: Path) -> list[DocCommand]:
    text = path.read_text()
    found: list[DocCommand] = []
    setup: list[str] = []
    for first, lines in _blocks(text, "bash"):
        for offset, line in _logical_lines(lines):
            line = _strip_comment(line)
            if _ASSIGNMENT.match(line):
                setup.append(line)
            elif line.startswith(("curl ", "trainyard ")):
                found.append(DocCommand(f"{path.name}:{first + offset}", line, tuple(setup)))
    return found


def python_snippets(path: Path) -> list[DocCommand]:
    return [
        DocCommand(f"{path.name}:{first}", "\n".join(lines)) for first, lines in _blocks(path.read_text(), "python")
    ]


def report_commands(page: str) -> list[DocCommand]:
    lines = [html.unescape(block).strip() for block in _PRE.findall(page)]
    return [DocCommand("report.html", line) for line in lines if line.startswith(("curl ", "trainyard "))]


# --- running them ------------------------------------------------------------------------------------------


def _expected_status(line: str, openapi: dict[str, Any]) -> list[int]:
    """The success status the API documents for each curl call in the line, in order."""
    statuses = []
    for call in re.split(r"(?:;|&&)\s*(?=curl )", line):
        match = _URL.search(call)
        assert match, f"no URL in {call!r}"
        path = (match.group(1) or match.group(2) or "/").split("?")[0]
        method = re.search(r"-X\s+([A-Z]+)", call)
        verb = method.group(1) if method else ("POST" if re.search(r"\s(-d|--data\S*|-F)\s", call) else "GET")
        statuses.append(_documented_success(verb.lower(), path, openapi))
    return statuses


def _documented_success(method: str, path: str, openapi: dict[str, Any]) -> int:
    for template, operations in openapi["paths"].items():
        pattern = "^" + re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template)) + "$"
        if re.match(pattern, path) and method in operations:
            return min(int(code) for code in operations[method]["responses"] if code.startswith("2"))
    assert path == "/metrics", f"{method.upper()} {path} is not a route of the API"
    return 200


def run_command(
    command: DocCommand, cwd: Path, env: dict[str, str], openapi: dict[str, Any], timeout: float = 900
) -> subprocess.CompletedProcess[str]:
    """Run the line (after its page's variable lines) in bash; assert it answered what its route documents."""
    line = command.line
    if command.kind == "curl":
        # Only a write-out is added: the request itself is the documented one.
        line = re.sub(r"(^|[;&]\s*)curl ", rf"\1curl -w '\n{_STATUS_MARK}%{{http_code}}\n' ", line)
    script = "\n".join(["set -e", *command.setup, line])
    result = subprocess.run(["bash", "-c", script], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    where = (
        f"{command.source}: {command.line}\n--- stdout\n{result.stdout[-3000:]}\n--- stderr\n{result.stderr[-3000:]}"
    )
    assert result.returncode == 0, f"exited {result.returncode}: {where}"
    if command.kind == "curl":
        got = [int(s) for s in re.findall(rf"{_STATUS_MARK}(\d+)", result.stdout)]
        assert got == _expected_status(command.line, openapi), f"answered {got}: {where}"
    return result
