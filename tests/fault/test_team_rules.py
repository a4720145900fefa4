"""A team's rules, tried as a team would, on real OpenSSH hosts and a real relay
process: alice (admin) deploys to production in a freeze and is refused, then
overrides it with a reason; bob (observer) cannot abort; alice cannot approve her own
gate (four eyes), carol approves it from ``shipdeck watch``; a ``[[notify]]`` command
hears the gate and the end; the ``[secrets]`` command's canary lands in each host's
``shared/.env`` (0600) and nowhere else: not in any output, transcript, history
database, relay database (and WAL), relay log, notification, or the TUI's screen.

``pytest -m fault tests/fault/test_team_rules.py -s`` prints what happened.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import stat
import sys
from pathlib import Path
from typing import Any

import pytest

from relay.client import RelayClient
from relay.errors import RelayError
from tests.engine.test_deploy_sshd import write_config
from tests.fault.test_secrets_relay import grep_tree
from tests.relay.conftest import ROOT, RelayProcess
from tests.tui.conftest import until
from tui.app import ShipdeckApp
from tui.screens.modals import ConfirmScreen

pytestmark = [pytest.mark.fault, pytest.mark.sshd, pytest.mark.timeout(240)]

ROOM = "web-prod"
TOKENS = {"alice": "token-alice-admin", "bob": "token-bob-observer", "carol": "token-carol-op"}
ROLES = {"alice": "admin", "bob": "observer", "carol": "operator"}

CATCHER = """\
import pathlib, sys, uuid
out = pathlib.Path(sys.argv[1])
(out / (uuid.uuid4().hex + ".json")).write_bytes(sys.stdin.buffer.read())
"""


class TeamRelay(RelayProcess):
    """The relay process with the team's tokens and roles, its log kept."""

    def __init__(self, tmp_path: Path) -> None:
        super().__init__(tmp_path)
        self.tokens.write_text(
            "[operators]\n"
            + "".join(
                f'{name} = {{ token = "{TOKENS[name]}", role = "{role}" }}\n'
                for name, role in ROLES.items()
            )
        )
        self.log = tmp_path / "relay-stderr.log"
        self.log_level = "info"


