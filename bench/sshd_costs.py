"""What sshd itself costs per host, on this box: the floor under any SSH deploy tool.

Opens one connection per host to N real sshd hosts on loopback (``bench/_hosts.py``)
with a minimal asyncssh client, does one thing, closes, and reports the sshd side's CPU
per host (sshd, its sessions, shells and commands, counted when the connection's
processes are reaped), median of --runs:

    python bench/sshd_costs.py              # 10 hosts, 3 runs
    python bench/sshd_costs.py --n 20 --runs 5

Rows: a bare connection (key exchange, public-key auth, close); one session running
``true``; ten sessions; twenty commands inside one session; receiving 1 MiB on a
session's stdin and by SFTP; unpacking a 1 MiB tar.gz. With the client's own CPU per
host (the asyncssh floor's, from ``fanout.py``) this bounds from below the wall time
of any tool doing the fan-out workload on a box where clients and sshd share the cores.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import shutil
import statistics
import tarfile
import tempfile
from pathlib import Path

from _hosts import become_subreaper, fleet, fleet_pids, server_cpu, settle

TWENTY = " ".join(str(i) for i in range(20))


def _tarball() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        data = os.urandom(1 << 20)
        info = tarfile.TarInfo("dist/blob")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


async def _measure(f, listeners: set[int], commands, stdin: bytes | None, sftp: Path | None):
    import asyncssh

    key = asyncssh.read_private_key(str(f.client_key))
    known = asyncssh.read_known_hosts(str(f.known_hosts))
    settle(listeners)
    before = server_cpu(listeners)
    conns = []
    for h in f.hosts:  # one at a time: sshd's MaxStartups never drops one
        conns.append(
            await asyncssh.connect(
                h.addr,
                h.port,
                username=h.user,
                client_keys=[key],
                known_hosts=known,
                config=None,
                agent_path=None,
            )
        )
    for command in commands:
        await asyncio.gather(*(c.run(command, input=stdin, encoding=None) for c in conns))
    if sftp is not None:

        async def put(c) -> None:
            async with c.start_sftp_client() as s:
                await s.put(str(sftp), "sshd-costs.bin")

        await asyncio.gather(*(put(c) for c in conns))
    for c in conns:
        c.close()
    await asyncio.gather(*(c.wait_closed() for c in conns))
    settle(listeners)
    return (server_cpu(listeners) - before) * 1000 / len(conns)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, default=10, help="hosts")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    become_subreaper()
    work = Path(tempfile.mkdtemp(prefix="shipdeck-sshd-costs-"))
    tgz = _tarball()
    blob = work / "blob"
    blob.write_bytes(os.urandom(1 << 20))
    cases = [
        ("connection only (kex, auth, close)", [], None, None),
        ("+ 1 session `true`", ["true"], None, None),
        ("+ 10 sessions `true`", ["true"] * 10, None, None),
        (
            "+ 1 session, 20 × /bin/true in it",
            [f"for i in {TWENTY}; do /bin/true; done"],
            None,
            None,
        ),
        ("+ 1 session receiving 1 MiB on stdin", ["cat > sshd-costs.bin"], blob.read_bytes(), None),
        ("+ SFTP put of 1 MiB", [], None, blob),
        (
            "+ 1 session unpacking a 1 MiB tar.gz",
            ["cat > c.tgz && rm -rf c && mkdir c && tar -xzf c.tgz -C c"],
            tgz,
            None,
        ),
    ]
    try:
        with fleet(work / "fleet", args.n) as f:
            listeners = fleet_pids(f)
            print(f"sshd CPU per host, {args.n} hosts, median of {args.runs} runs\n")
            print("| what | sshd ms per host | runs |")
            print("|---|---:|---|")
            base = None
            for label, commands, stdin, sftp in cases:
                vals = [
                    asyncio.run(_measure(f, listeners, commands, stdin, sftp))
                    for _ in range(args.runs)
                ]
                med = statistics.median(vals)
                base = med if base is None else base
                extra = "" if med is base else f" (+{med - base:.1f})"
                print(
                    f"| {label} | {med:.1f}{extra} | {', '.join(f'{v:.1f}' for v in vals)} |",
                    flush=True,
                )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
