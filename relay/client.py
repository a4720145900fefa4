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
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from engine.errors import ShipdeckError
from engine.events import Event
from relay.protocol import (
    CLOSE_ABUSE,
    CLOSE_SLOW,
    HARD_MAX_BYTES,
    MAX_MESSAGE_BYTES,
    PROTOCOL_VERSION,
    Snapshot,
    dumps,
)

log = logging.getLogger("shipdeck.relay.client")

#: Error codes after which re-sending the same frame cannot help.
FINAL_ERRORS = frozenset(
    {
        "bad_json",
        "not_object",
        "bad_version",
        "unknown_type",
        "bad_field",
        "bad_event",
        "too_large",
        "not_lock_holder",
        "no_lock_holder",
    }
)


class RelayError(ShipdeckError):
    """A request refused by the relay (``code`` as in the protocol's error frames)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class AuthError(RelayError):
    """The relay refused the token (HTTP 401). Retrying will not help."""


class ConnectFailed(RelayError):
    """The relay could not be reached in time."""


class LockHeld(RelayError):
    """The deploy lock is held by someone else; ``holder`` is their lease."""

    def __init__(self, holder: dict[str, Any] | None) -> None:
        who = holder.get("operator", "?") if holder else "?"
        reason = f" ({holder.get('reason')})" if holder and holder.get("reason") else ""
        super().__init__("lock_held", f"the deploy lock is held by {who}{reason}")
        self.holder = holder


class ClientClosed(RelayError):
    def __init__(self) -> None:
        super().__init__("closed", "the relay client was closed")


def _quiet(fut: asyncio.Future[Any]) -> None:
    # Callers may fire and forget; never warn about an exception nobody awaited.
    if not fut.cancelled():
        fut.exception()


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
        self._outbox: OrderedDict[str, tuple[str, asyncio.Future[dict[str, Any]]]] = OrderedDict()
        self._ids = f"{secrets.token_hex(4)}-"
        self._seq = 0
        self._batch: list[dict[str, Any]] = []
        self._batch_bytes = 0
        self._batch_future: asyncio.Future[dict[str, Any]] | None = None
        self._batch_handle: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self._ready: asyncio.Future[None] | None = None
        self._wake = asyncio.Event()
        self._closing = False
        self._want_lock: tuple[str, float] | None = None  # waiting for a queued acquire
        self._lock_waiter: asyncio.Future[dict[str, Any]] | None = None
        self._retry_after: float | None = None
        self._welcome: dict[str, Any] | None = None  # a welcome waiting for its parts

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
            self._ready.add_done_callback(_quiet)
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
        self._flush_batch()
        if self._outbox and self.state == "connected" and flush > 0:
            futures = [f for _, f in self._outbox.values()]
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
        for _, fut in self._outbox.values():
            if not fut.done():
                fut.set_exception(ClientClosed())
        self._outbox.clear()
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
        return len(self._outbox) + (1 if self._batch else 0)

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
        data = event.to_json() if isinstance(event, Event) else dict(event)
        size = len(dumps(data))
        if self._batch and (
            self._batch_bytes + size > MAX_MESSAGE_BYTES // 2 or len(self._batch) >= 1000
        ):
            self._flush_batch()
        if self._batch_future is None:
            self._batch_future = asyncio.get_running_loop().create_future()
            self._batch_future.add_done_callback(_quiet)
        self._batch.append(data)
        self._batch_bytes += size
        future = self._batch_future
        if self._batch_handle is None:
            self._batch_handle = asyncio.get_running_loop().call_later(
                self.batch_interval, self._flush_batch
            )
        return future

    def flush(self) -> None:
        """Send the gathered events now instead of at the end of the batch interval."""
        self._flush_batch()

    def _flush_batch(self) -> None:
        if self._batch_handle is not None:
            self._batch_handle.cancel()
            self._batch_handle = None
        if not self._batch:
            return
        events, self._batch, self._batch_bytes = self._batch, [], 0
        target, self._batch_future = self._batch_future, None
        inner = self._enqueue({"type": "event", "events": events})
        assert target is not None

        def relay_result(fut: asyncio.Future[dict[str, Any]]) -> None:
            if target.done():
                return
            if fut.cancelled():
                target.cancel()
            elif fut.exception() is not None:
                target.set_exception(fut.exception())  # type: ignore[arg-type]
            else:
                target.set_result(fut.result())

        inner.add_done_callback(relay_result)

    async def acquire_lock(
        self, reason: str, ttl: float = 30.0, *, wait: bool = False, timeout: float | None = None
    ) -> dict[str, Any]:
        """Take the room's deploy lock lease; heartbeats keep it while connected.

        With ``wait=True`` queue behind the holder until it releases or its lease
        goes stale (taken over visibly). Returns the lease. Raises :class:`LockHeld`
        if it is held and not waiting, ``TimeoutError`` after ``timeout``.
        """
        if wait:
            # Created first: the grant can arrive in the same read as the "queued" ack.
            self._lock_waiter = asyncio.get_running_loop().create_future()
            self._lock_waiter.add_done_callback(_quiet)
        try:
            ack = await self._request(
                {"type": "lock", "op": "acquire", "reason": reason, "ttl": ttl, "wait": wait}
            )
            if ack.get("granted"):
                self._got_lease(ack["lease"])
                return ack["lease"]
            if not wait:
                raise LockHeld(ack.get("holder"))
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

    async def release_lock(self) -> bool:
        """Release the lease (no-op if not held). Returns whether it was released."""
        self._stop_heartbeat()
        self.lease = None
        ack = await self._request({"type": "lock", "op": "release"})
        return bool(ack.get("released"))

    def _enqueue(self, frame: dict[str, Any]) -> asyncio.Future[dict[str, Any]]:
        if self._closing:
            raise ClientClosed()
        self._seq += 1
        msg_id = f"{self._ids}{self._seq}"
        frame = {
            "type": frame["type"],
            "v": PROTOCOL_VERSION,
            "id": msg_id,
            **{k: v for k, v in frame.items() if k != "type"},
        }
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        fut.add_done_callback(_quiet)
        text = dumps(frame)
        self._outbox[msg_id] = (text, fut)
        if self.state == "connected" and self._ws is not None:
            self._send_now(text)
        return fut

    async def _request(self, frame: dict[str, Any]) -> dict[str, Any]:
        return await self._enqueue(frame)

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
        if self._welcome is not None:
            if kind == "snapshot_part" and self._take_part(frame):
                return
            welcome, self._welcome = self._welcome, None  # parts missing: use what came
            welcome["snapshot"]["deploy"].pop("parts", None)
            self._on_welcome(welcome)
            if kind == "snapshot_part":
                return
        offset = frame.get("offset")
        if kind in ("chat", "event", "lock", "control") and isinstance(offset, int):
            if offset <= self.offset:
                return  # already delivered (echo raced a replay)
            self.offset = offset
            msg_id = frame.get("id")
            if msg_id in self._outbox and frame.get("sender") == self.operator:
                _, fut = self._outbox.pop(msg_id)
                if not fut.done():
                    fut.set_result(
                        {"type": "ack", "id": msg_id, "offset": offset, "duplicate": False}
                    )
            if kind == "lock":
                self._on_lock(frame)
            self._deliver(frame)
        elif kind == "ack":
            entry = self._outbox.pop(frame.get("id"), None)
            if entry is not None and not entry[1].done():
                entry[1].set_result(frame)
        elif kind == "error":
            entry = self._outbox.get(frame.get("id"))  # type: ignore[arg-type]
            if entry is not None and frame.get("code") in FINAL_ERRORS:
                del self._outbox[frame["id"]]
                if not entry[1].done():
                    entry[1].set_exception(
                        RelayError(frame.get("code", "error"), frame.get("message", ""))
                    )
            self._deliver(frame)
        elif kind == "presence":
            self.presence = frame.get("who") or []
            self._deliver(frame)
        elif kind == "welcome":
            deploy = (frame.get("snapshot") or {}).get("deploy") or {}
            if isinstance(deploy.get("parts"), int) and deploy["parts"] > 0:
                self._welcome = frame  # the plan's other nodes follow in snapshot_part frames
                return
            self._on_welcome(frame)
        elif kind == "reconnect":
            self._retry_after = float(frame.get("retry_after") or 0.5)
            self._deliver(frame)
        else:
            self._deliver(frame)

    def _take_part(self, frame: dict[str, Any]) -> bool:
        """Add one ``snapshot_part`` to the welcome being assembled; when it was the
        last, hand over the whole welcome. False if the part does not belong to it."""
        assert self._welcome is not None
        deploy = self._welcome["snapshot"]["deploy"]
        nodes = frame.get("nodes")
        if not isinstance(nodes, list) or frame.get("parts") != deploy.get("parts"):
            return False
        deploy["plan"]["nodes"].extend(nodes)
        if frame.get("part") == deploy["parts"]:
            welcome, self._welcome = self._welcome, None
            del deploy["parts"]
            self._on_welcome(welcome)
        return True

    def _on_lock(self, frame: dict[str, Any]) -> None:
        holder = frame.get("holder")
        self.lock = holder
        mine = holder is not None and holder.get("client") == self.client
        if mine and frame.get("op") in ("acquired", "takeover", "resumed"):
            self._got_lease(holder)
        elif (
            not mine
            and self.lease is not None
            and frame.get("op") in ("acquired", "takeover", "released")
        ):
            log.warning("lost the deploy lock (%s by %s)", frame.get("op"), frame.get("sender"))
            self.lease = None
            self._stop_heartbeat()

    def _on_welcome(self, frame: dict[str, Any]) -> None:
        you = frame.get("you") or {}
        self.operator = you.get("operator")
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
        for text, _ in list(self._outbox.values()):
            self._send_now(text)
        if self._want_lock is not None and self.lease is None:
            reason, ttl = self._want_lock
            self._enqueue(
                {"type": "lock", "op": "acquire", "reason": reason, "ttl": ttl, "wait": True}
            )
        if self._ready is not None and not self._ready.done():
            self._ready.set_result(None)

    # -- connection loop -----------------------------------------------------------

    def _hello(self) -> str:
        hello: dict[str, Any] = {
            "type": "hello",
            "v": PROTOCOL_VERSION,
            "room": self.room,
            "session": self.session,
            "snapshot": self._want_snapshot,
        }
        if self.epoch is not None:
            hello["resume"] = {"epoch": self.epoch, "offset": self.offset}
        elif self._since is not None:
            hello["since"] = self._since
        return dumps(hello)

    async def _run(self) -> None:
        attempt = 0
        while not self._closing:
            close_code: int | None = None
            self._set_state("connecting" if self.connects == 0 else "reconnecting")
            try:
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
                                attempt = 0
                            self._on_frame(frame)
                    close_code = ws.close_code
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
            if self._closing:
                return
            if close_code is not None:
                self.last_error = f"closed by the relay ({close_code})"
            if not self.reconnect:
                self._fail(ConnectFailed("disconnected", self.last_error or "disconnected"))
                return
            self._set_state("reconnecting", self.last_error)
            delay = self._delay(attempt, close_code)
            attempt += 1
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)

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
        for _, fut in self._outbox.values():
            if not fut.done():
                fut.set_exception(exc)
        self._outbox.clear()
        self._set_state("closed", exc.message)
        self._queue.put_nowait(None)


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
            deployment.approve(by=by, key=frame.get("key") or None)

    deployment.subscribe(client.publish_event)
    client.add_listener(on_frame)

    def unlink() -> None:
        deployment.unsubscribe(client.publish_event)
        client.remove_listener(on_frame)
        client.flush()

    return unlink
