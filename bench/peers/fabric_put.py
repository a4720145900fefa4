"""Fabric: ``put`` one tarball to every host through a bastion (one gateway
connection, one thread per host), then unpack it there.

Usage: python fabric_put.py FLEET.json TARBALL DEST_DIR
FLEET.json: {"key", "known_hosts", "bastion": {addr, port, user}, "hosts": [...]}
"""

from __future__ import annotations

import json
import sys
from concurrent.futures import ThreadPoolExecutor

import paramiko
from fabric import Connection

fleet = json.loads(open(sys.argv[1]).read())
tarball, dest = sys.argv[2], sys.argv[3]
kw = {"key_filename": fleet["key"], "look_for_keys": False, "allow_agent": False}


def connection(h: dict, gateway: Connection | None = None) -> Connection:
    c = Connection(
        h["addr"],
        user=h["user"],
        port=h["port"],
        connect_timeout=30,
        connect_kwargs=kw,
        gateway=gateway,
    )
    c.client.load_host_keys(fleet["known_hosts"])
    c.client.set_missing_host_key_policy(paramiko.RejectPolicy())
    return c


bastion = connection(fleet["bastion"])
bastion.open()


def deploy(h: dict) -> None:
    c = connection(h, bastion)
    try:
        c.run(f"mkdir -p {dest}", hide=True, in_stream=False)
        c.put(tarball, f"{dest}/artifact.tar.gz")
        c.run(
            f"cd {dest} && tar -xzf artifact.tar.gz && rm artifact.tar.gz",
            hide=True,
            in_stream=False,
        )
    finally:
        c.close()


with ThreadPoolExecutor(len(fleet["hosts"])) as pool:
    for f in [pool.submit(deploy, h) for h in fleet["hosts"]]:
        f.result()
bastion.close()
print("ok")
