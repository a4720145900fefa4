"""``shipdeck relay``, ``shipdeck say`` and ``shipdeck tail``: serve the relay, post
to a room, print a room's messages.

Exit codes: 0 ok, 2 bad usage or config, 3 could not connect or refused, 141 stdout
closed early (``tail | head``, as ``yes | head``). Nothing here imports textual.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.errors import ExitCode
from tui.cli.common import err

if TYPE_CHECKING:
    import ssl


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Register the ``relay``, ``say`` and ``tail`` subcommands."""
    p = sub.add_parser(
        "relay",
        help="run the websockets relay that operators share",
        description="Run the relay: rooms, chat, live deploy trees, the deploy lock.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8765, help="port (default 8765; 0 picks a free one)")
    p.add_argument(
        "--db",
        default="shipdeck-relay.db",
        help="SQLite file of the room logs (default ./shipdeck-relay.db)",
    )
    p.add_argument(
        "--redis",
        metavar="URL",
        help="redis://HOST:PORT/DB: keep the rooms in Redis, shared by several relay nodes"
        " (instead of --db; needs the 'redis' extra)",
    )
    p.add_argument("--tokens", help='TOML file: [operators] name = "token" (required)')
    p.add_argument("--tls-cert", help="PEM certificate (chain): serve wss://")
    p.add_argument("--tls-key", help="PEM private key of --tls-cert (if not in the same file)")
    p.add_argument(
        "--rate",
        type=float,
        default=200.0,
        help="frames per second read from one connection (default 200)",
    )
    p.add_argument(
        "--retain-count", type=int, default=100_000, help="messages kept per room (default 100000)"
    )
    p.add_argument(
        "--retain-days", type=float, default=7.0, help="days messages are kept (default 7)"
    )
    p.add_argument(
        "--sync",
        choices=("normal", "full"),
        default="normal",
        help="SQLite synchronous mode (full survives power loss)",
    )
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    p.set_defaults(func=cmd_relay)

    p = sub.add_parser(
        "say",
        help="post a chat message to a relay room",
        description="Post one chat message to a room.",
    )
    _client_args(p)
    p.add_argument("text", nargs="+", metavar="TEXT", help="the message")
    p.set_defaults(func=cmd_say)

    p = sub.add_parser(
        "tail",
        help="print a relay room's messages",
        description="Print a room's stored messages, one per line: offset, time, sender, type, text.",
    )
    _client_args(p)
    p.add_argument(
        "--since",
        type=int,
        default=0,
        metavar="OFFSET",
        help="start after this offset (default 0: all retained history)",
    )
    p.add_argument("--follow", "-f", action="store_true", help="keep printing new messages")
    p.add_argument("--json", action="store_true", help="print each message as one JSON object")
    p.set_defaults(func=cmd_tail)


def _client_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--relay", required=True, metavar="URL", help="ws://host:port or wss://host:port"
    )
    p.add_argument("--room", required=True)
    p.add_argument("--token", help="bearer token (default: $SHIPDECK_TOKEN)")
    p.add_argument("--ca", metavar="FILE", help="CA certificate to trust for wss:// (private CA)")
    p.add_argument(
        "--timeout", type=float, default=10.0, help="seconds to wait for the relay (default 10)"
    )


# -- relay ------------------------------------------------------------------------


def cmd_relay(args: argparse.Namespace) -> int:
    import asyncio
    import logging
    import ssl

    from relay.serve import serve
    from relay.server import Limits, Relay
    from relay.store import SQLiteStore
    from relay.tls import tls_context
    from relay.tokens import TokensError, load_tokens

    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # websockets' debug log prints request headers, bearer tokens included: never below INFO
    logging.getLogger("websockets").setLevel(max(logging.INFO, logging.getLogger().level))
    if not args.tokens:
        err('relay: --tokens FILE is required (TOML: [operators] alice = "token-for-alice")')
        return ExitCode.USAGE
    try:
        tokens = load_tokens(args.tokens)
    except TokensError as exc:
        err(f"relay: {exc}")
        return ExitCode.USAGE
    if args.tls_key and not args.tls_cert:
        err("relay: --tls-key needs --tls-cert")
        return ExitCode.USAGE
    context = None
    if args.tls_cert:
        try:
            context = tls_context(args.tls_cert, args.tls_key)
        except (OSError, ssl.SSLError) as exc:
            err(f"relay: cannot load the TLS certificate {args.tls_cert}: {exc}")
            return ExitCode.USAGE
    if args.retain_count < 1 or args.retain_days <= 0 or args.rate <= 0:
        err("relay: --retain-count, --retain-days and --rate must be positive")
        return ExitCode.USAGE
    if args.redis:
        store, where = _redis_store(args)
        if store is None:
            return ExitCode.USAGE
        limits = Limits(rate=args.rate, burst=max(2 * args.rate, 50))
        relay = Relay(store, tokens, limits)
        return asyncio.run(serve(relay, args.host, args.port, context, where, len(tokens)))
    try:
        Path(args.db).parent.mkdir(parents=True, exist_ok=True)
        store = SQLiteStore(
            args.db,
            max_count=args.retain_count,
            max_age=args.retain_days * 86400,
            synchronous=args.sync,
        )
    except Exception as exc:
        err(f"relay: cannot open the database {args.db}: {exc}")
        return ExitCode.USAGE
    limits = Limits(rate=args.rate, burst=max(2 * args.rate, 50))
    relay = Relay(store, tokens, limits)
    return asyncio.run(serve(relay, args.host, args.port, context, f"db {args.db}", len(tokens)))


