"""Waves, failure budget, abort, gates, host keys and password prompts (local fleet)."""

from __future__ import annotations

import asyncio

import asyncssh
import pytest

from engine.config import load_config
from engine.deploy import Deployment
from engine.localfleet import LocalFleet, commit_version
from tests.helpers import Recorder, current, current_version

pytestmark = pytest.mark.timeout(60)


async def test_waves_run_in_order(fleet, fleet_config) -> None:
    d = Deployment(fleet_config(batches=["1", "50%", "100%"]))
    rec = Recorder()
    d.subscribe(rec)
    assert [w.label for w in d.plan.waves()] == [
        "wave 1 (canary: 1 host)",
        "wave 2 (2 hosts) (50%)",
    ]
    result = await d.run()
    assert result.exit_code == 0
    order = [
        e.key
        for e in rec.of("status")
        if e.key.startswith("release/wave-") and e.key.count("/") == 1
    ]
    # wave 2 starts only after wave 1 finished
    assert order == ["release/wave-1", "release/wave-1", "release/wave-2", "release/wave-2"]
    w1_done = next(
        i
        for i, e in enumerate(rec.events)
        if getattr(e, "key", "") == "release/wave-1" and e.status == "ok"
    )
    # every host is connected and locked first (the fleet lock); nothing else of
    # wave 2 starts before wave 1 is done
    w2_host_start = next(
        i
        for i, e in enumerate(rec.events)
        if getattr(e, "key", "").startswith("release/wave-2/")
        and not getattr(e, "key", "").endswith(("/connect", "/lock"))
    )
    assert w1_done < w2_host_start


async def test_failure_budget_stops_the_deploy(fleet, fleet_config, sample_repo) -> None:
    config = fleet_config(batches=["1", "1", "1"], max_fail="0", health_timeout=0.5)
    await Deployment(config).run()
    commit_version(sample_repo, "2.0.0")
    fleet.fail_health("host1", "2.0.0")
    d = Deployment(config)
    result = await d.run()
    assert result.exit_code == 3
    assert result.summary["failed"] == 1 and result.summary["skipped"] == 2
    assert "failure budget exceeded" in result.summary["reason"]
    assert "host1" in result.summary["failures"]
    assert d.plan["release/wave-2"].status == "skipped"
    for name in ("host2", "host3"):  # never touched
        assert current_version(fleet.host(name).home / "app") == "1.0.0"


async def test_budget_within_one_wave_skips_hosts_not_started(fleet, fleet_config) -> None:
    fleet.fail_health("host1")
    result = await Deployment(fleet_config(parallel=1, max_fail="0", health_timeout=0.3)).run()
    assert result.exit_code == 3
    assert result.summary["skipped"] == 2


async def test_abort_stops_at_a_safe_point(fleet, fleet_config, sample_repo) -> None:
    config = fleet_config(parallel=1)
    first = Deployment(config)
    await first.run()
    commit_version(sample_repo, "2.0.0")
    d = Deployment(config)
    rec = Recorder()
    d.subscribe(rec)

    def abort_on_activate(event) -> None:
        if (
            event.type == "status"
            and event.key == "release/wave-1/host1/activate"
            and event.status == "running"
        ):
            d.abort(by="bob", reason="looks wrong")

    d.subscribe(abort_on_activate)
    result = await d.run()
    assert result.exit_code == 3
    assert result.summary["reason"] == "looks wrong"
    # host1 was being switched: it ends exactly one of "switched and healthy" (its quick
    # restart and health check were done before the abort reached them) or "stopped
    # and rolled back" -- never half-switched (a long hook is stopped for certain:
    # tests/engine/test_abort_sshd.py)
    host1 = d.plan["release/wave-1/host1"]
    if current_version(fleet.host("host1").home / "app") == "2.0.0":
        assert d.plan["release/wave-1/host1/health"].status == "ok"
        assert host1.status == "ok"
    else:
        assert current_version(fleet.host("host1").home / "app") == "1.0.0"
        assert "rolled back to " + first.release_id in host1.detail
    # the others never started and were cancelled; current untouched; locks released
    for name in ("host2", "host3"):
        app = fleet.host(name).home / "app"
        assert d.plan[f"release/wave-1/{name}"].status == "cancelled"
        assert current(app) == first.release_id
    for h in fleet.hosts:
        assert not (h.home / "app" / ".shipdeck.lock").exists()
    assert any(e.type == "control" and e.by == "bob" for e in rec.events)


async def test_abort_during_upload_cancels_cleanly(fleet, fleet_config) -> None:
    d = Deployment(fleet_config(parallel=1))  # one host in flight: the abort lands mid-upload

    def on(event) -> None:
        if event.type == "status" and event.key.endswith("/upload") and event.status == "running":
            d.abort()

    d.subscribe(on)
    result = await d.run()
    assert result.exit_code == 3
    for h in fleet.hosts:
        assert current(h.home / "app") is None
        assert not (h.home / "app" / ".shipdeck.lock").exists()


