"""The relay's limits: per connection and per room, all in bytes where bytes grow."""

from __future__ import annotations

from dataclasses import dataclass

from relay.protocol import HARD_MAX_BYTES, MAX_EVENT_BYTES, MAX_MESSAGE_BYTES


@dataclass(slots=True)
class Limits:
    """Per-connection and per-room limits. Defaults suit a team relay."""

    max_message_bytes: int = MAX_MESSAGE_BYTES
    max_event_bytes: int = MAX_EVENT_BYTES
    #: Sustained frames per second read from one connection, and the burst allowed.
    #: Beyond it the relay stops reading that connection (TCP back-pressure); nothing
    #: is dropped and no one else is affected.
    rate: float = 200.0
    burst: float = 400.0
    #: Unsent bytes allowed to pile up for one live connection before it is closed
    #: (4000): twice the largest frame, so one big event never drops a reader.
    max_buffer_bytes: int = 2 * HARD_MAX_BYTES
    #: Bytes (and messages) held for a connection still joining or replaying history
    #: before it is closed (4000); it resumes from its offset.
    max_pending_bytes: int = 4 * HARD_MAX_BYTES
    max_pending: int = 10_000
    #: History read from the store per replay page: at most this many messages and
    #: (past the first) this many bytes.
    replay_page: int = 500
    replay_bytes: int = 1024 * 1024
    #: Bytes of chat and of log lines a room keeps for its snapshot.
    snapshot_chat_bytes: int = 128 * 1024
    snapshot_log_bytes: int = 128 * 1024
    #: A room nobody is in (no connection, no waiter, no live lease) leaves memory
    #: after this many seconds; it is read back from the store when someone joins.
    room_idle: float = 60.0
    #: At most this many idle rooms stay in memory; beyond, the longest idle leave
    #: at once (a relay that saw a thousand rooms keeps only its busy ones).
    max_idle_rooms: int = 100
    #: More than ``abuse_errors`` invalid frames within ``abuse_window`` s: close 4008.
    abuse_errors: int = 20
    abuse_window: float = 10.0
    hello_timeout: float = 10.0
    snapshot_chat: int = 50
    snapshot_logs: int = 100
    #: Seconds between writes of the deploy snapshot state to the store.
    state_flush: float = 1.0
    trim_interval: float = 60.0


__all__ = ["Limits"]