def _redis_store(args: argparse.Namespace) -> tuple[Any, str]:
    if not args.redis.startswith(("redis://", "rediss://", "unix://")):
        err(f"relay: --redis {args.redis!r}: expected redis://HOST:PORT/DB")
        return None, ""
    try:
        from relay.redis_store import RedisStore
    except ImportError:
        err("relay: --redis needs the redis package: pip install 'shipdeck[redis]'")
        return None, ""
    try:
        store = RedisStore(
            args.redis, max_count=args.retain_count, max_age=args.retain_days * 86400
        )
    except ValueError as exc:
        err(f"relay: --redis {args.redis!r}: {exc}")
        return None, ""
    scheme, _, rest = args.redis.partition("://")
    if "@" in rest:  # never print a password
        rest = "***@" + rest.rsplit("@", 1)[1]
    return store, f"redis {scheme}://{rest}"


# -- say / tail -------------------------------------------------------------------


def _client_setup(args: argparse.Namespace) -> tuple[str, ssl.SSLContext | None] | int:
    import ssl

    from relay.protocol import ROOM_RE
    from relay.tokens import token_from_env

    token = token_from_env(args.token)
    if not token:
        err(f"{args.func.__name__[4:]}: no token: pass --token or set SHIPDECK_TOKEN")
        return ExitCode.USAGE
    if not args.relay.startswith(("ws://", "wss://")):
        err(f"--relay {args.relay!r}: expected ws://host:port or wss://host:port")
        return ExitCode.USAGE
    if not ROOM_RE.match(args.room):
        err(f"--room {args.room!r}: 1-64 characters of A-Z a-z 0-9 . _ : -")
        return ExitCode.USAGE
    context = None
    if args.relay.startswith("wss://"):
        try:
            context = ssl.create_default_context(cafile=args.ca)
        except (OSError, ssl.SSLError) as exc:
            err(f"--ca {args.ca}: {exc}")
            return ExitCode.USAGE
    return token, context


def cmd_say(args: argparse.Namespace) -> int:
    import asyncio

    setup = _client_setup(args)
    if isinstance(setup, int):
        return setup
    return asyncio.run(_say(args, *setup))


async def _say(args: argparse.Namespace, token: str, context: ssl.SSLContext | None) -> int:
    import asyncio

    from relay.client import RelayClient, RelayError

    client = RelayClient(args.relay, args.room, token, ssl=context, snapshot=False)
    try:
        await client.start(timeout=args.timeout)
        await asyncio.wait_for(client.chat(" ".join(args.text)), args.timeout)
    except RelayError as exc:
        err(f"say: {exc.message}")
        return ExitCode.CONNECT
    except TimeoutError:
        err(f"say: the relay did not acknowledge within {args.timeout:g}s")
        return ExitCode.CONNECT
    finally:
        await client.close(flush=0)
    return ExitCode.OK


def cmd_tail(args: argparse.Namespace) -> int:
    import asyncio

    setup = _client_setup(args)
    if isinstance(setup, int):
        return setup
    if args.since < 0:
        err("tail: --since must be >= 0")
        return ExitCode.USAGE
    try:
        return asyncio.run(_tail(args, *setup))
    except KeyboardInterrupt:
        return ExitCode.OK
    except BrokenPipeError:  # `shipdeck tail ... | head`: the reader went away
        from tui.pipes import stdout_gone

        stdout_gone()
        return ExitCode.PIPE


