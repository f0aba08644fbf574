"""The shared test helpers have one import name: `tests.utils.<module>`.

Imported under a bare name as well (`from service_testkit import …`, which works only while its folder is on
sys.path), a helper module is loaded twice, as two modules with two copies of every class and global.
"""

from __future__ import annotations

import re
from pathlib import Path

TESTS = Path(__file__).resolve().parent
# Helper modules by stem, but for those named like one of the project's packages (`jobs`): bare, that is the
# package.
HELPERS = {
    p.stem for p in (TESTS / "utils").glob("*.py") if p.stem != "__init__" and not (TESTS.parent / p.stem).is_dir()
}
BARE = re.compile(rf"^\s*(?:from|import)\s+({'|'.join(sorted(HELPERS))}|service_testkit)\b", re.MULTILINE)


def test_helpers_are_imported_only_as_tests_utils() -> None:
    found = [
        f"{path.relative_to(TESTS.parent)}: {match.group(0).strip()}"
        for path in TESTS.rglob("*.py")
        for match in BARE.finditer(path.read_text())
    ]
    assert not found, "import these from tests.utils instead:\n" + "\n".join(found)
    assert not list(TESTS.rglob("service_testkit.py")), "the API test helpers live in tests/utils/api_server.py"
