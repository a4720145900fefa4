"""The relay as a real process: killed with SIGKILL and restarted on the same db
while clients keep sending, nothing is lost or duplicated; SIGTERM tells clients
to reconnect."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import pytest

from engine.events import NodeStatus
from engine.plan import build_plan
from relay.client import RelayClient
from tests.relay.conftest import ROOT, TOKENS, Collector, RelayProcess

pytestmark = pytest.mark.timeout(90)


async def test_sigkill_and_restart_loses_nothing(relay_process: RelayProcess) -> None:
    url = await asyncio.to_thread(relay_process.start)
    rcol, scol, dcol = Collector(), Collector(), Collector()
    reader = RelayClient(url, "web", TOKENS["bob"], on_message=rcol, backoff=(0.05, 0.5))
    sender = RelayClient(url, "web", TOKENS["alice"], on_message=scol, backoff=(0.05, 0.5))
    deployer = RelayClient(url, "web", TOKENS["carol"], on_message=dcol, backoff=(0.05, 0.5))
    for c in (reader, sender, deployer):
        await c.start()
    await deployer.acquire_lock("deploy web", ttl=60)
    plan = build_plan("d1", [["web1", "web2"]])
    await deployer.publish_event(plan.to_event())

    n = 300
    sent: list[asyncio.Future] = []
    published: list[asyncio.Future] = []

    async def keep_sending() -> None:
        for i in range(n):
            sent.append(sender.chat(f"msg {i}"))
            if i % 20 == 0:
                published.append(
                    deployer.publish_event(
                        NodeStatus(
                            "d1",
                            key=f"release/wave-1/web{1 + i % 2}/connect",
                            status="ok" if i > 150 else "running",
                            at=float(i),
                        )
                    )
                )
            await asyncio.sleep(0.004)

    sending = asyncio.create_task(keep_sending())
    await rcol.wait(lambda c: len(c.of("chat")) >= 60, timeout=20)
    await asyncio.to_thread(relay_process.kill)  # mid-stream, no warning
    assert not sending.done()
    await rcol.wait(
        lambda c: any(f.get("state") == "reconnecting" for f in c.of("status")), timeout=10
    )
    await asyncio.to_thread(relay_process.start)  # same port, same db
    await sending
    await asyncio.wait_for(asyncio.gather(*sent), 30)
    deployer.flush()
    await asyncio.wait_for(asyncio.gather(*published), 30)  # every event stored
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30  # a client with nothing left to send reconnects all the same
    while not (deployer.connects == 2 and deployer.connected and sender.connects == 2):
        assert loop.time() < deadline, (sender.connects, deployer.connects, deployer.state)
        await asyncio.sleep(0.02)
    await rcol.wait(lambda c: len(c.of("chat")) == n, timeout=30)

    assert rcol.chats() == [f"msg {i}" for i in range(n)]  # once each, in order
    offsets = [f["offset"] for f in rcol.stored()]
    assert offsets == sorted(set(offsets))
    assert reader.connects == 2 and rcol.of("welcome")[1]["recovered"] is True
    assert sender.connects == 2 and deployer.connects == 2
    assert deployer.holds_lock  # the lease survived the restart

    # A late joiner after the restart gets the plan with the node states.
    late = RelayClient(url, "web", TOKENS["alice"])
    await late.start()
    tree = late.snapshot.plan() if late.snapshot else None
    assert tree is not None and tree["release/wave-1/web1/connect"].status == "ok"
    assert (
        late.snapshot is not None
        and late.snapshot.lock is not None
        and late.snapshot.lock["operator"] == "carol"
    )
    await late.close()

    # `tail` shows the room's full history once.
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SHIPDECK_TOKEN": TOKENS["bob"]}
    out = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "tui.cli", "tail", "--relay", url, "--room", "web", "--json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    history = [json.loads(line) for line in out.stdout.splitlines()]
    assert [h["text"] for h in history if h["type"] == "chat"] == [f"msg {i}" for i in range(n)]
    assert [h["offset"] for h in history] == list(range(1, len(history) + 1))

    # SIGTERM: clients are told to reconnect (1012) and the process exits 0.
    for c in (sender, deployer):
        await c.close()
    assert await asyncio.to_thread(relay_process.terminate) == 0
    await rcol.wait(lambda c: c.of("reconnect"), timeout=10)
    await rcol.wait(
        lambda c: any("1012" in (f.get("error") or "") for f in c.of("status")), timeout=10
    )
    await reader.close()
