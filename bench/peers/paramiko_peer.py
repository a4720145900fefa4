"""paramiko: one SSHClient (one Transport) per host, reused for exec and SFTP.

``--threads 1`` (default): one host after another; ``--threads 10``: a pool of 10.
Connections dropped by sshd's MaxStartups are retried (counted in "retries").
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import paramiko
from _common import Tally, args, remote, steps

A = args(threads=1)
KEY = paramiko.Ed25519Key.from_private_key_file(A.fleet["key"])
STEPS = steps(A)
T = Tally()
LOCK = threading.Lock()


def run(client: paramiko.SSHClient, command: str) -> None:
    _, stdout, stderr = client.exec_command(command)
    status = stdout.channel.recv_exit_status()
    if status != 0:
        raise RuntimeError(f"{command!r} exited {status}: {stderr.read().decode()[-200:]}")


def connect(h: dict) -> paramiko.SSHClient:
    for attempt in range(6):
        client = paramiko.SSHClient()
        client.load_host_keys(A.fleet["known_hosts"])
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        try:
            client.connect(
                h["addr"],
                h["port"],
                username=h["user"],
                pkey=KEY,
                look_for_keys=False,
                allow_agent=False,
                timeout=10,
                banner_timeout=10,
                auth_timeout=10,
            )
            return client
        except (paramiko.SSHException, OSError, EOFError):
            client.close()
            if attempt == 5:
                raise
            with LOCK:
                T.retries += 1
            time.sleep(0.05 * (attempt + 1))
    raise AssertionError


def deploy(h: dict) -> None:
    try:
        client = connect(h)
        try:
            run(client, STEPS["mkdir"])
            sftp = client.open_sftp()
            sftp.put(A.tarball, remote(A))
            sftp.close()
            for name in ("unpack", "switch", "restart", "health"):
                run(client, STEPS[name])
        finally:
            client.close()
        with LOCK:
            T.ok += 1
    except Exception as exc:  # noqa: BLE001
        with LOCK:
            T.fail(h["name"], exc)


hosts = A.fleet["hosts"]
if A.threads <= 1:
    for h in hosts:
        deploy(h)
else:
    with ThreadPoolExecutor(A.threads) as pool:
        list(pool.map(deploy, hosts))
raise SystemExit(T.report())
