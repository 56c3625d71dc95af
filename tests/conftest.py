from __future__ import annotations

from pathlib import Path

import pytest

from .mosquitto import mosquitto  # noqa: F401 - the real broker fixture of the MQTT tests
from .postgres import postgres_server, postgres_url  # noqa: F401 - a private PostgreSQL

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


@pytest.fixture(params=["sqlite", "postgresql"])
def state_location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where a store test keeps its state, once per backend: a SQLite file,
    then a fresh database on the private PostgreSQL server. One store
    interface, two engines, the same tests."""
    if request.param == "sqlite":
        return str(tmp_path / "state.db")
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} is absent: the shared conformance and benchmark data are not here")
    return SHARED


# In CI, property and fuzz tests draw the same examples every run, so a red
# build is reproducible; locally they explore afresh each time.
try:
    import os

    from hypothesis import settings

    settings.register_profile("ci", derandomize=True, print_blob=True)
    if os.environ.get("CI"):
        settings.load_profile("ci")
except ImportError:  # pragma: no cover
    pass
