"""The floor: a minimal asyncssh script, asyncio.gather over every host, one
connection per host, handshakes capped at --cap (sshd's MaxStartups drops more).
"""

from __future__ import annotations

import asyncio

import asyncssh
from _common import Tally, args, remote, steps

A = args()
STEPS = steps(A)
T = Tally()
KEY = asyncssh.read_private_key(A.fleet["key"])
KNOWN = asyncssh.read_known_hosts(A.fleet["known_hosts"])


async def connect(h: dict, cap: asyncio.Semaphore) -> asyncssh.SSHClientConnection:
    for attempt in range(6):
        try:
            async with cap:
                return await asyncssh.connect(
                    h["addr"],
                    h["port"],
                    username=h["user"],
                    client_keys=[KEY],
                    known_hosts=KNOWN,
                    config=None,
                    agent_path=None,
                    connect_timeout=10,
                )
        except (asyncssh.Error, OSError):
            if attempt == 5:
                raise
            T.retries += 1
            await asyncio.sleep(0.05 * (attempt + 1))
    raise AssertionError


async def deploy(h: dict, cap: asyncio.Semaphore) -> None:
    try:
        async with await connect(h, cap) as conn:
            await conn.run(STEPS["mkdir"], check=True)
            async with conn.start_sftp_client() as sftp:
                await sftp.put(A.tarball, remote(A))
            for name in ("unpack", "switch", "restart", "health"):
                await conn.run(STEPS[name], check=True)
        T.ok += 1
    except Exception as exc:  # noqa: BLE001
        T.fail(h["name"], exc)


async def main() -> None:
    cap = asyncio.Semaphore(A.cap)
    await asyncio.gather(*(deploy(h, cap) for h in A.fleet["hosts"]))


asyncio.run(main())
raise SystemExit(T.report())
