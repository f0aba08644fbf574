"""README.md's test figures come from the suite: scripts/test's runs write them, nobody types them.

The plugin (tests/utils/summary.py) runs here for real, in a pytest subprocess on a tiny test file, against a
copy of the README.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.utils.summary import BEGIN, END, LINE, README, RUN_LABELS, Summary, figure_line, update_block

REPO = Path(__file__).resolve().parents[2]


def _block(text: str) -> list[str]:
    assert text.count(BEGIN) == 1 and text.count(END) == 1, "one figures block, between its two markers"
    return text[text.index(BEGIN) + len(BEGIN) : text.index(END)].strip().splitlines()


def test_the_readme_quotes_figures_written_by_the_suite_for_both_speeds() -> None:
    lines = _block(README.read_text())
    assert [line.split(":")[0] for line in lines] == ["- `scripts/test`", "- `scripts/test --quick`"]
    for line in lines:
        assert LINE.match(line), f"not written by tests/utils/summary.py: {line!r}"


def test_a_run_replaces_only_its_own_line() -> None:
    text = f"intro\n{BEGIN}\n- `scripts/test`: 1 tests passed in 1.0 s on 2 cores (2020-01-01)\n{END}\nrest\n"
    quick = Summary(run="quick", started_at="2026-12-07T03:00:00+00:00", wall_s=95.4, outcomes={"passed": 7}, cpus=2)
    once = update_block(text, quick)
    assert _block(once) == [
        "- `scripts/test`: 1 tests passed in 1.0 s on 2 cores (2020-01-01)",
        "- `scripts/test --quick`: 7 tests passed in 1 min 35 s on 2 cores (2026-12-07)",
    ]
    whole = Summary(
        run="whole", started_at="2026-12-07T04:00:00+00:00", wall_s=601, outcomes={"passed": 9, "skipped": 1}, cpus=2
    )
    twice = update_block(once, whole)
    assert (
        _block(twice)[0]
        == figure_line(whole)
        == ("- `scripts/test`: 9 tests passed (1 skipped) in 10 min 01 s on 2 cores (2026-12-07)")
    )
    assert _block(twice)[1] == _block(once)[1] and twice.startswith("intro\n") and twice.endswith("rest\n")
    assert all(LINE.match(line) for line in _block(twice))


def _run(tmp_path: Path, test_body: str, run: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    (tmp_path / "test_tiny.py").write_text(test_body)
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n{BEGIN}\n- `scripts/test`: 1 tests passed in 1.0 s on 2 cores (2020-01-01)\n{END}\n")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", str(tmp_path / "test_tiny.py"), "-p", "tests.utils.summary",
         "--summary-dir", str(tmp_path / "build"), "--summary-run", run, "--summary-readme", str(readme),
         "-p", "no:cacheprovider", "--rootdir", str(tmp_path), "-c", "/dev/null"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    return result, readme


def test_a_passing_whole_run_writes_its_summary_and_its_readme_line(tmp_path: Path) -> None:
    body = "import time\ndef test_slow():\n    time.sleep(0.3)\ndef test_fast():\n    pass\n"
    result, readme = _run(tmp_path, body, "whole")
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads((tmp_path / "build" / "test-summary.json").read_text())
    assert summary["outcomes"] == {"passed": 2} and summary["run"] == "whole"
    assert [s["nodeid"].split("::")[1] for s in summary["slowest"]] == ["test_slow", "test_fast"]
    assert summary["slowest"][0]["seconds"] >= 0.3
    assert [m["module"] for m in summary["modules"]] == ["test_tiny.py"]
    assert summary["modules"][0]["seconds"] >= summary["slowest"][0]["seconds"]
    assert "test_slow" in (tmp_path / "build" / "test-summary.md").read_text()
    (line,) = _block(readme.read_text())
    assert line.startswith("- `scripts/test`: 2 tests passed in ") and LINE.match(line)


def test_a_failing_run_leaves_the_readme_alone(tmp_path: Path) -> None:
    failing, readme = _run(tmp_path, "def test_no():\n    assert False\n", "whole")
    assert failing.returncode == 1
    assert "1 tests passed in 1.0 s" in readme.read_text()
    assert json.loads((tmp_path / "build" / "test-summary.json").read_text())["outcomes"] == {"failed": 1}
    assert "selection" not in RUN_LABELS  # a selection (scripts/test with arguments) never touches it either
