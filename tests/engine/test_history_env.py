"""History records the environment and a freeze override; a database made before
those columns existed gains them when opened."""

from __future__ import annotations

import sqlite3

from engine.history import SCHEMA, History


def test_env_and_override_are_recorded_and_an_old_database_gains_the_columns(tmp_path) -> None:
    path = tmp_path / "history.db"
    old = SCHEMA.replace(",\n    env TEXT,\n    freeze_override TEXT", "")
    assert "env TEXT" not in old
    with sqlite3.connect(path) as db:
        db.executescript(old)
        db.execute(
            "INSERT INTO deploys (id, kind, project, started, status) VALUES ('old', 'deploy', 'web', 1, 'ok')"
        )
    h = History(path)
    override = {"window": "friday", "reason": "hotfix", "by": "alice", "role": "admin"}
    h.start("d-1", "deploy", "web", "main", "alice", "shipdeck.toml", env="production", freeze_override=override)
    new, before = h.get("d-1"), h.get("old")
    assert new["env"] == "production" and new["freeze_override"] == override
    assert before["env"] is None and before["freeze_override"] is None