async def test_gate_waits_for_approval(fleet, fleet_config) -> None:
    d = Deployment(fleet_config(batches=["1", "100%"], approve=True))
    assert "release/gate-1" in d.plan
    seen = {}

    def on(event) -> None:
        if event.type == "gate":
            seen["wave2"] = d.plan["release/wave-2"].status
            seen["host1"] = d.plan["release/wave-1/host1"].status
            asyncio.get_running_loop().call_later(0.05, d.approve, "carol")

    d.subscribe(on)
    result = await d.run()
    assert result.exit_code == 0
    assert seen == {"wave2": "pending", "host1": "ok"}
    assert d.plan["release/gate-1"].status == "ok"


async def test_abort_at_gate_cancels_later_waves(fleet, fleet_config) -> None:
    d = Deployment(fleet_config(batches=["1", "100%"], approve=[1]))
    d.subscribe(lambda e: d.abort(by="dave") if e.type == "gate" else None)
    result = await d.run()
    assert result.exit_code == 3
    assert d.plan["release/wave-2"].status == "cancelled"
    assert current(fleet.host("host2").home / "app") is None


async def test_auto_approve(fleet, fleet_config) -> None:
    d = Deployment(fleet_config(batches=["1", "100%"], approve=True), auto_approve=True)
    assert (await d.run()).exit_code == 0


# -- host keys -----------------------------------------------------------------


async def test_unknown_host_key_strict_fails_with_fingerprint(fleet, fleet_config) -> None:
    config = fleet_config()
    fleet.known_hosts.write_text("")
    result = await Deployment(config).run()
    assert result.exit_code == 1 or result.exit_code == 3
    msg = result.summary["failures"]["host1"]
    fp = fleet.host("host1").host_key.get_fingerprint()
    assert "unknown host key" in msg and fp in msg and "accept-new" in msg


async def test_accept_new_records_the_key(fleet, fleet_config) -> None:
    fleet.known_hosts.write_text("")
    config = fleet_config(ssh_extra={"host_key_policy": "accept-new"})
    result = await Deployment(config).run()
    assert result.exit_code == 0
    recorded = fleet.known_hosts.read_text()
    for h in fleet.hosts:
        assert f"[127.0.0.1]:{h.port} " in recorded
    assert len(recorded.splitlines()) == 3


@pytest.mark.parametrize("policy", ["strict", "accept-new"])
async def test_changed_host_key_always_refused(fleet, fleet_config, policy) -> None:
    other = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().strip()
    h2 = fleet.host("host2")
    lines = [
        line
        for line in fleet.known_hosts.read_text().splitlines()
        if f":{h2.port}]" not in line and f"]:{h2.port} " not in line
    ]
    lines.append(f"[127.0.0.1]:{h2.port} {other}")
    fleet.known_hosts.write_text("\n".join(lines) + "\n")
    result = await Deployment(fleet_config(ssh_extra={"host_key_policy": policy})).run()
    assert "HOST KEY CHANGED" in result.summary["failures"]["host2"]
    assert current(h2.home / "app") is None
    assert not (h2.home / "app").exists()  # nothing was uploaded
    assert result.summary["ok"] == 2


class Prompts:
    def __init__(self, accept: bool = True, password: str | None = None):
        self.accept = accept
        self.password = password
        self.keys: list[tuple[str, str]] = []
        self.passwords: list[str] = []

    async def confirm_host_key(self, host: str, fingerprint: str, key_type: str) -> bool:
        self.keys.append((host, fingerprint))
        return self.accept

    async def ask_password(self, host: str, user: str) -> str | None:
        self.passwords.append(host)
        return self.password


@pytest.mark.parametrize("accept", [True, False])
async def test_host_key_prompt_callback(fleet, fleet_config, accept) -> None:
    fleet.known_hosts.write_text("")
    prompts = Prompts(accept=accept)
    result = await Deployment(fleet_config(), prompter=prompts).run()
    assert sorted(h for h, _ in prompts.keys) == ["host1", "host2", "host3"]
    if accept:
        assert result.exit_code == 0
        assert len(fleet.known_hosts.read_text().splitlines()) == 3
    else:
        assert "rejected by the operator" in result.summary["failures"]["host1"]


async def test_password_prompt_callback(tmp_path, sample_repo) -> None:
    async with LocalFleet(tmp_path / "pw", 2, password="pw-canary-7731") as fleet:
        fleet.client_key_path.unlink()
        path = fleet.write_config(tmp_path / "pw.toml", sample_repo)
        prompts = Prompts(password="pw-canary-7731")
        rec = Recorder()
        d = Deployment(load_config(path), prompter=prompts)
        d.subscribe(rec)
        result = await d.run()
        assert result.exit_code == 0
        assert sorted(prompts.passwords) == ["host1", "host2"]
        assert "pw-canary-7731" not in "".join(e.dumps() for e in rec.events)
        wrong = await Deployment(load_config(path), prompter=Prompts(password="nope")).run()
        assert "authentication failed" in wrong.summary["failures"]["host1"]


async def test_failed_canary_wave_stops_the_rollout(fleet, fleet_config) -> None:
    fleet.fail_health("host1")
    result = await Deployment(
        fleet_config(batches=["1", "100%"], health_timeout=0.5, health_interval=0.1)
    ).run()
    assert result.exit_code == 3
    for name in ("host2", "host3"):
        assert current(fleet.host(name).home / "app") is None, f"{name} was deployed"
