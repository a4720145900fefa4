"""Fixtures for the fault tests: the crash harness runs on real sshd hosts."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.localfleet import make_sample_repo


def sshd_config_text(fleet, repo: Path, **deploy: str) -> str:
    d = {
        "path": '"app"',
        "keep_releases": "3",
        "shared": '["log"]',
        "before_activate": '["true"]',
        "after_activate": '["./bin/restart"]',
        "health": '"./bin/health"',
        "health_timeout": "5",
        "health_interval": "0.2",
        **deploy,
    }
    hosts = ", ".join(f'"{h.spec}"' for h in fleet.hosts)
    return "\n".join(
        [
            "[project]",
            'name = "crash"',
            f'repo = "{repo}"',
            "[deploy]",
            *(f"{k} = {v}" for k, v in d.items()),
            "[ssh]",
            f'identity = "{fleet.client_key}"',
            f'known_hosts = "{fleet.known_hosts}"',
            'config = ""',
            "connect_timeout = 5",
            "[hosts]",
            f"web = [{hosts}]",
            "",
        ]
    )


@pytest.fixture
def crash_fleet(sshd_fleet, tmp_path: Path):
    """(host dirs, config writer, repo) on 3 real sshd hosts; no build step, so the
    whole tree (with a 3 MiB random file) is the package."""
    fleet = sshd_fleet(3)
    repo = make_sample_repo(tmp_path / "repo")

    def make_config() -> Path:
        path = tmp_path / "shipdeck.toml"
        # a killed deploy's lock goes stale once its heartbeat is older than lock_ttl:
        # the rerun waits for that (lock_wait) instead of stopping
        path.write_text(sshd_config_text(fleet, repo, lock_ttl="1", lock_wait="30"))
        return path

    return (lambda: [h.home for h in fleet.hosts]), make_config, repo
