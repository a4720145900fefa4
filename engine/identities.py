"""The keys a connection offers, in OpenSSH's order: ssh-agent keys, then identity
files, each with its certificate when there is one.

An encrypted identity whose key is in ssh-agent is signed by the agent; one that is
not asks for its passphrase once per deploy (``ssh.passphrase_env`` or the prompter).
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

import asyncssh

from engine.config import SshConfig
from engine.errors import SSHError
from engine.prompter import Prompter, ask_passphrase, can_ask
from engine.sshconfig import Target

__all__ = ["Identities"]

log = logging.getLogger("shipdeck.ssh")

#: bytes of a public key or certificate file read at most
MAX_PUBLIC_BYTES = 64 * 1024

AgentKeys = tuple[Any, list[tuple[bytes, bytes]]]  # (agent client, [(blob, algorithm)])


def needs_passphrase(exc: asyncssh.KeyImportError) -> bool:
    """Whether asyncssh refused a private key only because it is encrypted and no
    passphrase was given.

    asyncssh (2.x, ``public_key.py``) raises a plain ``KeyImportError`` with the text
    "Passphrase must be specified to import encrypted private keys" for this, and the
    same class for a malformed key: its text is the only difference. This is the one
    place that reads it."""
    return "passphrase" in str(exc).lower()


class Identities:
    """The identities of one deploy: agents listed once, private keys decrypted once.

    ``prompt_lock`` serialises prompts with the other questions put to the operator."""

    def __init__(
        self, ssh: SshConfig, prompter: Prompter | None, prompt_lock: asyncio.Lock
    ) -> None:
        self.ssh = ssh
        self.prompter = prompter
        self.passphrase = os.environ.get(ssh.passphrase_env) if ssh.passphrase_env else None
        self._prompt_lock = prompt_lock
        self._key_cache: dict[str, Any] = {}
        self._key_locks: dict[str, asyncio.Lock] = {}
        self._agents: dict[str, AgentKeys | None] = {}
        self._agent_lock = asyncio.Lock()

    async def client_keys(self, target: Target) -> list[Any] | None:
        """The keys to offer, in OpenSSH's order (agent keys, then files); None:
        asyncssh's defaults (the agent, then ~/.ssh/id_*). Raises SSHError when an
        identity file cannot be read or decrypted."""
        files = tuple(p for p in target.identities if os.path.exists(p))  # noqa: ASYNC240
        if not target.identities and not target.certificates:
            return None
        agent = await self._agent(target.agent)
        certs = _certificates(target, files)
        in_agent: set[bytes] = set()
        offered: list[Any] = []
        if agent is not None:
            wanted = {_public_half(p) for p in files} - {None}
            offered = _agent_pairs(agent, certs, target.identities_only, wanted, in_agent)
        for path in files:
            if _public_half(path) in in_agent:
                continue  # the agent signs for it; no passphrase needed
            key = await self._private_key(path)
            cert = certs.get(key.public_data)
            offered.extend(asyncssh.load_keypairs([(key, cert)] if cert else [key]))
            if cert is not None:
                offered.extend(asyncssh.load_keypairs([key]))
        return offered

    def close(self) -> None:
        """Close the agent connections."""
        for entry in self._agents.values():
            if entry is not None:
                entry[0].close()
        self._agents.clear()

    async def _agent(self, path: str | None) -> AgentKeys | None:
        """The ssh-agent at ``path`` (None: SSH_AUTH_SOCK) and its keys (blob,
        algorithm), listed once per deploy."""
        where = os.environ.get("SSH_AUTH_SOCK", "") if path is None else path
        if not where:
            return None
        async with self._agent_lock:
            if where not in self._agents:
                try:
                    agent = await asyncio.wait_for(asyncssh.connect_agent(where), 5)
                    keys = await asyncio.wait_for(agent.get_keys(), 5)
                    self._agents[where] = (
                        agent,
                        [(k.public_data, k.algorithm) for k in keys],
                    )
                except (OSError, asyncssh.Error, ValueError, TimeoutError) as exc:
                    log.info("ssh-agent %s not usable: %s", where, exc)
                    self._agents[where] = None
            return self._agents[where]

    async def _private_key(self, path: str) -> Any:
        """The private key in ``path``, decrypted with the passphrase (asked once)."""
        lock = self._key_locks.setdefault(path, asyncio.Lock())
        async with lock:
            if path in self._key_cache:
                return self._key_cache[path]
            try:
                key = asyncssh.read_private_key(path)
            except asyncssh.KeyEncryptionError:
                raise SSHError(f"cannot use identity {path}: cannot decrypt it") from None
            except asyncssh.KeyImportError as exc:
                if not needs_passphrase(exc):
                    raise SSHError(f"cannot use identity {path}: {exc}") from None
                key = await self._decrypt(path)
            except OSError as exc:
                raise SSHError(f"cannot read identity {path}: {exc.strerror or exc}") from None
            self._key_cache[path] = key
            return key

    async def _decrypt(self, path: str) -> Any:
        tries = 1 if self.passphrase is not None else 3
        for n in range(tries):
            if self.passphrase is not None:
                phrase: str | None = self.passphrase
                where = f"ssh.passphrase_env ({self.ssh.passphrase_env})"
            elif can_ask(self.prompter):
                async with self._prompt_lock:
                    phrase = await ask_passphrase(self.prompter, path)
                where = "the passphrase given"
            else:
                raise SSHError(
                    f"cannot use identity {path}: it is encrypted, its key is not in "
                    "ssh-agent and there is no terminal to ask for its passphrase; "
                    "add it with ssh-add or set ssh.passphrase_env"
                )
            if phrase is None:
                raise SSHError(f"cannot use identity {path}: no passphrase given")
            try:
                return asyncssh.read_private_key(path, phrase)
            except (asyncssh.KeyImportError, asyncssh.KeyEncryptionError):
                if n == tries - 1:
                    raise SSHError(
                        f"cannot use identity {path}: {where} does not decrypt it"
                    ) from None
        raise AssertionError("unreachable")


def _agent_pairs(
    agent: AgentKeys,
    certs: dict[bytes, Any],
    identities_only: bool,
    wanted: set[bytes | None],
    in_agent: set[bytes],
) -> list[Any]:
    """The agent's keys to offer (each certified one twice: with its certificate,
    then plain); adds their blobs to ``in_agent``."""
    client, listing = agent
    offered: list[Any] = []
    for blob, algorithm in listing:
        if identities_only and blob not in wanted:
            continue
        pair = asyncssh.agent.SSHAgentKeyPair(client, algorithm, blob, b"")
        in_agent.add(blob)
        if blob in certs:
            cert_pair = asyncssh.agent.SSHAgentKeyPair(client, algorithm, blob, b"")
            cert_pair.set_certificate(certs[blob])
            offered.append(cert_pair)
        offered.append(pair)
    return offered


def _public_half(path: str) -> bytes | None:
    """The public key of identity ``path`` without decrypting it: ``<path>.pub``,
    ``<path>-cert.pub`` or the private file's own public part."""
    for candidate in (path + ".pub", path + "-cert.pub"):
        try:
            if os.path.getsize(candidate) < MAX_PUBLIC_BYTES:
                try:
                    return asyncssh.read_certificate(candidate).key.public_data
                except (asyncssh.KeyImportError, ValueError):
                    return asyncssh.read_public_key(candidate).public_data
        except (OSError, asyncssh.KeyImportError, ValueError):
            continue
    try:  # OpenSSH-format private keys carry the public key in clear
        return asyncssh.read_public_key(path).public_data
    except (OSError, asyncssh.KeyImportError, ValueError):
        return None


def _certificates(target: Target, identities: tuple[str, ...]) -> dict[bytes, Any]:
    """Certificates by the public key they certify: CertificateFile and
    ``<identity>-cert.pub`` files."""
    paths = list(target.certificates) + [p + "-cert.pub" for p in identities]
    certs: dict[bytes, Any] = {}
    for path in paths:
        try:
            if os.path.getsize(path) > MAX_PUBLIC_BYTES:
                continue
            cert = asyncssh.read_certificate(path)
        except (OSError, asyncssh.KeyImportError, ValueError):
            continue
        certs.setdefault(cert.key.public_data, cert)
    return certs
