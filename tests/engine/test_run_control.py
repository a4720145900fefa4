"""Run control without a host: the gates (engine/gates.py), the run-once stage's
label and host (engine/once.py) and the failure budget's stop reason (engine/run.py).
Deploys that reach hosts are tests/engine/test_deploy_*.py."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from engine.config import parse_config
from engine.deploy import Deployment
from engine.events import CANCELLED, OK, WAITING, Control, Event, GateWaiting
from engine.history import History
from engine.once import once_host, once_label

CONFIG = """
[project]
name = "web"
repo = "/srv/git/web.git"

[deploy]
path = "/srv/web"
batches = ["1", "100%"]
approve = true
max_fail = "1"
{extra}

[hosts]
web = ["web1", "web2", "web3"]
"""


def deployment(tmp_path: Path, extra: str = "", **kw) -> Deployment:
    config = parse_config(CONFIG.format(extra=extra), tmp_path / "shipdeck.toml")
    return Deployment(config, operator="ana", history=History(tmp_path / "h.db"), **kw)


async def until_waiting(seen: list[Event]) -> None:
    while not any(isinstance(e, GateWaiting) for e in seen):
        await asyncio.sleep(0)


async def test_a_gate_waits_for_one_approval_then_lets_the_next_wave_go(tmp_path) -> None:
    d = deployment(tmp_path)
    seen: list[Event] = []
    d.subscribe(seen.append)
    assert not d.approve()  # no gate waits yet
    gate = asyncio.ensure_future(d._gate(1))
    await asyncio.wait_for(until_waiting(seen), 5)
    assert d.waiting_gate == "release/gate-1"
    assert d.plan["release/gate-1"].status == WAITING
    assert d.approve(by="bo")
    assert not d.approve(by="bo")  # approved once; a second approval is refused
    await asyncio.wait_for(gate, 5)
    assert d.waiting_gate is None
    node = d.plan["release/gate-1"]
    assert (node.status, node.detail) == (OK, "approved")
    approvals = [e for e in seen if isinstance(e, Control) and e.action == "approve"]
    assert [(e.by, e.key) for e in approvals] == [("bo", "release/gate-1")]


async def test_an_abort_at_a_gate_cancels_it(tmp_path) -> None:
    d = deployment(tmp_path)
    seen: list[Event] = []
    d.subscribe(seen.append)
    gate = asyncio.ensure_future(d._gate(1))
    await asyncio.wait_for(until_waiting(seen), 5)
    d.abort(by="bo", reason="bad canary")
    await asyncio.wait_for(gate, 5)
    node = d.plan["release/gate-1"]
    assert (node.status, node.detail) == (CANCELLED, "bad canary")
    assert not d.approve()


async def test_a_gate_after_a_stop_does_not_wait(tmp_path) -> None:
    d = deployment(tmp_path)
    d.stop_reason = "failure budget exceeded"
    await asyncio.wait_for(d._gate(1), 5)
    assert d.plan["release/gate-1"].status == "skipped"
    assert d.waiting_gate is None


async def test_yes_approves_every_gate(tmp_path) -> None:
    d = deployment(tmp_path, auto_approve=True)
    assert "release/gate-1" not in d.plan
    await asyncio.wait_for(d._gate(1), 5)  # nothing to wait for


def test_the_budget_reason_says_how_many_failed_and_what_max_fail_allows(tmp_path) -> None:
    d = deployment(tmp_path)
    assert not d.stopping
    d.budget.fail("web1", "unhealthy")
    d.budget.fail("web2", "exit 1")
    assert d.stopping
    assert d.budget_reason() == "failure budget exceeded: 2 failed, max_fail allows 1"
    assert d.budget_reason(before_change=True) == (
        "failure budget exceeded before anything changed: 2 failed, max_fail allows 1"
    )


def test_the_once_stage_is_labelled_with_its_host_and_commands(tmp_path) -> None:
    d = deployment(tmp_path, 'once = ["./bin/migrate", "./bin/seed"]')
    waves = [d.selected[:1], d.selected[1:]]
    assert once_label(d.config, waves) == "once on web1: ./bin/migrate; ./bin/seed"
    assert d.plan["release/once"].label == "once on web1: ./bin/migrate; ./bin/seed"
    pinned = deployment(tmp_path, 'once = ["./bin/migrate"]\nonce_host = "web3"')
    assert once_label(pinned.config, waves) == "once on web3: ./bin/migrate"
    assert once_label(deployment(tmp_path).config, waves) == ""


@pytest.mark.parametrize(
    ("once_host_line", "staged", "chosen"),
    [
        ("", {"web1", "web2"}, "web1"),
        ("", {"web2", "web3"}, "web2"),  # the first host unpacked
        ('once_host = "web3"', {"web1", "web3"}, "web3"),
        ('once_host = "web3"', {"web1", "web2"}, None),  # the host asked for is not unpacked
        ('once_host = "db9"', {"web1", "web2", "web3"}, None),
    ],
)
def test_the_once_host_is_the_one_asked_for_else_the_first_unpacked(
    tmp_path, once_host_line, staged, chosen
) -> None:
    d = deployment(tmp_path, f'once = ["./bin/migrate"]\n{once_host_line}')
    for hr in d.hosts.values():
        hr.staged = hr.st.name in staged
    hr = once_host(d)
    assert (hr.st.name if hr else None) == chosen
