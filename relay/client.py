"""Async client of the relay: one room, reconnects by itself, loses nothing.

::

    client = RelayClient("ws://127.0.0.1:8765", "web-prod", token, on_message=handle)
    await client.start()              # first welcome received (or AuthError/ConnectFailed)
    await client.chat("deploying web@main")
    lease = await client.acquire_lock("deploy web@main", ttl=30)
    client.publish_event(event)       # batched, in order, exactly once
    ...
    await client.close()

Incoming frames are plain dicts, exactly as documented in ``docs/relay-protocol.md``,
delivered in order either to ``on_message`` (a plain function called in the event
loop; do not block in it) or, without it, through ``async for frame in
client.messages()``. Besides the relay's frames the client delivers its own
``{"type": "status", "state": "connecting" | "connected" | "reconnecting" | "closed",
"error": str | None}`` frames so a UI can show the link state.

Delivery contract: every stored frame (it has an ``offset``) is delivered once, in
offset order, across reconnects. After a reconnect the relay either replays what was
missed (``welcome`` with ``recovered: true``) or sends a fresh ``snapshot``
(``recovered: false``); a UI rebuilds its state from a ``welcome`` that carries a
``snapshot`` (a big plan's ``snapshot_part`` frames are joined into that one
``welcome`` before it is delivered). Messages sent with :meth:`chat`,
:meth:`publish_event` and :meth:`control` sit in an outbox until the relay
acknowledges them and are re-sent after a reconnect with the same id, so the relay
stores each exactly once.

This module never imports textual.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import secrets
import ssl as ssl_module
from collections.abc import AsyncIterator, Callable
from typing import Any, ClassVar

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from engine.events import Event
from relay.errors import (
    FINAL_ERRORS,
    AuthError,
    ClientClosed,
    ConnectFailed,
    LeaseHeld,
    RelayError,
)
from relay.outbox import Outbox, quiet
from relay.protocol import (
    CLOSE_ABUSE,
    CLOSE_SLOW,
    HARD_MAX_BYTES,
    Snapshot,
    awaits_parts,
    dumps,
    hello_frame,
    join_snapshot_part,
)

log = logging.getLogger("shipdeck.relay.client")


class RelayClient:
    """A connection to one room of a relay that survives disconnects.

    Parameters: ``url`` (``ws://`` or ``wss://``), ``room``, ``token`` (bearer token);
    ``session`` keeps the lock lease across restarts of this client if reused;
    ``ssl`` an :class:`ssl.SSLContext` for ``wss://`` with a private CA;
    ``on_message`` a function called with every incoming frame (else use
    :meth:`messages`); ``snapshot`` asks for a snapshot on join; ``since`` replays
    the stored history after that offset on the first connection; ``reconnect``
    whether to reconnect after a drop; ``backoff`` (first, max) seconds between
    attempts, jittered; ``batch_interval`` how long :meth:`publish_event` gathers
    events into one frame.
    """

    def __init__(
        self,
        url: str,
        room: str,
        token: str,
        *,
        session: str | None = None,
        ssl: ssl_module.SSLContext | None = None,
        on_message: Callable[[dict[str, Any]], Any] | None = None,
        snapshot: bool = True,
        since: int | None = None,
        reconnect: bool = True,
        backoff: tuple[float, float] = (0.1, 5.0),
        open_timeout: float = 10.0,
        batch_interval: float = 0.05,
    ) -> None:
        self.url = url
        self.room = room
        self._token = token
        self.session = session or secrets.token_hex(16)
        self._ssl = ssl
        self._on_message = on_message
        self._want_snapshot = snapshot
        self._since = since
        self.reconnect = reconnect
        self.backoff = backoff
        self.open_timeout = open_timeout
        self.batch_interval = batch_interval

        #: Who the relay says we are (from the token), and our public client handle.
        self.operator: str | None = None
        self.role: str = "operator"
        self.client: str | None = None
        #: Room stream position: the last stored offset delivered, and its epoch.
        self.epoch: str | None = None
        self.offset: int = 0
        self.head: int = 0  # the room's newest offset as of the last welcome
        #: Offset after which the last welcome's history replay starts (None: no replay).
        self.replay_from: int | None = None
        self.presence: list[dict[str, Any]] = []
        #: The room's lease (whoever holds it) and ours, if we hold it.
        self.lock: dict[str, Any] | None = None
        self.lease: dict[str, Any] | None = None
        self.snapshot: Snapshot | None = None
        self.state = "idle"
        self.last_error: str | None = None
        self.connects = 0

        self._ws: ClientConnection | None = None
        self._listeners: list[Callable[[dict[str, Any]], Any]] = []
        self._queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self._outbox = Outbox(self._send_if_connected, batch_interval)
        self._task: asyncio.Task[None] | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self._ready: asyncio.Future[None] | None = None
        self._wake = asyncio.Event()
        self._closing = False
        self._want_lock: tuple[str, float] | None = None  # waiting for a queued acquire
        self._lock_waiter: asyncio.Future[dict[str, Any]] | None = None
        self._retry_after: float | None = None
        self._welcome: dict[str, Any] | None = None  # a welcome waiting for its parts
        self._attempt = 0  # reconnect attempts since the last welcome

    # -- lifecycle -----------------------------------------------------------------

    async def start(self, timeout: float | None = 10.0) -> None:
        """Connect and wait for the first ``welcome``.

        Raises :class:`AuthError` if the token is refused and :class:`ConnectFailed`
        if no welcome arrived within ``timeout`` seconds (the client keeps trying in
        the background unless closed; pass ``timeout=None`` to wait forever).
        """
        loop = asyncio.get_running_loop()
        if self._task is None:
            self._ready = loop.create_future()
            self._ready.add_done_callback(quiet)
            self._task = asyncio.create_task(self._run(), name=f"relay-client {self.room}")
        assert self._ready is not None
        try:
            await asyncio.wait_for(asyncio.shield(self._ready), timeout)
        except TimeoutError:
            raise ConnectFailed(
                "connect_failed",
                f"no answer from {self.url} within {timeout:g}s ({self.last_error or 'no error'})",
            ) from None

    async def close(self, *, flush: float = 2.0) -> None:
        """Send what is still in the batch, wait up to ``flush`` s for acks, disconnect."""
        if self._closing:
            return
        self._outbox.flush()
        futures = self._outbox.futures()
        if futures and self.state == "connected" and flush > 0:
            await asyncio.wait(futures, timeout=flush)
        self._closing = True
        self._wake.set()
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await self._ws.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        self._outbox.fail_all(ClientClosed())
        if self._lock_waiter is not None and not self._lock_waiter.done():
            self._lock_waiter.set_exception(ClientClosed())
        self._set_state("closed")
        self._queue.put_nowait(None)

    async def __aenter__(self) -> RelayClient:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def messages(self) -> AsyncIterator[dict[str, Any]]:
        """Incoming frames in order, until :meth:`close` (only without ``on_message``)."""
        while True:
            frame = await self._queue.get()
            if frame is None:
                return
            yield frame

    @property
    def connected(self) -> bool:
        return self.state == "connected"

    @property
    def holds_lock(self) -> bool:
        return self.lease is not None

    @property
    def pending(self) -> int:
        """Messages sent but not yet acknowledged by the relay."""
        return len(self._outbox)

    # -- sending -------------------------------------------------------------------

    def chat(self, text: str) -> asyncio.Future[dict[str, Any]]:
        """Post a chat message. The returned future resolves to the relay's ack
        (``{"offset": n, ...}``) once stored; awaiting it is optional."""
        return self._enqueue({"type": "chat", "text": text})

    def control(self, action: str, key: str | None = None) -> asyncio.Future[dict[str, Any]]:
        """Ask the lock holder's deploy to ``abort`` or ``approve`` (a gate ``key``).

        The future fails with :class:`RelayError` ``no_lock_holder`` if no deploy
        holds the room's lock."""
        return self._enqueue({"type": "control", "action": action, "key": key or ""})

    def publish_event(self, event: Event | dict[str, Any]) -> asyncio.Future[dict[str, Any]]:
        """Queue one engine event; events are sent in batches every ``batch_interval``.

        Returns the future of the frame that carries it (resolves when stored)."""
        return self._outbox.add_event(event.to_json() if isinstance(event, Event) else dict(event))

    def flush(self) -> None:
        """Send the gathered events now instead of at the end of the batch interval."""
        self._outbox.flush()

    async def acquire_lock(
        self, reason: str, ttl: float = 30.0, *, wait: bool = False, timeout: float | None = None
    ) -> dict[str, Any]:
        """Take the room's deploy lock lease; heartbeats keep it while connected.

        With ``wait=True`` queue behind the holder until it releases or its lease
        goes stale (taken over visibly). Returns the lease. Raises :class:`LeaseHeld`
        if it is held and not waiting, ``TimeoutError`` after ``timeout``.
        """
        if wait:
            # Created first: the grant can arrive in the same read as the "queued" ack.
            self._lock_waiter = asyncio.get_running_loop().create_future()
            self._lock_waiter.add_done_callback(quiet)
        try:
            ack = await self._request(
                {"type": "lock", "op": "acquire", "reason": reason, "ttl": ttl, "wait": wait}
            )
            if ack.get("granted"):
                self._got_lease(ack["lease"])
                return ack["lease"]
            if not wait:
                raise LeaseHeld(ack.get("holder"))
            assert self._lock_waiter is not None
            self._want_lock = (reason, ttl)
            try:
                return await asyncio.wait_for(asyncio.shield(self._lock_waiter), timeout)
            except TimeoutError:
                self._want_lock = None
                with contextlib.suppress(Exception):
                    await self._request({"type": "lock", "op": "release"})
                raise
        finally:
            self._want_lock = None
            self._lock_waiter = None

    async def release_lock(self, *, force: bool = False) -> bool:
        """Release the lease (no-op if not held). Returns whether it was released. ``force``
        (role ``admin``, else :class:`RelayError` ``forbidden``): break anyone's lease."""
        self._stop_heartbeat()
        self.lease = None
        ack = await self._request({"type": "lock", "op": "break" if force else "release"})
        return bool(ack.get("released"))

    def _enqueue(self, frame: dict[str, Any]) -> asyncio.Future[dict[str, Any]]:
        if self._closing:
            raise ClientClosed()
        return self._outbox.add(frame)

    async def _request(self, frame: dict[str, Any]) -> dict[str, Any]:
        return await self._enqueue(frame)

    def _send_if_connected(self, text: str) -> None:
        if self.state == "connected":
            self._send_now(text)

    def _send_now(self, text: str) -> None:
        ws = self._ws
        if ws is None:
            return
        task = asyncio.ensure_future(ws.send(text))
        task.add_done_callback(lambda t: t.cancelled() or t.exception())

    # -- lock heartbeat ------------------------------------------------------------

    def _got_lease(self, lease: dict[str, Any]) -> None:
        self.lease = lease
        self.lock = lease
        if self._lock_waiter is not None and not self._lock_waiter.done():
            self._lock_waiter.set_result(lease)
        if self._heartbeat is None or self._heartbeat.done():
            self._heartbeat = asyncio.create_task(self._beat(), name="relay-lock-heartbeat")

    def _stop_heartbeat(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            self._heartbeat = None

    async def _beat(self) -> None:
        while self.lease is not None:
            await asyncio.sleep(max(0.2, float(self.lease.get("ttl", 30)) / 3))
            if self.state != "connected":
                continue
            try:
                ack = await asyncio.wait_for(self._request({"type": "lock", "op": "heartbeat"}), 10)
            except (TimeoutError, RelayError):
                continue
            if ack.get("granted"):
                if self.lease is not None:
                    self.lease = ack["lease"]
            else:
                log.warning("lost the deploy lock to %s", (ack.get("holder") or {}).get("operator"))
                self.lease = None

    # -- receiving -----------------------------------------------------------------

    def add_listener(self, callback: Callable[[dict[str, Any]], Any]) -> None:
        """Also call ``callback(frame)`` for every incoming frame (after ``on_message``)."""
        self._listeners.append(callback)

    def remove_listener(self, callback: Callable[[dict[str, Any]], Any]) -> None:
        if callback in self._listeners:
            self._listeners.remove(callback)

    def is_for_me(self, frame: dict[str, Any]) -> bool:
        """True for a ``control`` frame addressed to this client (the lock holder)."""
        return frame.get("type") == "control" and frame.get("to_client") == self.client

    def _deliver(self, frame: dict[str, Any]) -> None:
        for listener in list(self._listeners):
            try:
                listener(frame)
            except Exception:
                log.exception("relay listener failed on a %s frame", frame.get("type"))
        if self._on_message is not None:
            try:
                self._on_message(frame)
            except Exception:
                log.exception("on_message failed on a %s frame", frame.get("type"))
        else:
            self._queue.put_nowait(frame)

    def _set_state(self, state: str, error: str | None = None) -> None:
        if state == self.state and error is None:
            return
        self.state = state
        if error:
            self.last_error = error
        self._deliver({"type": "status", "state": state, "error": error})

    def _on_frame(self, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        if self._welcome is not None and self._assembling(kind, frame):
            return
        handler = self._HANDLERS.get(kind) if isinstance(kind, str) else None
        if handler is None:
            self._deliver(frame)
        else:
            handler(self, frame)

    def _assembling(self, kind: Any, frame: dict[str, Any]) -> bool:
        """Feed a frame to the welcome being assembled; True if it was consumed."""
        assert self._welcome is not None
        whole = join_snapshot_part(self._welcome, frame)
        if whole is False:
            return True
        welcome, self._welcome = self._welcome, None  # whole, or parts missing: use what came
        self._on_welcome(welcome)
        return whole is True or kind == "snapshot_part"

    def _on_stored(self, frame: dict[str, Any]) -> None:
        """A stored message (it has an offset): delivered once, in offset order."""
        offset = frame.get("offset")
        if not isinstance(offset, int):
            self._deliver(frame)
            return
        if offset <= self.offset:
            return  # already delivered (echo raced a replay)
        self.offset = offset
        msg_id = frame.get("id")
        if msg_id in self._outbox and frame.get("sender") == self.operator:
            self._outbox.settle(
                msg_id, {"type": "ack", "id": msg_id, "offset": offset, "duplicate": False}
            )
        if frame["type"] == "lock":
            self._on_lock(frame)
        self._deliver(frame)

    def _on_ack(self, frame: dict[str, Any]) -> None:
        self._outbox.settle(frame.get("id"), frame)

    def _on_error(self, frame: dict[str, Any]) -> None:
        if frame.get("code") in FINAL_ERRORS:
            error = RelayError(frame.get("code", "error"), frame.get("message", ""))
            self._outbox.refuse(frame.get("id"), error)
        self._deliver(frame)

    def _on_presence(self, frame: dict[str, Any]) -> None:
        self.presence = frame.get("who") or []
        self._deliver(frame)

    def _on_welcome_frame(self, frame: dict[str, Any]) -> None:
        if awaits_parts(frame):
            self._welcome = frame  # the plan's other nodes follow in snapshot_part frames
            return
        self._on_welcome(frame)

    def _on_reconnect(self, frame: dict[str, Any]) -> None:
        self._retry_after = float(frame.get("retry_after") or 0.5)
        self._deliver(frame)

    def _on_lock(self, frame: dict[str, Any]) -> None:
        holder = frame.get("holder")
        self.lock = holder
        mine = holder is not None and holder.get("client") == self.client
        if mine and frame.get("op") in ("acquired", "takeover", "resumed"):
            self._got_lease(holder)
        elif (
            not mine
            and self.lease is not None
            and frame.get("op") in ("acquired", "takeover", "released", "broken")
        ):
            log.warning("lost the deploy lock (%s by %s)", frame.get("op"), frame.get("sender"))
            self.lease = None
            self._stop_heartbeat()

    def _on_welcome(self, frame: dict[str, Any]) -> None:
        you = frame.get("you") or {}
        self.operator, self.role = you.get("operator"), you.get("role", "operator")
        self.client = you.get("client")
        self.presence = frame.get("presence") or []
        self.lock = frame.get("lock")
        self.head = int(frame.get("head", 0))
        self.epoch = frame.get("epoch")
        self.replay_from = frame.get("replay_from")
        if frame.get("recovered") is not True:
            replay_from = frame.get("replay_from")
            self.offset = replay_from if isinstance(replay_from, int) else self.head
        if "snapshot" in frame:
            self.snapshot = Snapshot.from_json(frame["snapshot"])
        if self.lease is not None and (self.lock is None or self.lock.get("client") != self.client):
            self.lease = None  # lost while away
            self._stop_heartbeat()
        self.connects += 1
        self._set_state("connected")
        self._deliver(frame)
        # Re-send everything not acknowledged, in order, with the same ids.
        for text in self._outbox.texts():
            self._send_now(text)
        if self._want_lock is not None and self.lease is None:
            reason, ttl = self._want_lock
            self._enqueue(
                {"type": "lock", "op": "acquire", "reason": reason, "ttl": ttl, "wait": True}
            )
        if self._ready is not None and not self._ready.done():
            self._ready.set_result(None)

    #: What each incoming frame type does (others are delivered as they are).
    _HANDLERS: ClassVar[dict[str, Callable[[RelayClient, dict[str, Any]], None]]] = {
        "chat": _on_stored,
        "event": _on_stored,
        "lock": _on_stored,
        "control": _on_stored,
        "ack": _on_ack,
        "error": _on_error,
        "presence": _on_presence,
        "welcome": _on_welcome_frame,
        "reconnect": _on_reconnect,
    }

    # -- connection loop -----------------------------------------------------------

    def _hello(self) -> str:
        resume = {"epoch": self.epoch, "offset": self.offset} if self.epoch is not None else None
        return dumps(hello_frame(self.room, self.session, self._want_snapshot, resume, self._since))

    async def _run(self) -> None:
        self._attempt = 0
        while not self._closing:
            close_code: int | None = None
            self._set_state("connecting" if self.connects == 0 else "reconnecting")
            try:
                close_code = await self._session()
            except InvalidStatus as exc:
                status = exc.response.status_code
                if status == 401:
                    self._fail(
                        AuthError("unauthorized", f"{self.url} refused the token (HTTP 401)")
                    )
                    return
                self.last_error = f"HTTP {status}"
            except InvalidURI as exc:
                self._fail(ConnectFailed("bad_url", str(exc)))
                return
            except ConnectionClosed as exc:
                close_code = exc.rcvd.code if exc.rcvd else None
                self.last_error = f"connection closed ({close_code})"
            except (OSError, TimeoutError, InvalidHandshake) as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
            finally:
                self._ws = None
            if not await self._wait_to_reconnect(close_code):
                return

    async def _session(self) -> int | None:
        """One connection: hello, then every frame until it closes; returns the close
        code. Raises what ``websockets.connect`` raises."""
        async with connect(
            self.url,
            additional_headers={"Authorization": f"Bearer {self._token}"},
            # wss:// with no context of ours: the system's trusted CAs
            ssl=(self._ssl or True) if self.url.startswith("wss:") else None,
            open_timeout=self.open_timeout,
            max_size=HARD_MAX_BYTES,
            compression=None,
            ping_interval=20,
            ping_timeout=20,
            close_timeout=2,
            user_agent_header="shipdeck-relay-client",
        ) as ws:
            self._ws = ws
            self._welcome = None
            await ws.send(self._hello())
            async for text in ws:
                try:
                    frame = json.loads(text)
                except json.JSONDecodeError:
                    continue
                if isinstance(frame, dict):
                    if frame.get("type") == "welcome":
                        self._attempt = 0
                    self._on_frame(frame)
            return ws.close_code

    async def _wait_to_reconnect(self, close_code: int | None) -> bool:
        """After a connection ended: wait the backoff and return True to reconnect, or
        return False (closing, or reconnecting is off: the client fails)."""
        if self._closing:
            return False
        if close_code is not None:
            self.last_error = f"closed by the relay ({close_code})"
        if not self.reconnect:
            self._fail(ConnectFailed("disconnected", self.last_error or "disconnected"))
            return False
        self._set_state("reconnecting", self.last_error)
        delay = self._delay(self._attempt, close_code)
        self._attempt += 1
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), delay)
        return True

    def _delay(self, attempt: int, close_code: int | None) -> float:
        first, cap = self.backoff
        if self._retry_after is not None:
            base, self._retry_after = self._retry_after, None
            return base * random.uniform(1.0, 2.0)
        if close_code == CLOSE_SLOW and attempt == 0:
            return random.uniform(0, first)
        if close_code == CLOSE_ABUSE:
            attempt += 3
        # "Full jitter" exponential backoff: spread reconnecting clients apart.
        return random.uniform(first / 2, min(cap, first * 2**attempt))

    def _fail(self, exc: RelayError) -> None:
        self.last_error = exc.message
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(exc)
        self._closing = True
        self._outbox.fail_all(exc)
        self._set_state("closed", exc.message)
        self._queue.put_nowait(None)
