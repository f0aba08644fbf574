"""The house rules that keep the layout drawable, checked on every run: no import cycles, nothing reaches into a
stage but the orchestrators, no module over 400 lines, and comments that carry no history.

Imports are read by grimp (the import graph library behind import-linter), every import counted: at module level,
inside functions and under TYPE_CHECKING alike, since each is a dependency a reader has to follow.
"""

from __future__ import annotations

import graphlib
import re
from pathlib import Path

import grimp
import pytest

REPO = Path(__file__).resolve().parents[1]
ROOMS = ("core", "service", "jobs", "serving", "trainyard", "infra")
SIZED_ROOMS = ("core", "service", "jobs", "serving", "trainyard")
MAX_LINES = 400
STAGES = "jobs.stages"
# The only modules outside jobs/stages/ that may import a stage: they are the pipeline's sequence.
ORCHESTRATORS = {
    "jobs.driver": "the job's entrypoint: runs the fetching and validating phases, then hands over to the pipeline",
    "jobs.pipeline": "the stages after validation, in order (LR sweep, training, evaluation, publishing, deploy)",
}
# History in comments and docstrings: issue numbers, session narratives, timestamps, notes outside the repository.
# Written with character classes so that this file does not match itself.
HISTORY = re.compile(r"issue [0-9]+|this[ ]stop|UTC [0-9]+ [A-Z][a-z]{2}|FIELD[-]NOTES")
SKIPPED_DIRS = {".venv", ".git", "node_modules", ".mypy_cache", ".ruff_cache", "__pycache__"}


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph(*ROOMS, cache_dir=None)


def _imports(graph: grimp.ImportGraph) -> dict[str, set[str]]:
    return {module: graph.find_modules_directly_imported_by(module) for module in graph.modules}


def find_cycle(imports: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (its modules in order, the first repeated at the end), or None when there is none."""
    try:
        graphlib.TopologicalSorter(imports).prepare()
    except graphlib.CycleError as cycle:
        return list(cycle.args[1])
    return None


def stage_imports_from_outside(imports: dict[str, set[str]]) -> list[str]:
    """`importer -> stage` for each import of a module under jobs/stages/ by a module outside it, orchestrators
    excepted."""

    def inside(module: str) -> bool:
        return module == STAGES or module.startswith(f"{STAGES}.")

    return sorted(
        f"{importer} -> {imported}"
        for importer, targets in imports.items()
        if not inside(importer) and importer not in ORCHESTRATORS
        for imported in targets
        if inside(imported)
    )


def oversized_modules(root: Path) -> list[str]:
    found = []
    for room in SIZED_ROOMS:
        for path in sorted((root / room).rglob("*.py")):
            lines = len(path.read_text(encoding="utf-8").splitlines())
            if lines > MAX_LINES:
                found.append(f"{path.relative_to(root)}: {lines} lines")
    return found


def history_in_code(root: Path) -> list[str]:
    """What `grep -rnE '<HISTORY>' --include=*.py .` finds, outside the virtual environment and caches."""
    found = []
    for path in sorted(root.rglob("*.py")):
        if SKIPPED_DIRS.intersection(path.relative_to(root).parts):
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if HISTORY.search(line):
                found.append(f"{path.relative_to(root)}:{number}: {line.strip()}")
    return found


def test_no_import_cycles(graph: grimp.ImportGraph) -> None:
    cycle = find_cycle(_imports(graph))
    assert cycle is None, f"import cycle: {' -> '.join(cycle or [])}; move what both sides need into a lower module"


def test_only_the_orchestrators_import_a_stage(graph: grimp.ImportGraph) -> None:
    found = stage_imports_from_outside(_imports(graph))
    assert not found, (
        f"modules outside jobs/stages/ import a stage: {found}; move the shared piece below the stages "
        f"(jobs/dataset.py, jobs/paths.py, ...) or, for a new orchestrator, list it in ORCHESTRATORS with its reason"
    )


def test_no_module_over_400_lines() -> None:
    found = oversized_modules(REPO)
    assert not found, f"split these by concern (one idea a module): {found}"


def test_comments_say_why_not_when() -> None:
    found = history_in_code(REPO)
    assert not found, f"history belongs in commit messages and benchmarks/README.md: {found}"


def test_the_checks_see_what_they_forbid(tmp_path: Path) -> None:
    """Each check on a small made-up tree that breaks its rule: a check that finds nothing there is broken."""
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) is not None
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    assert stage_imports_from_outside({"jobs.tta": {"jobs.stages.validate"}, "jobs.pipeline": {"jobs.stages.x"}}) == [
        "jobs.tta -> jobs.stages.validate"
    ]
    (tmp_path / "core").mkdir()
    (tmp_path / "core" / "big.py").write_text("x = 1\n" * (MAX_LINES + 1))
    (tmp_path / "core" / "small.py").write_text("x = 1\n" * MAX_LINES)
    assert oversized_modules(tmp_path) == [f"core/big.py: {MAX_LINES + 1} lines"]
    (tmp_path / "core" / "noted.py").write_text("# see FIELD" + "-NOTES.md\nx = 1  # fixed in issue " + "12\n")
    (tmp_path / ".venv").mkdir()
    (tmp_path / ".venv" / "vendored.py").write_text("# issue " + "7\n")
    assert [hit.split(": ")[0] for hit in history_in_code(tmp_path)] == ["core/noted.py:1", "core/noted.py:2"]
