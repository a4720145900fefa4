"""Glue between the relay client and whoever runs or watches a deploy.

- :func:`attach` — a headless ``shipdeck deploy`` with ``[relay]`` in its config:
  take the room's lock lease, publish the engine's events, obey ``abort``/``approve``.
- :class:`RelayChat` — the TUI's chat backend (``tui.chat.ChatBackend``): chat,
  presence and relay status; for the deploying TUI it also attaches a run; for a
  spectator (``shipdeck watch``) it feeds the room's deploy events to the tree.

No textual here: the TUI passes plain callbacks.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from typing import Any, ClassVar
from urllib.parse import urlsplit

from engine.approvals import ApprovalRefused
from engine.events import ChatLine, Event, PlanReady
from engine.state import RunState
from relay.client import LeaseHeld, RelayClient, RelayError
from relay.protocol import MAX_REASON_CHARS, Snapshot, events_of

Detach = Callable[[], Any]


def link_deployment(client: RelayClient, deployment: Any) -> Callable[[], None]:
    """Publish a running deploy's events to the room and obey its controls.

    ``deployment`` is anything with ``subscribe(callback)``, ``unsubscribe(callback)``,
    ``abort(by=...)`` and ``approve(by=..., key=...)`` (``engine.deploy.Deployment``).
    A ``control`` frame addressed to this client (it holds the lock) aborts the deploy
    or approves its gate, recorded as done by the frame's sender. Returns a function
    that undoes the link. Take the lock first (:meth:`RelayClient.acquire_lock`).
    """

    def on_frame(frame: dict[str, Any]) -> None:
        if not client.is_for_me(frame):
            return
        by = str(frame.get("sender") or "")
        if frame.get("action") == "abort":
            deployment.abort(by=by)
        elif frame.get("action") == "approve":
            try:
                deployment.approve(by=by, key=frame.get("key") or None)
            except ApprovalRefused:  # the run's log says why; the gate keeps waiting
                pass

    deployment.subscribe(client.publish_event)
    client.add_listener(on_frame)

    def unlink() -> None:
        deployment.unsubscribe(client.publish_event)
        client.remove_listener(on_frame)
        client.flush()

    return unlink


def _token(config: Any, token: str | None = None) -> str | None:
    if token:
        return token
    env = getattr(getattr(config, "relay", None), "token_env", None) or "SHIPDECK_TOKEN"
    return os.environ.get(env) or os.environ.get("SHIPDECK_TOKEN")


def _reason(run: Any) -> str:
    meta = getattr(getattr(run, "plan", None), "meta", {}) or {}
    what = meta.get("kind", "deploy")
    if what == "exec":  # what runs, not a ref: exec web: uptime
        command = " ".join(str(meta.get("command", "")).split())
        return f"exec {meta.get('project', '')}: {command}"[:MAX_REASON_CHARS]
    return f"{what} {meta.get('project', '')}@{meta.get('ref') or meta.get('release_id') or ''}".strip()


async def _take_and_link(client: RelayClient, run: Any, ttl: float) -> Detach:
    await client.acquire_lock(_reason(run), ttl=ttl)
    unlink = link_deployment(client, run)
    # the plan was built before we linked: publish it so late joiners see the tree
    client.publish_event(run.plan.to_event())

    async def detach() -> None:
        unlink()
        try:
            await asyncio.wait_for(client.release_lock(), 5)
        except (RelayError, TimeoutError, OSError):
            pass

    return detach


async def connect(
    config: Any, *, token: str | None = None, timeout: float | None = None
) -> RelayClient:
    """Connect to the config's relay room and wait for its welcome (``timeout``, by
    default ``relay.connect_timeout``); ``client.operator`` is then who the relay says
    the token belongs to. Raises :class:`RelayError`."""
    relay = config.relay
    if timeout is None:
        timeout = getattr(relay, "connect_timeout", 10.0)
    client = RelayClient(relay.url, relay.room, _token(config, token))
    try:
        await client.start(timeout=timeout)
    except BaseException:
        await client.close(flush=0)
        raise
    return client


async def attach(
    config: Any,
    run: Any,
    *,
    token: str | None = None,
    ttl: float = 30.0,
    client: RelayClient | None = None,
) -> Callable[[], Any]:
    """Connect to the config's relay room (or use ``client``, from :func:`connect`),
    take the lock lease and link ``run``. The client is closed with the returned
    async closer, or at once if this raises.

    Raises :class:`relay.client.LeaseHeld` when another operator holds the room's
    lease, other :class:`RelayError` on connection problems.
    """
    if client is None:
        client = await connect(config, token=token)
    try:
        detach = await _take_and_link(client, run, ttl)
    except BaseException:
        await client.close(flush=0.5)
        raise

    async def close() -> None:
        await detach()
        await client.close(flush=2.0)

    return close


def _describe(url: str, room: str) -> str:
    host = urlsplit(url).netloc or url
    return f"{host}/{room}"


def _who(presence: list[dict[str, Any]] | None) -> list[str]:
    return [str(p.get("operator", "?")) for p in presence or ()]


class RelayChat:
    """A :class:`tui.chat.ChatBackend` over one :class:`RelayClient` connection."""

    def __init__(
        self, url: str, room: str, *, token: str | None = None, operator: str = ""
    ) -> None:
        self.url = url
        self.room = room
        self.token = token
        self.operator = operator
        self.description = _describe(url, room)
        self.client: RelayClient | None = None
        self._closed = asyncio.Event()
        self._on_message: Callable[[Any], None] | None = None
        self._on_presence: Callable[[list[str]], None] | None = None
        self._on_status: Callable[[str], None] | None = None
        self._feed: Callable[[Event | RunState], None] | None = None
        self._last_chat = 0
        self._ready = asyncio.Event()

    # -- ChatBackend ------------------------------------------------------------

    async def start(self, on_message, on_presence, on_status) -> None:  # type: ignore[no-untyped-def]
        self._on_message, self._on_presence, self._on_status = on_message, on_presence, on_status
        on_status("connecting")
        self.client = RelayClient(self.url, self.room, self.token, on_message=self._frame)
        try:
            await self.client.start(timeout=10)
        except RelayError as exc:
            on_status(f"relay error: {exc}")
            self._ready.set()
            return
        on_status("connected")
        self._ready.set()
        await self._closed.wait()

    async def send(self, text: str) -> None:
        if self.client is None:
            raise RelayError("not_connected", "the relay is not connected")
        await self.client.chat(text)

    async def close(self) -> None:
        self._closed.set()
        if self.client is not None:
            await self.client.close(flush=1.0)

    # -- deployer and spectator --------------------------------------------------

    async def attach(self, run: Any, ttl: float = 30.0) -> Detach:
        """Take the room's lease for ``run`` and publish it. Raises LeaseHeld."""
        await asyncio.wait_for(self._ready.wait(), 15)
        if self.client is None or not self.client.connected:
            raise RelayError(
                "not_connected", "the relay is not connected; deploying without it is refused"
            )
        return await _take_and_link(self.client, run, ttl)

    async def control(self, action: str, key: str | None = None) -> Any:
        """Ask the lock holder to ``abort`` or ``approve`` (a spectator's keys)."""
        if self.client is None:
            raise RelayError("not_connected", "the relay is not connected")
        return await self.client.control(action, key)

    def set_feed(self, feed: Callable[[Event | RunState], None]) -> None:
        """Where the room's deploy goes: each event, and on joining the room's
        snapshot as one :class:`engine.state.RunState`."""
        self._feed = feed

    # -- frames ---------------------------------------------------------------

    def _say(self, text: str) -> None:
        if self._on_message is not None:
            self._on_message(ChatLine("relay", text, system=True))

    def _chat(self, frame: dict[str, Any]) -> None:
        offset = int(frame.get("offset") or 0)
        if offset and offset <= self._last_chat:
            return
        self._last_chat = max(self._last_chat, offset)
        if self._on_message is not None:
            self._on_message(
                ChatLine(
                    str(frame.get("sender", "?")),
                    str(frame.get("text", "")),
                    float(frame.get("time") or time.time()),
                )
            )

    def _frame(self, frame: dict[str, Any]) -> None:
        handler = self._HANDLERS.get(str(frame.get("type")))
        if handler is not None:
            handler(self, frame)

    def _presence(self, frame: dict[str, Any]) -> None:
        if self._on_presence is not None:
            self._on_presence(_who(frame.get("who")))

    def _status(self, frame: dict[str, Any]) -> None:
        if self._on_status is not None:
            state = str(frame.get("state", ""))
            self._on_status(state if not frame.get("error") else f"{state}: {frame['error']}")

    def _welcome(self, frame: dict[str, Any]) -> None:
        if self._on_presence is not None:
            self._on_presence(_who(frame.get("presence")))
        snap = frame.get("snapshot")
        if snap:
            self._snapshot(Snapshot.from_json(snap))

    def _event(self, frame: dict[str, Any]) -> None:
        if self._feed is not None:
            for event in events_of(frame):
                self._feed(event)

    def _lock(self, frame: dict[str, Any]) -> None:
        holder = frame.get("holder") or {}
        op = frame.get("op")
        if op in ("acquired", "takeover", "resumed"):
            extra = ""
            if op == "takeover" and frame.get("previous"):
                extra = f" (took over the stale lease of {frame['previous'].get('operator')})"
            self._say(
                f"{holder.get('operator', '?')} holds the deploy lock: {holder.get('reason', '')}{extra}"
            )
        elif op == "released":
            self._say("deploy lock released")
        elif op == "stale":
            self._say("the deploy lock went stale (no heartbeat)")

    def _control(self, frame: dict[str, Any]) -> None:
        key = f" {frame['key']}" if frame.get("key") else ""
        self._say(f"{frame.get('sender', '?')} asked to {frame.get('action')}{key}")

    #: What each incoming frame type does to the chat pane and the deploy feed.
    _HANDLERS: ClassVar[dict[str, Callable[[RelayChat, dict[str, Any]], None]]] = {
        "chat": _chat,
        "presence": _presence,
        "status": _status,
        "welcome": _welcome,
        "event": _event,
        "lock": _lock,
        "control": _control,
    }

    def _snapshot(self, snap: Snapshot) -> None:
        for frame in snap.chat:
            self._chat(frame)
        if self._feed is None or not snap.deploy:
            return
        try:  # the room's deploy as it stands: one state, not a replay of events
            state = RunState.from_json(snap.deploy)
        except ValueError:
            return
        self._feed(state)


def tui_chat_backend(
    url: str, room: str, *, token: str | None = None, operator: str = ""
) -> RelayChat:
    """The deploying TUI's chat backend for the config's relay room."""
    return RelayChat(url, room, token=token, operator=operator)


def tui_watch(
    url: str, room: str, *, token: str | None = None, operator: str = ""
) -> tuple[RelayChat, Callable[[Callable[[Event | RunState], None]], Any]]:
    """A spectator: (chat backend, ``async watcher(feed)`` that delivers the room's deploy events)."""
    chat = RelayChat(url, room, token=token, operator=operator)

    async def watcher(feed: Callable[[Event | RunState], None]) -> None:
        chat.set_feed(feed)

    return chat, watcher


__all__ = [
    "attach",
    "link_deployment",
    "RelayChat",
    "tui_chat_backend",
    "tui_watch",
    "LeaseHeld",
    "PlanReady",
]