async def _shipdeck(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tui.cli",
        *args,
        cwd=ROOT,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def _team_config(tmp_path: Path, fleet: Any, repo: Path, url: str, canary: str) -> Path:
    maker = tmp_path / "pass-show.py"  # stands in for `pass show web/env`
    maker.write_text(
        f"print('DATABASE_URL=postgres://web:{canary}@db.internal/web')\nprint('RAILS_ENV=production')\n"
    )
    catcher = tmp_path / "catch.py"
    catcher.write_text(CATCHER)
    caught = tmp_path / "notified"
    caught.mkdir()
    path = write_config(
        tmp_path / "shipdeck.toml",
        fleet,
        repo,
        batches='["1", "100%"]',
        approve="true",
        require_distinct_approver="true",
        shared='["log", ".env"]',
        # a hook that prints the env file: what it prints is masked everywhere
        before_activate='["cat .env", "test -f ../../shared/.env"]',
    )
    notify = f"{sys.executable} {catcher} {caught}"
    path.write_text(
        path.read_text()
        + f"""
[relay]
url = "{url}"
room = "{ROOM}"

[secrets]
command = {json.dumps(f"{sys.executable} {maker}")}

[[notify]]
on = ["gate", "finished", "failed", "freeze_override"]
command = {json.dumps(notify)}

[env.production]
default = true

[[env.production.freeze]]
name = "year-end"
from = 2020-01-01
reason = "year-end freeze: only hotfixes"
"""
    )
    return path


async def test_a_team_deploys_to_production_under_its_rules(
    sshd_fleet, sample_repo: Path, tmp_path: Path, _isolated_state: Path
) -> None:
    fleet = sshd_fleet(2)
    canary = f"canary-DB-{secrets.token_hex(8)}"
    needle = canary.encode()
    relay = TeamRelay(tmp_path)
    outputs: dict[str, str] = {}
    clients: list[RelayClient] = []
    try:
        url = await asyncio.to_thread(relay.start)
        config = str(_team_config(tmp_path, fleet, sample_repo, url, canary))
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "SHIPDECK_TOKEN": TOKENS["alice"],
        }
        env.pop("SHIPDECK_OPERATOR", None)

        # 1. alice deploys to production inside the freeze: refused, nothing changed
        code, out, err = await _shipdeck(
            "deploy", "-c", config, "-e", "production", "--headless", env=env
        )
        outputs["refused deploy"] = out + err
        print(f"\n$ shipdeck deploy -e production --headless\n{err.strip()}\n(exit {code})")
        assert code == 3, out + err
        assert "deploy refused: freeze window 'year-end'" in err and "only hotfixes" in err
        assert not any((h.home / "app" / "current").exists() for h in fleet.hosts)

        # carol watches the room in the TUI (shipdeck watch)
        from relay.publish import tui_watch

        chat, watcher = tui_watch(url, ROOM, token=TOKENS["carol"], operator="carol")
        app = ShipdeckApp(None, chat=chat, operator="carol", watch=ROOM, cursor_blink=False)
        app.watcher = watcher
        async with app.run_test(size=(140, 45)) as pilot:
            await until(pilot, lambda: app.relay_status == "connected", 10, "carol connected")

            # 2. alice overrides as admin, with a reason; the deploy runs to its gate
            deploy = asyncio.ensure_future(
                _shipdeck(
                    "deploy",
                    "-c",
                    config,
                    "-e",
                    "production",
                    "--headless",
                    "-v",
                    "--override-freeze",
                    "--reason",
                    "hotfix for the login outage",
                    env=env,
                )  # fmt: skip
            )
            await until(
                pilot, lambda: app.model.waiting_gate == "release/gate-1", 90, "gate in watch"
            )

            # 3. bob (observer) cannot abort; alice cannot approve her own gate
            bob = RelayClient(url, ROOM, TOKENS["bob"])
            alice = RelayClient(url, ROOM, TOKENS["alice"])
            clients += [bob, alice]
            await bob.start(timeout=10)
            await alice.start(timeout=10)
            with pytest.raises(RelayError) as refused_abort:
                await bob.control("abort")
            print(f"bob (observer) aborts: {refused_abort.value}")
            assert refused_abort.value.code == "forbidden"
            with pytest.raises(RelayError) as refused_approval:
                await alice.control("approve", "release/gate-1")
            print(f"alice approves her own gate: {refused_approval.value}")
            assert refused_approval.value.code == "not_approver"
            assert "require_distinct_approver" in refused_approval.value.message

            # 4. carol approves from her watch TUI: g, then Enter in the gate dialog
            await pilot.press("g")
            await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
            await pilot.press("enter")
            code, out, err = await asyncio.wait_for(deploy, 120)
            outputs["deploy"] = out + err
            print("$ shipdeck deploy -e production --headless -v --override-freeze --reason ...")
            print("\n".join(line for line in (out + err).splitlines() if _worth_showing(line)))
            print(f"(exit {code})")
            assert code == 0, out + err
            await until(pilot, lambda: app.model.finished is not None, 20, "finished in watch")
            approvals = app.model.state.approvals["release/gate-1"]
            assert [a["by"] for a in approvals] == ["carol"]
            screen = app.export_screenshot()
            (tmp_path / "carol-watch.svg").write_text(screen)
            assert "carol" in screen  # the capture holds the screen's text
        for c in clients:
            await c.close()
        clients = []

        # every host runs the release, with the env file as the secrets command made it
        for h in fleet.hosts:
            env_file = h.home / "app" / "shared" / ".env"
            assert needle in env_file.read_bytes()
            assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
            assert (h.home / "app" / "current").exists()
        assert "DATABASE_URL=[secret]" in outputs["deploy"]  # the hook's printout, masked
        assert "overridden by alice (admin): hotfix for the login outage" in outputs["deploy"]

        # 5. the notify command heard the override, the gate and the end
        heard = [json.loads(p.read_text()) for p in (tmp_path / "notified").iterdir()]
        print("notified: " + ", ".join(sorted(m["on"] for m in heard)))
        assert sorted(m["on"] for m in heard) == ["finished", "freeze_override", "gate"]
        assert all(m["env"] == "production" and m["operator"] == "alice" for m in heard)

        # history: who approved, the override; `shipdeck show` says so
        code, out, err = await _shipdeck("history", env=env)
        outputs["history"] = out + err
        deploy_id = next(line.split()[0] for line in out.splitlines()[1:] if "ok" in line)
        code, out, err = await _shipdeck("show", deploy_id, env=env)
        outputs["show"] = out + err
        print(f"$ shipdeck show {deploy_id}\n" + "\n".join(out.splitlines()[:12]))
        assert code == 0 and "approved  release/gate-1 by carol at" in out
        assert "overridden by alice (admin): hotfix for the login outage" in out
        # exec and logs show what the hosts print: the env file's values masked
        code, out, err = await _shipdeck("exec", "-c", config, "--", "cat .env", env=env)
        outputs["exec"] = out + err
        assert code == 0, out + err
        assert out.count("| DATABASE_URL=[secret]") == len(fleet.hosts)
        code, out, err = await _shipdeck("logs", "-c", config, "shared/.env", env=env)
        outputs["logs"] = out + err
        assert code == 0, out + err
        assert out.count("| DATABASE_URL=[secret]") == len(fleet.hosts)
        print("$ shipdeck logs shared/.env\n" + out.splitlines()[0])
        code, out, err = await _shipdeck("tail", "--relay", url, "--room", ROOM, "--json", env=env)
        outputs["tail"] = out + err
        live_db = {p.name: p.read_bytes() for p in tmp_path.glob("relay.db*")}
        assert await asyncio.to_thread(relay.terminate) == 0
    finally:
        for c in clients:
            await c.close(flush=0)
        relay.stop()

    # -- the canary: only in the hosts' shared/.env --------------------------------------
    env_files = {h.home / "app" / "shared" / ".env" for h in fleet.hosts}
    leaks = [name for name, text in outputs.items() if canary in text]
    leaks += [name for name, data in live_db.items() if needle in data]
    test_hits, test_searched = grep_tree(tmp_path, [needle], {tmp_path / "pass-show.py"})
    state_hits, state_searched = grep_tree(_isolated_state, [needle], set())
    host_hits, host_searched = grep_tree(fleet.root, [needle], set())
    print(
        f"canary: searched {len(outputs)} outputs, {len(live_db)} live relay db files, "
        f"{test_searched} files of the test (relay db+wal+log, notifications, screen), "
        f"{state_searched} of history and transcripts, {host_searched} on the hosts: "
        f"found only in {sorted(host_hits)}"
    )
    assert leaks == [] and test_hits == [] and state_hits == []
    assert {Path(p) for p in host_hits} == env_files


def _worth_showing(line: str) -> bool:
    return any(
        word in line
        for word in ("freeze", "overridden", "gate", "approv", "secrets", ".env", "OK:", "DATABASE")
    )
