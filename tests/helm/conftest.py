from __future__ import annotations

from pathlib import Path

import pytest

from tests.helm.chart import fetch_helm


@pytest.fixture(scope="session")
def helm() -> Path:
    return fetch_helm()
