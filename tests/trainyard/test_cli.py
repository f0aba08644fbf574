"""The `trainyard` CLI against the real API: exit codes, --json on stdout, API messages without tracebacks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from infra.local.stack import LocalStack, StackConfig
from trainyard.cli import app
from trainyard.cli.exit_codes import ExitCode
from trainyard.config import ClientConfig, stack_home

from .conftest import LiveApi

runner = CliRunner()


def _run(*args: str) -> Result:
    return runner.invoke(app, list(args))


def _trainyard(api: LiveApi, *args: str) -> Result:
    return _run("--url", api.url, *args)


def _no_traceback(result: Result) -> None:
    assert "Traceback" not in result.output and "Traceback" not in result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception


def test_help_documents_the_exit_codes() -> None:
    result = _run("--help")
    assert result.exit_code == 0
    assert "Exit codes" in result.stdout and "130 interrupted" in result.stdout


def test_every_json_output_parses(live_api: LiveApi) -> None:
    submitted = _trainyard(live_api, "submit", "s3://bucket/pets", "--epochs", "2", "--name", "pets", "--json")
    assert submitted.exit_code == 0, submitted.output
    job = json.loads(submitted.stdout)
    assert (job["status"], job["params"]["epochs"], job["name"]) == ("queued", 2, "pets")
    for args in (
        ("status", job["id"]),
        ("list",),
        ("list", "--status", "queued"),
        ("events", job["id"]),
        ("models",),
        ("report", job["id"]),
        ("cancel", job["id"]),
        ("events", job["id"], "--follow"),  # the job is over: the stream ends at once
    ):
        result = _trainyard(live_api, *args, "--json")
        assert result.exit_code == 0, (args, result.output)
        lines = result.stdout.splitlines()
        documents = [json.loads(line) for line in lines] if "--follow" in args else [json.loads(result.stdout)]
        assert documents, args
    report = json.loads(_trainyard(live_api, "report", job["id"], "--json").stdout)
    assert report["url"] == f"{live_api.url}/v1/jobs/{job['id']}/report"
    listed = json.loads(_trainyard(live_api, "list", "--json").stdout)
    assert [j["id"] for j in listed["jobs"]] == [job["id"]]


def test_an_api_refusal_exits_3_with_its_message_and_field(live_api: LiveApi) -> None:
    result = _trainyard(live_api, "submit", "s3://bucket/pets", "--epochs", "0")
    assert result.exit_code == ExitCode.REFUSED
    assert "epochs: must be ≥ 1, got 0" in result.stderr and "(field: epochs)" in result.stderr
    _no_traceback(result)

    missing = _trainyard(live_api, "status", "job-nope", "--json")
    assert missing.exit_code == ExitCode.REFUSED
    assert json.loads(missing.stdout)["error"]["code"] == "job_not_found"
    _no_traceback(missing)


def test_retry_of_a_job_that_has_not_failed_exits_3_and_says_why(live_api: LiveApi) -> None:
    job = json.loads(_trainyard(live_api, "submit", "s3://bucket/pets", "--json").stdout)
    result = _trainyard(live_api, "retry", job["id"])
    assert result.exit_code == ExitCode.REFUSED
    assert "only a failed or cancelled job can be retried" in result.stderr
    _no_traceback(result)


def test_waiting_for_a_failed_job_exits_1_with_plain_lines(live_api: LiveApi) -> None:
    job = json.loads(_trainyard(live_api, "submit", "s3://bucket/pets", "--json").stdout)
    live_api.store.fail(job["id"], "invalid_layout", "needs at least two classes; found 1: a")
    result = _trainyard(live_api, "wait", job["id"])
    assert result.exit_code == ExitCode.JOB_FAILED
    assert f"job {job['id']}  failed: needs at least two classes" in result.stdout
    assert "needs at least two classes" in result.stderr
    assert "\x1b[" not in result.stdout  # not a terminal: no live display, no control codes
    _no_traceback(result)


def test_an_unreachable_api_exits_4_with_the_fix(client_env: Path) -> None:
    result = _run("--url", "http://127.0.0.1:9", "models")
    assert result.exit_code == ExitCode.UNAVAILABLE
    assert "not reachable" in result.stderr and "trainyard up" in result.stderr
    _no_traceback(result)


def test_usage_errors_exit_2(client_env: Path, tmp_path: Path) -> None:
    assert _run("submit", "s3://b/p", "--no-such-flag").exit_code == ExitCode.USAGE
    assert _run("predict", "mdl-1", str(tmp_path / "missing.png")).exit_code == ExitCode.USAGE
    local = _run("--url", "http://127.0.0.1:9", "submit", str(tmp_path / "no-folder"))
    assert local.exit_code == ExitCode.USAGE and "neither an s3:// URI nor a local folder" in local.stderr


@pytest.mark.parametrize("command", [["stack", "status"], ["stack", "status", "--home"]])
def test_stack_status_reports_on_the_stack_home(command: list[str], client_env: Path) -> None:
    home = client_env / "elsewhere"
    args = [*command, str(home)] if command[-1] == "--home" else command
    result = _run(*args, "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["command"] == "status"
    assert document["home"] == str(home if command[-1] == "--home" else client_env / "stack-home")
    assert '"api": false' in result.stderr  # the human report, moved off stdout


def test_an_empty_trainyard_home_means_the_default_folder_everywhere(
    client_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stack's commands and the SDK's search for a running stack agree on one folder: ./.trainyard."""
    monkeypatch.setenv("TRAINYARD_HOME", "")
    monkeypatch.chdir(client_env)
    home = client_env / ".trainyard"
    home.mkdir()
    LocalStack(StackConfig(home=home, api_port=18_123)).save()
    result = _run("stack", "status", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["home"] == str(home)
    assert "http://127.0.0.1:18123" in result.stderr  # the stack the command read is the one saved there
    assert stack_home() == Path(".trainyard").absolute()
    assert ClientConfig.resolve().url == "http://127.0.0.1:18123"  # and the SDK finds the same stack


def test_the_stack_commands_take_their_own_options(client_env: Path) -> None:
    """No pass-through: an option the stack commands do not have is a usage error, named in the help."""
    assert _run("down", "--no-such-option").exit_code == ExitCode.USAGE
    assert "--purge" in _run("down", "--help").stdout


def test_ctrl_c_while_waiting_exits_130_and_the_job_keeps_running(live_api: LiveApi) -> None:
    job = json.loads(_trainyard(live_api, "submit", "s3://bucket/pets", "--json").stdout)
    repo = Path(__file__).resolve().parents[2]
    waiting = subprocess.Popen(
        # -X faulthandler: if it ever hangs, SIGABRT below makes it print where each of its threads is.
        [sys.executable, "-X", "faulthandler", "-m", "trainyard", "--url", live_api.url, "wait", job["id"]],
        cwd=repo,
        env={**os.environ, "PYTHONPATH": str(repo)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # A suite started in the background (`cmd &` in a script) runs with SIGINT ignored, the child inherits
        # that, and Python then installs no Ctrl-C handler: the CLI slept on through the SIGINT (seen twice in
        # full runs; faulthandler showed it still in its polling sleep).
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert waiting.stdout is not None
    first = waiting.stdout.readline()  # the job is queued (no Ray behind this API): it waits for ever
    assert first.startswith(f"job {job['id']}  queued"), first
    waiting.send_signal(signal.SIGINT)
    try:
        out, err = waiting.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        # Seen once in a full run (not reproduced alone): show where it hung, not just that it did.
        waiting.send_signal(signal.SIGABRT)
        out, err = waiting.communicate(timeout=30)
        pytest.fail(f"`trainyard wait` still running 30 s after SIGINT; its threads:\n{err}")
    assert waiting.returncode == ExitCode.INTERRUPTED
    assert f"trainyard wait {job['id']}" in out and "Traceback" not in out + err
    assert json.loads(_trainyard(live_api, "status", job["id"], "--json").stdout)["status"] == "queued"


def test_report_open_shows_a_downloaded_copy_since_a_browser_cannot_send_the_key(
    live_api: LiveApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = json.loads(_trainyard(live_api, "submit", "s3://bucket/pets", "--name", "for-the-browser", "--json").stdout)
    opened: list[str] = []
    monkeypatch.setattr("webbrowser.open", opened.append)
    result = _trainyard(live_api, "report", job["id"], "--open", "--json")
    assert result.exit_code == 0, result.output
    [uri] = opened
    assert uri.startswith("file://") and uri.endswith(f"trainyard-report-{job['id']}.html")
    assert "for-the-browser" in Path(json.loads(result.stdout)["saved"]).read_text()