async def _tail(args: argparse.Namespace, token: str, context: ssl.SSLContext | None) -> int:
    from relay.client import RelayClient, RelayError

    client = RelayClient(
        args.relay, args.room, token, ssl=context, snapshot=False, since=args.since
    )
    try:
        await client.start(timeout=args.timeout)
    except RelayError as exc:
        await client.close(flush=0)
        err(f"tail: {exc.message}")
        return ExitCode.CONNECT
    end = client.head
    try:
        if not args.follow and (client.replay_from is None or client.replay_from >= end):
            return ExitCode.OK
        async for frame in client.messages():
            done = _tail_frame(args, frame, end)
            if done is not None:
                return done
        return ExitCode.OK
    finally:
        await client.close(flush=0)


def _tail_frame(args: argparse.Namespace, frame: dict[str, Any], end: int) -> int | None:
    """Print one frame of the room (or skip it); the exit code once ``tail`` is done
    (the relay closed with an error, or the last stored message without ``--follow``),
    else None."""
    kind = frame.get("type")
    if kind in ("status", "welcome", "ack"):
        if kind == "status" and frame.get("state") == "closed" and frame.get("error"):
            err(f"tail: {frame['error']}")
            return ExitCode.CONNECT
        return None
    if kind == "presence" and not args.follow:
        return None
    line = (
        json.dumps(frame, ensure_ascii=False, separators=(",", ":"))
        if args.json
        else format_line(frame)
    )
    print(line, flush=True)
    if not args.follow and isinstance(frame.get("offset"), int) and frame["offset"] >= end:
        return ExitCode.OK
    return None


def format_line(frame: dict[str, Any]) -> str:
    """One human line: offset, local time, sender, type, text."""
    offset = frame.get("offset")
    at = frame.get("time")
    when = (
        time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at))
        if isinstance(at, (int, float))
        else "-" * 19
    )
    sender = frame.get("sender") or frame.get("operator") or "-"
    kind = frame.get("type", "?")
    return f"{offset if offset is not None else '-':>6} {when} {sender:<12} {kind:<8} {describe(frame)}"


def describe(frame: dict[str, Any]) -> str:
    """The text part of a frame, for a human."""
    kind = frame.get("type")
    text = _FRAME_TEXT.get(kind) if isinstance(kind, str) else None
    return text(frame) if text is not None else _other_text(frame)


def _chat_text(frame: dict[str, Any]) -> str:
    return str(frame.get("text", "")).replace("\n", " ")


def _events_text(frame: dict[str, Any]) -> str:
    from relay.protocol import events_of
    from tui.render import event_text

    events = events_of(frame)
    parts = [event_text(e) for e in events[:3]]
    more = f" (+{len(events) - 3} more)" if len(events) > 3 else ""
    return "; ".join(parts) + more


def _lock_text(frame: dict[str, Any]) -> str:
    holder = frame.get("holder") or {}
    prev = frame.get("previous") or {}
    op = frame.get("op")
    if op == "released":
        return f"released by {prev.get('operator', '?')}"
    if op == "stale":
        return f"lease of {holder.get('operator', '?')} is stale (no heartbeat for {holder.get('ttl', 0):g}s)"
    text = f"{op} by {holder.get('operator', '?')}"
    if holder.get("reason"):
        text += f": {holder['reason']}"
    if prev:
        text += f" (from {prev.get('operator', '?')})"
    return text


def _control_text(frame: dict[str, Any]) -> str:
    key = f" {frame['key']}" if frame.get("key") else ""
    return f"{frame.get('action')}{key} -> {frame.get('to')}"


def _presence_text(frame: dict[str, Any]) -> str:
    who = ", ".join(w["operator"] for w in frame.get("who") or ())
    return f"{frame.get('op')} {frame.get('operator')} (here: {who or 'nobody'})"


def _error_text(frame: dict[str, Any]) -> str:
    return f"{frame.get('code')}: {frame.get('message')}"


def _other_text(frame: dict[str, Any]) -> str:
    return json.dumps(
        {
            k: v
            for k, v in frame.items()
            if k not in ("type", "v", "room", "offset", "sender", "time")
        }
    )


#: frame type -> its text (any other type: its fields as JSON)
_FRAME_TEXT: dict[str, Callable[[dict[str, Any]], str]] = {
    "chat": _chat_text,
    "event": _events_text,
    "lock": _lock_text,
    "control": _control_text,
    "presence": _presence_text,
    "error": _error_text,
}
