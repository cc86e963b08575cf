from __future__ import annotations

from pathlib import Path

import pytest

from tests.isic_server import SHARED_DATA, IsicTestServer, make_records


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (real labelled images) or a visible skip."""
    root = SHARED_DATA.resolve()
    if not (root / "manifest.csv").is_file():
        pytest.skip(f"real data not available: {root}/manifest.csv is absent")
    return root


@pytest.fixture
def isic_server():
    """A loopback ISIC API serving 7 generated images, 2 per listing page."""
    with IsicTestServer(make_records(7, seed=1), page_size=2) as server:
        yield server
