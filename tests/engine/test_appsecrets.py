"""[secrets], pure and local: the config's rules, the values an env file holds, the
redaction of events, the env file made by a command or from the environment, and the
host-side script (run here with a real sh) that writes it 0600 only when it changed."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from engine.appsecrets import (
    MASK,
    EnvFile,
    Redactor,
    SecretsConfig,
    SecretsError,
    produce,
    secret_values,
)
from engine.config import ConfigError, parse_config
from engine.events import DeployFinished, LogLine, NodeStatus, PlanReady
from engine.remote.envfile import env_file_result, env_file_script

pytestmark = pytest.mark.timeout(30)

BASE = '[project]\nname = "p"\nrepo = "."\n[deploy]\npath = "app"\n[hosts]\nweb = ["a"]\n'


def test_secrets_config_errors_name_file_line_and_key() -> None:
    config = parse_config(BASE + '[secrets]\ncommand = "pass show web/env"\n', "x.toml")
    assert config.secrets == SecretsConfig(command="pass show web/env")
    assert config.secrets.path == "shared/.env"
    for body, words in [
        ('[secrets]\npath = "shared/.env"\n', "either command"),
        ('[secrets]\ncommand = "x"\nenv = ["A"]\n', "either command"),
        ('[secrets]\nenv = ["9LIVES"]\n', "'9LIVES' is not an environment variable name"),
        ('[secrets]\nenv = ["A"]\npath = "/etc/app.env"\n', "relative path inside"),
        ('[secrets]\nenv = ["A"]\npath = "../x"\n', "relative path inside"),
        ('[secrets]\nenv = ["A"]\nfile = "x"\n', "file"),
    ]:
        with pytest.raises(ConfigError) as err:
            parse_config(BASE + body, "x.toml")
        text = str(err.value)
        assert text.startswith("x.toml:") and "secrets" in text and words in text, text


def test_values_of_an_env_file() -> None:
    text = (
        "# a comment\n\nDATABASE_URL=postgres://u:pw-123@db/app\n"
        "export API_KEY='k-456789'\nSHORT=on\nnot an assignment line\n"
    )
    values = secret_values(text)
    assert "postgres://u:pw-123@db/app" in values
    assert "k-456789" in values and "'k-456789'" in values
    assert "not an assignment line" in values
    assert "on" not in values and "# a comment" not in values
    assert list(values) == sorted(values, key=len, reverse=True)


def test_redactor_masks_every_string_an_event_carries() -> None:
    r = Redactor(("s3cr3t-value",))
    line = LogLine("d", key="k", text="DATABASE_URL=s3cr3t-value in the hook")
    assert r.event(line).text == f"DATABASE_URL={MASK} in the hook"  # type: ignore[attr-defined]
    clean = NodeStatus("d", key="k", status="ok", detail="fine")
    assert r.event(clean) is clean
    finished = DeployFinished("d", summary={"failures": {"h1": "died: s3cr3t-value"}, "ok": 1})
    assert r.event(finished).summary == {"failures": {"h1": f"died: {MASK}"}, "ok": 1}  # type: ignore[attr-defined]
    plan = PlanReady("d", nodes=[{"key": "a", "detail": "x s3cr3t-value"}], meta={"ref": "main"})
    masked = r.event(plan)
    assert masked.nodes[0]["detail"] == f"x {MASK}" and masked.meta is plan.meta  # type: ignore[attr-defined]
    assert Redactor(("abc",)).text("abc") == "abc"  # too short to hide
    assert not Redactor()


async def test_produce_from_a_command_and_from_the_environment(tmp_path: Path) -> None:
    script = tmp_path / "secrets.py"
    script.write_text("print('DATABASE_URL=postgres://canary-42@db/app')\nprint('TOKEN=t0k3n-x')\n")
    env_file = await produce(SecretsConfig(command=f"{sys.executable} {script}"), tmp_path)
    assert env_file.content == b"DATABASE_URL=postgres://canary-42@db/app\nTOKEN=t0k3n-x\n"
    assert set(env_file.values) == {"postgres://canary-42@db/app", "t0k3n-x"}
    assert env_file == EnvFile.of(env_file.content)

    failing = SecretsConfig(
        command="echo 'DATABASE_URL=leaky-secret'; echo 'no key leaky-secret' >&2; exit 4"
    )
    with pytest.raises(SecretsError) as err:
        await produce(failing, tmp_path)
    assert "exit 4" in str(err.value) and "leaky-secret" not in str(err.value)
    with pytest.raises(SecretsError) as err:
        await produce(SecretsConfig(command="sleep 600", timeout=0.3), tmp_path)
    assert "timed out after 0.3s" in str(err.value)

    env = {"DATABASE_URL": "postgres://from-env@db/app", "PORT": "80"}
    made = await produce(SecretsConfig(env=("DATABASE_URL", "PORT")), tmp_path, env)
    assert made.content == b"DATABASE_URL=postgres://from-env@db/app\nPORT=80\n"
    assert made.values == ("postgres://from-env@db/app",)
    with pytest.raises(SecretsError) as err:
        await produce(SecretsConfig(env=("MISSING_ONE",)), tmp_path, env)
    assert "MISSING_ONE is not set" in str(err.value)


def _write(home: Path, content: bytes) -> str | None:
    env_file = EnvFile.of(content)
    script = env_file_script(str(home / "app"), "shared/.env", env_file.sha256)
    assert content.decode() not in script  # the bytes travel on stdin only
    res = subprocess.run(
        ["sh", "-c", script], input=content, capture_output=True, timeout=10, check=True
    )
    return env_file_result(res.stdout.decode())


def test_the_host_script_writes_0600_only_when_changed(tmp_path: Path) -> None:
    (tmp_path / "app").mkdir()
    target = tmp_path / "app" / "shared" / ".env"
    assert _write(tmp_path, b"A=first-value\n") == "written"
    assert target.read_bytes() == b"A=first-value\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    before = target.stat().st_mtime_ns
    assert _write(tmp_path, b"A=first-value\n") == "unchanged"
    assert target.stat().st_mtime_ns == before
    os.chmod(target, 0o644)  # someone loosened it: an unchanged file is tightened again
    assert _write(tmp_path, b"A=first-value\n") == "unchanged"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert _write(tmp_path, b"A=second-value\n") == "written"
    assert target.read_bytes() == b"A=second-value\n"
    assert sorted(p.name for p in target.parent.iterdir()) == [".env"]  # no temp file left
    assert env_file_result("noise\nSD_ENVFILE bogus\n") is None
