"""``python -m relay``: serve the relay (the same server as ``shipdeck relay``).

    python -m relay --port 8765 --tokens tokens.toml [--db FILE | --redis URL]
                    [--host H] [--tls-cert F [--tls-key F]] [--rate N]
                    [--retain-count N] [--retain-days D] [--log-level L]

Prints one line once it listens (``... listening on ws://HOST:PORT ...``) and runs
until SIGTERM or SIGINT, then tells clients to reconnect and stops.
Exit codes: 0 stopped, 2 bad usage or config, 3 could not listen or reach Redis.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path
from typing import Any

from relay.serve import serve
from relay.server import Limits, Relay
from relay.tls import tls_context
from relay.tokens import TokensError, load_tokens


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m relay", description="Run the shipdeck relay.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    p.add_argument("--tokens", required=True, help='TOML: [operators] name = "token"')
    p.add_argument("--db", default="shipdeck-relay.db", help="SQLite file of the room logs")
    p.add_argument("--redis", metavar="URL", help="redis://HOST:PORT/DB, shared by several nodes")
    p.add_argument("--tls-cert", help="PEM certificate (chain): serve wss://")
    p.add_argument("--tls-key", help="PEM private key of --tls-cert")
    p.add_argument("--rate", type=float, default=200.0, help="frames/s read per connection")
    p.add_argument("--retain-count", type=int, default=100_000, help="messages kept per room")
    p.add_argument("--retain-days", type=float, default=7.0, help="days messages are kept")
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    return p.parse_args(argv)


def _store(args: argparse.Namespace) -> tuple[Any, str]:
    """The store the arguments name, and how to show it. Raises ``ValueError``,
    ``ImportError`` (no redis package) or what SQLite raises."""
    retain: dict[str, Any] = {
        "max_count": args.retain_count,
        "max_age": args.retain_days * 86400,
    }
    if args.redis:
        from relay.redis_store import RedisStore

        shown = args.redis.rsplit("@", 1)[-1]  # never print a password
        return RedisStore(args.redis, **retain), f"redis {shown}"
    from relay.store import SQLiteStore

    Path(args.db).parent.mkdir(parents=True, exist_ok=True)
    return SQLiteStore(args.db, **retain), f"db {args.db}"


def main(argv: list[str] | None = None) -> int:
    """Serve until SIGTERM/SIGINT; returns the exit code."""
    args = _args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # websockets' debug log prints request headers, bearer tokens included: never below INFO
    logging.getLogger("websockets").setLevel(max(logging.INFO, logging.getLogger().level))
    try:
        tokens = load_tokens(args.tokens)
        context = tls_context(args.tls_cert, args.tls_key) if args.tls_cert else None
        store, where = _store(args)
    except (TokensError, ValueError, ImportError, OSError) as exc:
        print(f"relay: {exc}", file=sys.stderr)
        return 2
    relay = Relay(store, tokens, Limits(rate=args.rate, burst=max(2 * args.rate, 50)))
    return asyncio.run(serve(relay, args.host, args.port, context, where, len(tokens)))


if __name__ == "__main__":
    sys.exit(main())
