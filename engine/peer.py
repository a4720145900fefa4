"""Copy the artifact from one host of a site to another (see
:mod:`engine.remote.peer` for the scripts).

Why a one-time key rather than a path through shipdeck's own connections: every
connection shipdeck has ends on the operator's side of the jump host's link, so any
stream it relays (a direct-tcpip channel included) crosses that link again. Only a
connection made by one host of the site to another stays on the site's network, and
that needs a credential the serving host accepts. The one made here is minted for
this copy (an ed25519 key pair from asyncssh), allowed by the serving host only to
``cat`` this artifact (``restrict``, a forced command, an expiry an hour away), its
private half handed to the receiver inside the copy's script (never a command line)
and removed with the copy; the serving host's line is removed right after, whatever
happened, and the receiver pins the serving host's host key as shipdeck saw it.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import TYPE_CHECKING

import asyncssh

from engine.errors import SSHError, StepFailed
from engine.remote.lock import parse_kv
from engine.remote.peer import (
    copy_script,
    grant_line,
    grant_script,
    rebuild_script,
    revoke_script,
)
from engine.session import CommandResult
from engine.upload import Grants

if TYPE_CHECKING:
    from collections.abc import Callable

    from engine.build import Package
    from engine.hostrelease import HostRelease

#: how long a granted key is accepted at most (if the revoke never reached the host)
GRANT_TTL = 3600


def known_host_line(addr: str, port: int, key: asyncssh.SSHKey) -> str:
    """The receiver's known_hosts line for the serving host (its key as shipdeck saw it)."""
    name = addr if port == 22 else f"[{addr}]:{port}"
    return f"{name} {' '.join(key.export_public_key().decode().split()[:2])}"


class RebuildFailed(StepFailed):
    """The patch was copied, but did not rebuild the artifact on the receiver (its base
    is not what it should be): the serving host is not to blame."""


async def copy_from_peer(
    receiver: HostRelease,
    source: HostRelease,
    pkg: Package,
    patch_base: str = "",
    on_patch: Callable[[], None] | None = None,
) -> None:
    """Have ``receiver`` copy the artifact from ``source`` over their network (with
    ``patch_base``: the patch from it, which ``source`` keeps; ``on_patch()`` is
    called once the receiver has it too and rebuilds the artifact from it, so that it
    can serve the patch on meanwhile). Raises StepFailed when the copy cannot be made
    (the caller uploads directly instead), RebuildFailed when the copied patch did not
    rebuild the artifact, ConnectionLost / Interrupted as any phase does."""
    src = source.host
    patch_size, patch_sha = 0, ""
    if patch_base:
        patch = await receiver.run.transfers.patch(pkg, patch_base)
        if patch is None:
            raise StepFailed("the patch is not in the local package cache")
        patch_size, patch_sha = await receiver.run.transfers.patch_digest(patch)
    hostkey = src.conn.get_server_host_key()
    if hostkey is None:
        raise StepFailed(f"{source.st.name}: its host key is not known (a certificate?)")
    tag = secrets.token_hex(8)
    key = asyncssh.generate_private_key("ssh-ed25519", comment=f"shipdeck-peer-{tag}")
    expiry = time.strftime("%Y%m%d%H%MZ", time.gmtime(time.time() + GRANT_TTL))
    try:
        public = key.export_public_key().decode()
        line = grant_line(source.st.path, pkg.sha256, public, tag, expiry, patch_base)
    except ValueError as exc:
        raise StepFailed(str(exc)) from None
    grants = receiver.run.transfers.grants.setdefault(source.key, Grants())
    async with grants.lock:
        try:
            # beside the serving host's own steps: its shell may be busy for a while
            res = await src.run_aside(grant_script(line), timeout=30)
        except SSHError as exc:
            raise StepFailed(f"{source.st.name}: {exc}") from None
        if not res.ok:
            why = res.stderr[-200:]
            raise StepFailed(f"{source.st.name} would not take the one-time key: {why}")
        # several copies may be served at once: what the first grant created is
        # removed by the last revoke
        if grants.open == 0:
            grants.created = parse_kv(res.stdout).get("created", "")
        grants.open += 1
    try:
        script = copy_script(
            receiver.st.path,
            pkg.sha256,
            pkg.size,
            tag=tag,
            private_key=key.export_private_key().decode(),
            known_host=known_host_line(src.addr, src.port, hostkey),
            addr=src.addr,
            port=src.port,
            user=src.user,
            patch_base=patch_base,
            patch_size=patch_size,
            patch_sha=patch_sha,
        )
        steps = [("peer", script)]
        if patch_base:
            steps.append(
                ("rebuild", rebuild_script(receiver.st.path, pkg.sha256, pkg.size, patch_base))
            )

        def ok(name: str) -> None:
            if name == "peer" and on_patch is not None:
                on_patch()

        timeout = receiver.run.config.ssh.command_timeout
        try:
            await receiver._phase(steps, timeout, on_ok=ok)
        except StepFailed as exc:
            watch = receiver.last_watch
            if patch_base and watch is not None and "peer" in watch.succeeded:
                raise RebuildFailed(str(exc)) from None
            raise
    finally:
        await _revoke(source, tag, grants)


async def _revoke(source: HostRelease, tag: str, grants: Grants) -> None:
    """Remove the key's line from ``source`` (and, with the last open grant, the
    folder or file the first one created), even while being cancelled (the key also
    expires by itself)."""

    async def revoke() -> CommandResult:
        async with grants.lock:
            grants.open -= 1
            created = grants.created if grants.open == 0 else ""
            return await source.host.run_aside(revoke_script(tag, created), timeout=30)

    task = asyncio.ensure_future(revoke())
    try:
        res = await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait({task}, timeout=30)
        raise
    except Exception as exc:  # the serving host is gone: the key expires by itself
        source.run.log(source.key, f"could not remove the one-time key: {exc}", "stderr")
        return
    if not res.ok:
        source.run.log(source.key, "could not remove the one-time key", "stderr")
