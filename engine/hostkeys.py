"""Host keys: what known_hosts trusts, what a host presented, what the operator
decided, and the error that says which.

Host keys are strict by default, ``accept-new`` records an unknown key, a changed key
is always refused; each host is asked about at most once per deploy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import asyncssh

from engine.errors import SSHError
from engine.sshconfig import MAX_CONFIG_BYTES, Target

__all__ = ["HostKeyError", "HostKeys", "host_key_error"]


class HostKeyError(SSHError):
    """The host key is unknown (strict policy) or has CHANGED."""

    def __init__(self, message: str, *, changed: bool, fingerprint: str, key_type: str):
        super().__init__(message)
        self.changed = changed
        self.fingerprint = fingerprint
        self.key_type = key_type


class HostKeys:
    """The host keys of one deploy: what known_hosts trusts, what was presented, what
    the operator decided. A key is recorded once, asked about once."""

    def __init__(self, default_file: str, policy: str):
        self.default_file = default_file
        self.policy = policy
        #: (host, port) -> (changed, key) as last presented
        self.seen: dict[tuple[str, int], tuple[bool, asyncssh.SSHKey]] = {}
        #: (host, port, key blob) -> the operator's answer
        self.answers: dict[tuple[str, int, bytes], bool] = {}
        self.recorded = 0  # keys appended to a known_hosts file by this deploy
        self._cache: dict[tuple[str, ...], tuple[int, Any]] = {}

    def files(self, target: Target) -> tuple[str, ...]:
        """Every file trusted for ``target``; the first is where new keys go."""
        files = list(target.known_hosts)
        if self.default_file not in files:
            files.append(self.default_file)
        return tuple(files)

    def trusted(self, files: tuple[str, ...]) -> Any:
        """The files parsed (once per deploy; again after a key was recorded)."""
        cached = self._cache.get(files)
        if cached is not None and cached[0] == self.recorded:
            return cached[1]
        parts = []
        for path in files:
            try:
                with open(path, encoding="utf-8", errors="replace") as f:
                    parts.append(f.read(MAX_CONFIG_BYTES * 16))
            except OSError:
                continue
        try:
            kh = asyncssh.import_known_hosts("\n".join(parts))
        except (ValueError, asyncssh.KeyImportError):
            kh = asyncssh.import_known_hosts("")
        self._cache[files] = (self.recorded, kh)
        return kh

    def decide(
        self, files: tuple[str, ...], host: str, addr: str, port: int, key: asyncssh.SSHKey
    ) -> bool:
        """asyncssh asks about a key known_hosts does not trust."""
        keys = _matching(self.trusted(files), host, addr, port)
        if key.public_data in {k.public_data for k in keys}:
            return True  # recorded since this connection started
        changed = bool(keys)
        self.seen[(host, port)] = (changed, key)
        if changed:
            return False
        if self.answers.get((host, port, key.public_data)):
            return True
        if self.policy == "accept-new":
            self.record(files[0], host, port, key)
            return True
        return False

    def sshd(self, target: Target, addr: str) -> frozenset[bytes] | None:
        """The host keys known_hosts expects at ``target`` (reached at ``addr``): hosts
        whose entries name the same keys are one sshd. None: no entry."""
        keys = _matching(self.trusted(self.files(target)), target.host, addr, target.port)
        return frozenset(k.public_data for k in keys) if keys else None

    def record(self, path: str, host: str, port: int, key: asyncssh.SSHKey) -> None:
        """Append the key for host:port to ``path`` unless a line already says so.
        Raises OSError when ``path`` cannot be written."""
        self.answers[(host, port, key.public_data)] = True
        pattern = host if port == 22 else f"[{host}]:{port}"
        try:
            existing = asyncssh.import_known_hosts(Path(path).read_text(errors="replace"))
            if key.public_data in {k.public_data for k in _matching(existing, host, host, port)}:
                return
        except (OSError, ValueError, asyncssh.KeyImportError):
            pass
        line = f"{pattern} {key.export_public_key().decode().strip()}\n"
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as f:
            f.write(line)
        self.recorded += 1


def _matching(known: Any, host: str, addr: str, port: int) -> list[asyncssh.SSHKey]:
    """The trusted keys of ``known`` (asyncssh's known_hosts) for host/addr:port."""
    return known.match(host, addr, port if port != 22 else None)[0]


def host_key_error(keys: HostKeys, target: Target) -> HostKeyError:
    """Why ``target``'s host key was refused, from what it presented (``keys.seen``):
    unknown, CHANGED, or not presented at all."""
    changed, key = keys.seen.get((target.host, target.port), (False, None))
    where = keys.files(target)[0]
    if key is None:
        return HostKeyError(
            f"host key for {target.host}:{target.port} is not trusted",
            changed=False,
            fingerprint="",
            key_type="",
        )
    fp, kt = key.get_fingerprint(), key.get_algorithm()
    if changed:
        return HostKeyError(
            f"HOST KEY CHANGED for {target.host}:{target.port} (now {kt} {fp}); refusing to connect. "
            f"If the change is expected, remove the old entry from {where}",
            changed=True,
            fingerprint=fp,
            key_type=kt,
        )
    scan = (
        f"ssh-keyscan {target.host}"
        if target.port == 22
        else f"ssh-keyscan -p {target.port} {target.host}"
    )
    return HostKeyError(
        f"unknown host key for {target.host}:{target.port} ({kt} {fp}), and no terminal "
        f"to ask on; verify it, then add it (`{scan} >> {where}`) "
        f'or set ssh.host_key_policy = "accept-new"',
        changed=False,
        fingerprint=fp,
        key_type=kt,
    )
