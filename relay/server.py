"""The relay: rooms shared by operators over websockets, backed by a stored log.

One :class:`Relay` serves many rooms. A client authenticates with a bearer token in
the HTTP upgrade request (``Authorization: Bearer <token>``; refused with HTTP 401
before the upgrade), sends ``hello`` to join one room, and from then on receives every
message stored in that room, in offset order, exactly once per connection.

Fan-out writes each message's pre-encoded frame straight to the connections that keep
up (``websockets.broadcast``), so one slow receiver never delays the others; a
connection whose unsent data passes :attr:`Limits.max_buffer_bytes` is closed with
close code 4000 and resumes from its offset. See ``docs/relay-protocol.md``.

The server keeps connections, auth, dispatch and fan-out; rooms' shared state (storing
and delivering messages, the lease, presence) goes through a
:class:`~relay.coordinator.Coordinator`, local or Redis-shared.

Run it with ``shipdeck relay`` or ``python -m relay`` (same options).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import ssl
import time
from collections.abc import Awaitable, Callable, Coroutine
from http import HTTPStatus
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from engine.events import Event
from relay.coordinator import Coordinator
from relay.limits import Limits
from relay.protocol import (
    CLOSE_ABUSE,
    CLOSE_NO_HELLO,
    CLOSE_RESTART,
    CLOSE_SLOW,
    ENVELOPE_BYTES,
    HARD_MAX_BYTES,
    PROTOCOL_VERSION,
    ProtocolError,
    dumps,
    error_frame,
    json_size,
    parse_client_frame,
    snapshot_part_frame,
    split_snapshot,
)
from relay.redis_coordinator import coordinator_for
from relay.registry import RoomRegistry
from relay.rooms import (
    Peer,
    Room,
    approval_refusal,
    client_handle,
    peer_addr,
    resume_point,
    session_hash,
)
from relay.store import Record, RoomInfo, Store
from relay.tokens import TokenTable

log = logging.getLogger("shipdeck.relay")

#: Close code when the shared store (Redis) cannot be reached: "try again later".
CLOSE_UNAVAILABLE = 1013

Frame = dict[str, Any]


class Relay:
    """Connections, auth, dispatch and fan-out over one :class:`~relay.store.Store`;
    rooms' shared state through a :class:`~relay.coordinator.Coordinator` (chosen
    for the store unless given)."""

    def __init__(
        self,
        store: Store,
        tokens: TokenTable,
        limits: Limits | None = None,
        coordinator: Coordinator | None = None,
    ) -> None:
        self.store = store
        self.tokens = tokens
        self.limits = limits or Limits()
        self.peers: set[Peer] = set()
        self._server: Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing = False
        #: Connections closed with 4000 because they fell behind (for tests, figures).
        self.dropped_slow = 0
        self.coordinator = coordinator or coordinator_for(store, self)
        self.registry = RoomRegistry(store, self.limits, self.coordinator)
        self._handlers: dict[str, Callable[[Peer, Room, Frame], Awaitable[None]]] = {
            "hello": self._on_hello,
            "chat": self._on_chat,
            "event": self._on_event,
            "control": self._on_control,
            "lock": self._on_lock,
        }

    # -- lifecycle ---------------------------------------------------------------

    async def start(
        self, host: str = "127.0.0.1", port: int = 8765, ssl_context: ssl.SSLContext | None = None
    ) -> Server:
        """Start listening; returns the websockets server (``port=0`` picks a free port).
        Raises ``OSError`` if the address cannot be bound."""
        await self.store.trim()
        self._server = await serve(
            self.handler,
            host,
            port,
            process_request=self.process_request,
            ssl=ssl_context,
            max_size=HARD_MAX_BYTES,
            max_queue=4,
            compression=None,
            close_timeout=3,
            ping_interval=20,
            ping_timeout=20,
            server_header="shipdeck-relay",
        )
        self.spawn(self._maintenance())
        await self.coordinator.start()
        return self._server

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.sockets[0].getsockname()[1]

    @property
    def rooms(self) -> dict[str, Room]:
        """The rooms in memory, by name."""
        return self.registry.rooms

    @property
    def closing(self) -> bool:
        """True once :meth:`shutdown` has begun."""
        return self._closing

    async def shutdown(self, retry_after: float = 0.5) -> None:
        """Tell every client to reconnect (close code 1012), then stop and flush."""
        if self._closing:
            return
        self._closing = True
        if self._server is not None:
            self._server.close(close_connections=False)
        notice = dumps(
            {
                "type": "reconnect",
                "v": PROTOCOL_VERSION,
                "reason": "relay is restarting",
                "retry_after": retry_after,
            }
        )
        conns = [p.ws for p in self.peers]
        broadcast(conns, notice)
        if conns:
            await asyncio.wait(
                [
                    asyncio.ensure_future(ws.close(CLOSE_RESTART, "relay restarting; reconnect"))
                    for ws in conns
                ],
                timeout=5,
            )
        if self._server is not None:
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        await self._flush_state()
        await self.store.close()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run ``coro`` in the background; cancelled when the relay shuts down."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _maintenance(self) -> None:
        last_trim = time.monotonic()
        while True:
            await asyncio.sleep(self.limits.state_flush)
            try:
                await self.coordinator.tick()
                await self.registry.flush()
                await self.registry.evict_idle()
                if time.monotonic() - last_trim >= self.limits.trim_interval:
                    last_trim = time.monotonic()
                    await self.retain()
            except Exception:
                log.exception("relay maintenance failed")

    async def retain(self) -> int:
        """Apply retention now (the relay does it every ``trim_interval`` s): remove old
        messages from the store, and removed chats from the rooms' snapshots."""
        return await self.registry.retain()

    async def _flush_state(self) -> None:
        await self.registry.flush()

    # -- auth ---------------------------------------------------------------------

    def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        """Refuse the upgrade (401) without one valid bearer token, or (503) while
        shutting down."""
        values = request.headers.get_all("Authorization")
        operator = self.tokens.operator_for_header(values)
        if operator is None:
            why = "invalid" if values else "missing"
            log.info("refused %s: %s token", peer_addr(connection), why)
            response = connection.respond(
                HTTPStatus.UNAUTHORIZED, "missing or invalid bearer token\n"
            )
            response.headers["WWW-Authenticate"] = 'Bearer realm="shipdeck-relay"'
            return response
        if self._closing:
            return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "relay is restarting\n")
        connection.shipdeck_operator = operator  # type: ignore[attr-defined]
        return None

    # -- connection ---------------------------------------------------------------

    async def handler(self, ws: ServerConnection) -> None:
        """Serve one connection: hello, join, then its frames until it closes."""
        operator = ws.shipdeck_operator  # type: ignore[attr-defined]
        peer = Peer(ws, operator, self.tokens.role_of(operator))
        peer.tokens = self.limits.burst
        peer.refilled = time.monotonic()
        self.peers.add(peer)
        try:
            hello = await self._await_hello(peer)
            if hello is None:
                return
            await self._join(peer, hello)
            async for text in ws:
                await self._throttle(peer)
                await self._dispatch(peer, text)
        except ConnectionClosed:
            pass
        except self.coordinator.unavailable as exc:
            # The shared store is unreachable (Redis restarting): nothing unacknowledged
            # was stored; the client reconnects with jitter and re-sends its outbox.
            log.warning("closing %s: store unavailable: %s", peer.operator, exc)
            await ws.close(CLOSE_UNAVAILABLE, "store unavailable; reconnect")
        finally:
            self.peers.discard(peer)
            if peer.room is not None:
                try:
                    await self._leave(peer)
                except self.coordinator.unavailable as exc:
                    log.warning("could not record %s leaving: %s", peer.operator, exc)

    def _parse(self, text: str | bytes) -> Frame:
        return parse_client_frame(
            text,
            max_bytes=self.limits.max_message_bytes,
            max_event_bytes=self.limits.max_event_bytes,
        )

    async def _await_hello(self, peer: Peer) -> Frame | None:
        deadline = asyncio.get_running_loop().time() + self.limits.hello_timeout
        while True:
            try:
                async with asyncio.timeout_at(deadline):
                    text = await peer.ws.recv()
            except TimeoutError:
                await peer.ws.close(CLOSE_NO_HELLO, "no hello")
                return None
            try:
                frame = self._parse(text)
            except ProtocolError as exc:
                if not await self._reject(peer, exc):
                    return None
                continue
            if frame["type"] == "hello":
                return frame
            await self._reject(
                peer, ProtocolError("not_joined", "send hello with a room first", frame.get("id"))
            )

    async def _throttle(self, peer: Peer) -> None:
        lim = self.limits
        now = time.monotonic()
        peer.tokens = min(lim.burst, peer.tokens + (now - peer.refilled) * lim.rate)
        peer.refilled = now
        if peer.tokens < 1.0:
            await asyncio.sleep((1.0 - peer.tokens) / lim.rate)
            peer.tokens = 1.0
            peer.refilled = time.monotonic()
        peer.tokens -= 1.0

    async def _reject(self, peer: Peer, exc: ProtocolError, *, counts: bool = True) -> bool:
        """Answer a bad frame with an error; return False if the peer was closed for abuse."""
        await peer.ws.send(dumps(error_frame(exc.code, exc.message, exc.msg_id)))
        if not counts:
            return True
        now = time.monotonic()
        peer.errors.append(now)
        while peer.errors and peer.errors[0] < now - self.limits.abuse_window:
            peer.errors.popleft()
        if len(peer.errors) > self.limits.abuse_errors:
            log.warning(
                "closing %s (%s): too many invalid frames", peer.operator, peer_addr(peer.ws)
            )
            await peer.ws.close(CLOSE_ABUSE, "too many invalid frames")
            return False
        return True

    # -- joining and leaving -----------------------------------------------------------

    async def _join(self, peer: Peer, hello: Frame) -> None:
        room = await self.registry.get(hello["room"])
        raw_session = hello.get("session") or secrets.token_hex(12)
        peer.session = session_hash(raw_session)
        peer.handle = client_handle(peer.operator, peer.session)
        peer.room = room
        peer.live = False
        # From here on, new messages queue in peer.pending; the head read below is
        # consistent with that (no await in between).
        room.subs.add(peer)
        room.idle_since = None
        info = await self.store.info(room.name)
        head = await self.coordinator.head(room, info)
        if head is None:
            return
        start, head, recovered, truncated = resume_point(hello, room.epoch, info, head)
        room.presence[peer.operator] = room.presence.get(peer.operator, 0) + 1
        room.roles = self.tokens.roles  # every node reads one tokens file: remote members too
        await self.coordinator.joined(room, peer)
        await self._welcome(peer, room, hello, raw_session, info, head, start, recovered, truncated)
        last = (
            head if start is None else await peer.replay(self.store, room.name, start, self.limits)
        )
        await peer.drain(last)
        if not peer.dropped:
            peer.live = True
            room.idle_since = None

    async def _welcome(
        self,
        peer: Peer,
        room: Room,
        hello: Frame,
        raw_session: str,
        info: RoomInfo,
        head: int,
        start: int | None,
        recovered: bool | None,
        truncated: bool,
    ) -> None:
        """Send ``welcome`` (and the snapshot's further parts, if it is split)."""
        welcome: Frame = {
            "type": "welcome",
            "v": PROTOCOL_VERSION,
            "room": room.name,
            "epoch": room.epoch,
            "head": head,
            "first": info.first,
            "you": {"operator": peer.operator, "role": peer.role}
            | {"client": peer.handle, "session": raw_session},
            "recovered": recovered,
            "replay_from": start,
            "truncated": truncated,
            "presence": room.who(),
            "lock": room.lock.public() if room.lock else None,
            "limits": {
                "max_message_bytes": self.limits.max_message_bytes,
                "rate": self.limits.rate,
            },
        }
        parts: list[list[Frame]] = []
        if hello.get("snapshot", True) and recovered is not True:
            welcome["snapshot"], parts = split_snapshot(room.snapshot().to_json())
        log.info(
            "%s joined %s (%s, recovered=%s)",
            peer.operator,
            room.name,
            peer_addr(peer.ws),
            recovered,
        )
        await peer.ws.send(dumps(welcome))
        for i, nodes in enumerate(parts, 1):
            await peer.ws.send(snapshot_part_frame(room.name, i, len(parts), nodes))

    async def _leave(self, peer: Peer) -> None:
        room = peer.room
        assert room is not None
        room.subs.discard(peer)
        if not room.subs:
            room.idle_since = time.monotonic()
        room.unqueue(peer)
        count = room.presence.get(peer.operator, 0) - 1
        if count <= 0:
            room.presence.pop(peer.operator, None)
        else:
            room.presence[peer.operator] = count
        await self.coordinator.left(room, peer)
        log.info("%s left %s", peer.operator, room.name)

    # -- fan-out --------------------------------------------------------------------

    def send_room(self, room: Room, offset: int | None, text: str) -> None:
        """Write one frame to every subscriber without waiting for any of them."""
        limit = self.limits.max_buffer_bytes
        targets: list[ServerConnection] = []
        slow: list[Peer] = []
        for peer in room.subs:
            if not peer.live:
                if not peer.queue(offset, text, self.limits):
                    slow.append(peer)
                continue
            transport = peer.ws.transport
            if transport is None or transport.get_write_buffer_size() > limit:
                slow.append(peer)
            else:
                targets.append(peer.ws)
        if targets:
            broadcast(targets, text)
        for peer in slow:
            self.drop_slow(room, peer)

    def drop_slow(self, room: Room, peer: Peer) -> None:
        """Close ``peer`` (4000: fell behind); it resumes from its last offset."""
        room.subs.discard(peer)
        if not room.subs:
            room.idle_since = time.monotonic()
        peer.live = False
        peer.dropped = True
        peer.pending.clear()
        peer.pending_bytes = 0
        self.dropped_slow += 1
        log.warning(
            "closing %s (%s) in %s: fell behind", peer.operator, peer_addr(peer.ws), room.name
        )
        self.spawn(peer.ws.close(CLOSE_SLOW, "fell behind; resume from your last offset"))

    async def publish(
        self,
        room: Room,
        sender: str,
        client_id: str | None,
        type: str,
        body: Frame,
        decoded: list[Event] | None = None,
    ) -> tuple[Record, bool]:
        """Store one message and fan it out; a duplicate is acknowledged, not resent."""
        return await self.coordinator.publish(room, sender, client_id, type, body, decoded)

    async def _ack(
        self, peer: Peer, msg_id: str, rec: Record | None, duplicate: bool = False, **result: Any
    ) -> None:
        frame: Frame = {"type": "ack", "v": PROTOCOL_VERSION, "id": msg_id}
        if rec is not None:
            frame["offset"] = rec.offset
            frame["duplicate"] = duplicate
        frame.update(result)
        await peer.ws.send(dumps(frame))

    def granted(self, peer: Peer, request_id: str, rec: Record | None, lease: Frame) -> None:
        """Tell a queued waiter its request was granted: a second ``ack`` with the id of
        its ``acquire`` (sent without waiting on it; a gone waiter is no one's error)."""
        frame: Frame = {"type": "ack", "v": PROTOCOL_VERSION, "id": request_id}
        if rec is not None:
            frame["offset"] = rec.offset
            frame["duplicate"] = False
        frame.update(granted=True, queued=False, lease=lease)

        async def send() -> None:
            try:
                await peer.ws.send(dumps(frame))
            except ConnectionClosed:
                pass

        self.spawn(send())

    # -- messages -------------------------------------------------------------------

    async def _dispatch(self, peer: Peer, text: str | bytes) -> None:
        try:
            frame = self._parse(text)
        except ProtocolError as exc:
            await self._reject(peer, exc)
            return
        room = peer.room
        assert room is not None
        handler = self._handlers.get(frame["type"])
        refused = peer.forbidden(frame)
        if refused is not None:
            await self._reject(peer, refused, counts=False)
        elif handler is not None:
            await handler(peer, room, frame)

    async def _on_hello(self, peer: Peer, room: Room, frame: Frame) -> None:
        await self._reject(
            peer,
            ProtocolError(
                "already_joined",
                f"this connection is in room {room.name!r}; open another to join a second room",
                frame.get("id"),
            ),
        )

    async def _on_chat(self, peer: Peer, room: Room, frame: Frame) -> None:
        msg_id = frame.get("id")
        rec, dup = await self.publish(room, peer.operator, msg_id, "chat", {"text": frame["text"]})
        await self._ack(peer, msg_id, rec, dup)  # type: ignore[arg-type]

    async def _on_event(self, peer: Peer, room: Room, frame: Frame) -> None:
        msg_id = frame.get("id")
        lease = await self.coordinator.lease(room)
        if lease is None or not lease.held_by(peer):
            who = f"{lease.operator} holds" if lease is not None else "nobody holds"
            await self._reject(
                peer,
                ProtocolError(
                    "not_lock_holder",
                    f"{who} the deploy lock; only the connection holding it publishes events",
                    msg_id,
                ),
                counts=False,
            )
            return
        size = json_size({"events": frame["events"]}) + ENVELOPE_BYTES
        if size > self.limits.max_event_bytes:
            await self._reject(
                peer,
                ProtocolError(
                    "too_large",
                    f"event: stored it would be {size} bytes; the limit is"
                    f" {self.limits.max_event_bytes}",
                    msg_id,
                ),
            )
            return
        body = {"events": frame["events"]}
        rec, dup = await self.publish(
            room, peer.operator, msg_id, "event", body, frame.get("decoded")
        )
        await self._ack(peer, msg_id, rec, dup)  # type: ignore[arg-type]

    async def _on_control(self, peer: Peer, room: Room, frame: Frame) -> None:
        msg_id = frame.get("id")
        lease = await self.coordinator.lease(room)
        if lease is None:
            await self._reject(
                peer,
                ProtocolError(
                    "no_lock_holder",
                    "nobody holds the deploy lock in this room; there is no deploy to control",
                    msg_id,
                ),
                counts=False,
            )
            return
        refused = approval_refusal(room, lease.operator, peer.operator, frame)
        if refused is not None:
            await self._reject(peer, ProtocolError("not_approver", refused, msg_id), counts=False)
            return
        body = {
            "action": frame["action"],
            "key": frame["key"],
            "to": lease.operator,
            "to_client": lease.client,
        }
        rec, dup = await self.publish(room, peer.operator, msg_id, "control", body)
        await self._ack(peer, msg_id, rec, dup)  # type: ignore[arg-type]

    async def _on_lock(self, peer: Peer, room: Room, frame: Frame) -> None:
        """The lease: ``acquire``, ``heartbeat`` or ``release``, answered by an ack."""
        op, msg_id = frame["op"], frame["id"]

        async def ack(rec: Record | None, **result: Any) -> None:
            await self._ack(peer, msg_id, rec, **result)

        coordinator = self.coordinator
        if op == "acquire":
            await coordinator.acquire(
                room, peer, msg_id, frame["reason"], frame["ttl"], frame["wait"], ack
            )
        elif op == "heartbeat":
            await coordinator.heartbeat(room, peer, msg_id, ack)
        elif op == "release":
            await coordinator.release(room, peer, msg_id, ack)
        else:  # "break": Peer.forbidden let only an admin through
            await coordinator.break_lease(room, peer, msg_id, ack)


__all__ = ["CLOSE_UNAVAILABLE", "Limits", "Relay"]
