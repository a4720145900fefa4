"""The sending half of the relay's delivery contract, on the client side.

Every frame a client sends for storage gets an id and waits in the :class:`Outbox`
until the relay acknowledges it; after a reconnect the whole outbox is re-sent, in
order, with the same ids, so the relay stores each frame exactly once. Engine events
are gathered into one ``event`` frame per ``interval`` (or per half a message's bytes,
or 1,000 events), so a busy deploy sends few frames.
"""

from __future__ import annotations

import asyncio
import secrets
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from relay.protocol import MAX_MESSAGE_BYTES, PROTOCOL_VERSION, dumps

Reply = asyncio.Future[dict[str, Any]]


def quiet(fut: asyncio.Future[Any]) -> None:
    """Done-callback: callers may fire and forget; never warn about an exception
    nobody awaited."""
    if not fut.cancelled():
        fut.exception()


class Outbox:
    """Frames sent and not yet acknowledged, by id, in sending order; and the batch of
    events being gathered. ``send(text)`` writes a frame now if connected."""

    def __init__(self, send: Callable[[str], None], interval: float = 0.05) -> None:
        self._send = send
        self.interval = interval
        self._sent: OrderedDict[str, tuple[str, Reply]] = OrderedDict()
        self._ids = f"{secrets.token_hex(4)}-"
        self._seq = 0
        self._batch: list[dict[str, Any]] = []
        self._batch_bytes = 0
        self._batch_future: Reply | None = None
        self._batch_handle: asyncio.TimerHandle | None = None

    def __len__(self) -> int:
        """Frames not yet acknowledged (a batch being gathered counts as one)."""
        return len(self._sent) + (1 if self._batch else 0)

    def add(self, frame: dict[str, Any]) -> Reply:
        """Give ``frame`` an id, keep it until acknowledged and send it; the future
        resolves to the relay's ack."""
        self._seq += 1
        msg_id = f"{self._ids}{self._seq}"
        frame = {
            "type": frame["type"],
            "v": PROTOCOL_VERSION,
            "id": msg_id,
            **{k: v for k, v in frame.items() if k != "type"},
        }
        fut: Reply = asyncio.get_running_loop().create_future()
        fut.add_done_callback(quiet)
        text = dumps(frame)
        self._sent[msg_id] = (text, fut)
        self._send(text)
        return fut

    def __contains__(self, msg_id: object) -> bool:
        return msg_id in self._sent

    def settle(self, msg_id: Any, ack: dict[str, Any]) -> None:
        """The relay acknowledged ``msg_id`` (an ack, or the stored echo of it)."""
        entry = self._sent.pop(msg_id, None)
        if entry is not None and not entry[1].done():
            entry[1].set_result(ack)

    def refuse(self, msg_id: Any, exc: BaseException) -> None:
        """The relay refused ``msg_id`` for good: its future raises ``exc``."""
        entry = self._sent.pop(msg_id, None)
        if entry is not None and not entry[1].done():
            entry[1].set_exception(exc)

    def fail_all(self, exc: BaseException) -> None:
        """Nothing more will be acknowledged: every waiting future raises ``exc``."""
        for _, fut in self._sent.values():
            if not fut.done():
                fut.set_exception(exc)
        self._sent.clear()

    def texts(self) -> list[str]:
        """Every unacknowledged frame, in order (to re-send after a reconnect)."""
        return [text for text, _ in self._sent.values()]

    def futures(self) -> list[Reply]:
        return [fut for _, fut in self._sent.values()]

    # -- the event batch ------------------------------------------------------------

    def add_event(self, data: dict[str, Any]) -> Reply:
        """Gather one event; returns the future of the frame that will carry it."""
        size = len(dumps(data))
        if self._batch and (
            self._batch_bytes + size > MAX_MESSAGE_BYTES // 2 or len(self._batch) >= 1000
        ):
            self.flush()
        if self._batch_future is None:
            self._batch_future = asyncio.get_running_loop().create_future()
            self._batch_future.add_done_callback(quiet)
        self._batch.append(data)
        self._batch_bytes += size
        future = self._batch_future
        if self._batch_handle is None:
            self._batch_handle = asyncio.get_running_loop().call_later(self.interval, self.flush)
        return future

    def flush(self) -> None:
        """Send the gathered events now, as one ``event`` frame."""
        if self._batch_handle is not None:
            self._batch_handle.cancel()
            self._batch_handle = None
        if not self._batch:
            return
        events, self._batch, self._batch_bytes = self._batch, [], 0
        target, self._batch_future = self._batch_future, None
        inner = self.add({"type": "event", "events": events})
        assert target is not None

        def relay_result(fut: Reply) -> None:
            if target.done():
                return
            if fut.cancelled():
                target.cancel()
            elif fut.exception() is not None:
                target.set_exception(fut.exception())  # type: ignore[arg-type]
            else:
                target.set_result(fut.result())

        inner.add_done_callback(relay_result)


__all__ = ["Outbox", "quiet"]
