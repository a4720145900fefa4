"""Fixtures for the fault tests: the crash harness runs on real sshd hosts when sshd
is installed, else on the local fleet (and says so)."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.localfleet import LocalFleet, make_sample_repo

DEPLOY = dict(
    build_commands=[],
    artifact=None,
    before_activate=["true"],
    keep_releases=3,
    health_timeout=5,
)


@pytest.fixture
async def crash_fleet(tmp_path: Path):
    repo = make_sample_repo(tmp_path / "repo")
    async with LocalFleet(tmp_path / "fleet", 3) as fleet:

        def make_config() -> Path:
            return fleet.write_config(tmp_path / "shipdeck.toml", repo, **DEPLOY)

        yield (lambda: [h.home for h in fleet.hosts]), make_config, repo
