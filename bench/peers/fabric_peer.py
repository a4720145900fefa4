"""Fabric: one Connection per host, every host in its own thread.

Connections dropped by sshd's MaxStartups are retried (counted in "retries").
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import paramiko
from _common import Tally, args, remote, steps
from fabric import Connection

A = args()
STEPS = steps(A)
T = Tally()
LOCK = threading.Lock()


def connect(h: dict) -> Connection:
    for attempt in range(6):
        c = Connection(
            h["addr"],
            user=h["user"],
            port=h["port"],
            connect_timeout=10,
            connect_kwargs={
                "key_filename": A.fleet["key"],
                "look_for_keys": False,
                "allow_agent": False,
            },
        )
        c.client.load_host_keys(A.fleet["known_hosts"])
        c.client.set_missing_host_key_policy(paramiko.RejectPolicy())
        try:
            c.open()
            return c
        except (paramiko.SSHException, OSError, EOFError):
            c.close()
            if attempt == 5:
                raise
            with LOCK:
                T.retries += 1
            time.sleep(0.05 * (attempt + 1))
    raise AssertionError


def deploy(h: dict) -> None:
    try:
        c = connect(h)
        try:
            c.run(STEPS["mkdir"], hide=True, in_stream=False)
            c.put(A.tarball, remote(A))
            for name in ("unpack", "switch", "restart", "health"):
                c.run(STEPS[name], hide=True, in_stream=False)
        finally:
            c.close()
        with LOCK:
            T.ok += 1
    except Exception as exc:  # noqa: BLE001
        with LOCK:
            T.fail(h["name"], exc)


hosts = A.fleet["hosts"]
with ThreadPoolExecutor(A.threads or len(hosts)) as pool:
    list(pool.map(deploy, hosts))
raise SystemExit(T.report())
