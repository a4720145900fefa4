"""Shared fixtures: isolated XDG dirs, a sample git repo, the in-process local fleet,
and (from tests/sshd.py) real OpenSSH sshd hosts on loopback."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from engine.config import load_config
from engine.localfleet import LocalFleet, make_sample_repo

try:  # real sshd hosts (tests/sshd.py)
    from tests.sshd import *  # noqa: F401,F403
except ImportError:  # pragma: no cover - while tests/sshd.py does not exist yet
    pass


def pytest_configure(config: pytest.Config) -> None:
    """A private temp root per session: pytest's shared /tmp/pytest-of-<user> keeps only
    the newest few sessions, so a second session running at the same time could delete
    the directories (authorized_keys, homes) of this session's sshd hosts."""
    if not config.option.basetemp and not hasattr(config, "workerinput"):
        config.option.basetemp = tempfile.mkdtemp(prefix="shipdeck-tests-")
        config._shipdeck_basetemp = config.option.basetemp  # type: ignore[attr-defined]


def pytest_unconfigure(config: pytest.Config) -> None:
    path = getattr(config, "_shipdeck_basetemp", None)
    if path:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(autouse=True)
def _isolated_state(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """Every test gets its own cache (git mirrors, packages) and state (history)."""
    base = tmp_path_factory.mktemp("xdg")
    monkeypatch.setenv("XDG_CACHE_HOME", str(base / "cache"))
    monkeypatch.setenv("XDG_STATE_HOME", str(base / "state"))
    monkeypatch.setenv("SHIPDECK_OPERATOR", "tester")
    monkeypatch.delenv("SHIPDECK_TOKEN", raising=False)
    return base


@pytest.fixture
def sample_repo(tmp_path: Path) -> Path:
    return make_sample_repo(tmp_path / "repo")


@pytest.fixture
async def fleet(tmp_path: Path):
    async with LocalFleet(tmp_path / "fleet", 3) as f:
        yield f


@pytest.fixture
def fleet_config(fleet: LocalFleet, sample_repo: Path, tmp_path: Path):
    """Write a config for the local fleet; keyword arguments override [deploy] keys."""

    def make(**overrides):
        path = fleet.write_config(tmp_path / "shipdeck.toml", sample_repo, **overrides)
        return load_config(path)

    return make
