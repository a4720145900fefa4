"""shipdeck's errors and exit codes, in one place.

Every error shipdeck raises on purpose derives from :class:`ShipdeckError`, so a
caller that wants "anything shipdeck refused" catches one class. Tell errors apart
by their class and attributes, never by matching their text: the text is for people.

The tree::

    ShipdeckError
    ├── ConfigError           the config file is unreadable or invalid (path, line, key)
    ├── GitError              a repository could not be fetched or a ref not resolved
    ├── BuildError            a build command failed or the artifact folder is missing
    ├── SSHError              a host unreachable, not authenticated, or a command not run
    │   ├── AuthFailed        the host refused every credential offered
    │   ├── JumpHostError     a jump host (a ProxyJump hop) failed; the message names it
    │   ├── CommandTimeout    (engine.session) a command outlived its timeout
    │   └── HostKeyError      (engine.hostkeys) the host key is unknown or has CHANGED
    ├── StepFailed            a step failed on one host; the message is the reason shown
    │   ├── LockHeld          another deploy holds the host's lock (``stale_in``)
    │   ├── ConnectionLost    the connection broke while a remote script ran
    │   └── Interrupted       an abort signalled a running hook or health check
    ├── ApprovalRefused       (engine.approvals) an approval the four-eyes rule does not
    │                         count (the deployer's own, or a second by the same operator)
    ├── EventDecodeError      (engine.events) a line or dict is not an event; also ValueError
    ├── AmbiguousId           (engine.history) a deploy id prefix names several deploys
    │                         (``candidates``); also LookupError
    ├── ProtocolError         (relay.protocol) a client frame the relay cannot accept
    │                         (``code``); also ValueError
    ├── TokensError           (relay.tokens) the relay's tokens file is missing or invalid;
    │                         also ValueError
    └── RelayError            (relay.errors) the relay refused a request (``code``)
        ├── AuthError         (relay.errors) the relay refused the token
        ├── ConnectFailed     (relay.errors) the relay could not be reached in time
        ├── LeaseHeld         (relay.errors) the room's deploy lease is someone else's
        └── ClientClosed      (relay.errors) the client was closed

Classes marked with a module live there (they belong to that module's API) and
derive from the class above them here. Those marked "also ValueError" (or LookupError)
derive from that too, so code that caught them by the built-in class still does.

Exit codes are :class:`ExitCode`; every command returns one of them.
"""

from __future__ import annotations

import enum
from pathlib import Path

__all__ = [
    "ShipdeckError",
    "ConfigError",
    "GitError",
    "BuildError",
    "SSHError",
    "AuthFailed",
    "JumpHostError",
    "StepFailed",
    "LockHeld",
    "ConnectionLost",
    "Interrupted",
    "ExitCode",
]


class ShipdeckError(Exception):
    """The root of every error shipdeck raises on purpose; ``str()`` is the reason."""


class ConfigError(ShipdeckError):
    """A config file is unreadable or invalid; ``str()`` says where and why."""

    def __init__(self, path: str | Path, message: str, *, key: str = "", line: int | None = None):
        self.path = str(path)
        self.key = key
        self.line = line
        self.message = message
        where = self.path + (f":{line}" if line else "")
        what = f"{key}: " if key else ""
        super().__init__(f"{where}: {what}{message}")


class GitError(ShipdeckError):
    """A repository could not be fetched or a ref could not be resolved."""


class BuildError(ShipdeckError):
    """A build command failed or the artifact folder is missing."""


class SSHError(ShipdeckError):
    """A host could not be reached, authenticated or a command could not run."""


class AuthFailed(SSHError):
    """The host answered but refused every credential offered (keys, password)."""


class JumpHostError(SSHError):
    """A jump host (a hop of a ProxyJump chain) could not be reached or authenticated,
    or the chain loops; the message names the hop and says why."""


class StepFailed(ShipdeckError):
    """A step failed on one host; the message is the reason shown to the operator."""


class LockHeld(StepFailed):
    """Another operator holds the host's deploy lock. ``stale_in``: seconds until its
    heartbeat would be older than its TTL, if it is not refreshed meanwhile."""

    def __init__(self, message: str, stale_in: float | None = None) -> None:
        super().__init__(message)
        self.stale_in = stale_in


class ConnectionLost(StepFailed):
    """The host's connection broke while a remote script ran: what it did is unknown."""


class Interrupted(StepFailed):
    """An abort stopped a running hook or health check on the host (its process
    group was signalled)."""


class ExitCode(enum.IntEnum):
    """What a ``shipdeck`` command's exit status means (the README's "Exit codes").

    ``CONNECT`` is the relay commands' name for 3 (``shipdeck relay``, ``say``,
    ``tail``: could not connect or listen, or refused); it is the same value as
    ``STOPPED``, so ``ExitCode(3)`` is ``STOPPED``.
    """

    #: every host ok (or: the command did what it was asked)
    OK = 0
    #: finished, some hosts failed within the failure budget
    FAILED = 1
    #: bad usage or config (the message names file, line and key)
    USAGE = 2
    #: stopped: failure budget exceeded, aborted, build/fetch failed, or a lock
    #: held by someone else
    STOPPED = 3
    #: relay commands: could not connect or listen, or refused
    CONNECT = 3
    #: stdout was closed early (``| head``): 128 + SIGPIPE, as a shell reports
    #: for ``yes | head``
    PIPE = 141
