"""`shipdeck exec` on real OpenSSH hosts: host-tagged output, exit codes, the
failure budget over waves, history and revisions.log, the typed confirmation,
`| head`."""

from __future__ import annotations

import asyncio
import json
import sys

import pytest

from engine.config import load_config
from engine.deploy import Deployment
from engine.history import History
from tests.engine.test_deploy_sshd import write_config
from tests.helpers import revisions
from tests.tui.cli.helpers import shipdeck

pytestmark = [pytest.mark.sshd, pytest.mark.timeout(180)]


@pytest.fixture
async def deployed(sshd_fleet, sample_repo, tmp_path):
    fleet = sshd_fleet(3)
    path = write_config(tmp_path / "shipdeck.toml", fleet, sample_repo)
    d = Deployment(load_config(path))
    assert (await d.run()).exit_code == 0
    return fleet, path, d.release_id


async def test_exec_tags_output_and_records_it(deployed) -> None:
    fleet, config, release = deployed
    code, out, err = await shipdeck("exec", "-c", str(config), "--", "echo up; pwd; echo warn >&2")
    assert code == 0, out + err
    assert out.splitlines()[0].startswith("exec 'echo up; pwd; echo warn >&2' on 3 host(s) in current (exec-")
    for h in fleet.hosts:
        assert f"{h.spec} | up" in out and f"{h.spec} ! warn" in out
        assert f"{h.spec} | {h.home / 'app' / 'current'}" in out
        assert f"✓ {h.spec}: exit 0 in " in out
        last = revisions(h.home / "app")[-1]
        assert f" exec release={release} " in last and "operator=tester outcome=ok" in last
    assert out.splitlines()[-1] == "3 ok, 0 failed, 0 skipped"
    row = History().list(1)[0]
    assert row["kind"] == "exec" and row["status"] == "ok" and row["exit_code"] == 0
    code, shown, _ = await shipdeck("show", row["id"], "--transcript")
    assert code == 0 and "up" in shown and "warn" in shown


async def test_exec_exit_codes_and_budget(deployed, tmp_path, sample_repo) -> None:
    fleet, config, _ = deployed
    h1, h2, h3 = fleet.hosts
    (h2.home / "FAIL").write_text("x")
    probe = "if [ -f ~/FAIL ]; then echo failing; exit 3; fi; echo fine"
    code, out, _ = await shipdeck("exec", "-c", str(config), "--", probe)
    assert code == 1  # one host returned non-zero, within the budget (100%)
    assert f"✗ {h2.spec}: exit 3 in " in out and f"✓ {h3.spec}: exit 0" in out
    assert "outcome=exit-3" in revisions(h2.home / "app")[-1]

    before = len(revisions(h1.home / "app"))
    # no failure allowed, a canary wave of one: its failure stops the rest
    strict = write_config(tmp_path / "strict.toml", fleet, sample_repo, max_fail='"0"',
                          hosts=[h2.spec, h1.spec, h3.spec])  # fmt: skip
    code, out, _ = await shipdeck("exec", "-c", str(strict), "--batches", "1", "1", "--", probe)
    assert code == 3, out
    assert "| fine" not in out and out.splitlines()[-1] == (
        "0 ok, 1 failed, 2 skipped (failure budget exceeded)"
    )
    assert len(revisions(h1.home / "app")) == before  # never ran there

    code, out, _ = await shipdeck("exec", "-c", str(config), "--json", "--hosts", h1.spec, "--", "exit 0")
    events = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and events[-1]["type"] == "finished"
    assert events[-1]["summary"]["exit_code"] == 0 and events[-1]["summary"]["ok"] == 1

    code, out, _ = await shipdeck("exec", "-c", str(config), "--cwd", "no/such", "--", "echo ran")
    assert code == 1 and "| ran" not in out and "no directory" in out


async def test_parallel_one_runs_on_one_host_at_a_time(deployed) -> None:
    fleet, config, _ = deployed
    code, out, _ = await shipdeck(
        "exec", "-c", str(config), "--json", "--parallel", "1", "--", "sleep 0.3; echo done"
    )  # fmt: skip
    assert code == 0, out
    events = [json.loads(line) for line in out.splitlines()]
    hosts = {f"release/wave-1/{h.spec}" for h in fleet.hosts}

    def at(state: str) -> dict[str, float]:
        return {
            e["key"]: e["at"]
            for e in events
            if e["type"] == "status" and e["key"] in hosts and e["status"] == state
        }

    started, ended = at("running"), at("ok")
    assert set(started) == set(ended) == hosts
    spans = sorted((started[k], ended[k]) for k in hosts)
    for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
        assert end <= start, spans  # the next host starts only after the last ended


async def test_typed_confirmation_and_pipe(deployed, tmp_path, sample_repo) -> None:
    fleet, _, _ = deployed
    typed = write_config(tmp_path / "typed.toml", fleet, sample_repo, confirm_exec='"typed"')
    code, out, err = await shipdeck("exec", "-c", str(typed), "--", "echo ran")
    assert code == 2 and "ran" not in out
    assert 'deploy.confirm_exec = "typed": pass --yes, or run at a terminal' in err
    code, out, _ = await shipdeck("exec", "-c", str(typed), "--yes", "--", "echo ran")
    assert code == 0 and out.count("| ran") == 3

    # `shipdeck exec -- seq 1 50000 | head -1`: quiet, exit 141, the exec still recorded
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tui.cli", "exec", "-c", str(typed), "--yes", "--", "seq 1 50000",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    first = await proc.stdout.readline()
    proc.stdout.feed_eof()
    proc._transport.get_pipe_transport(1).close()
    err = await proc.stderr.read()
    assert await proc.wait() == 141, err
    assert first.startswith(b"exec 'seq 1 50000'") and err == b""
    assert History().list(1)[0]["exit_code"] == 0
