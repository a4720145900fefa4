"""The relay's TLS (``wss://``): a server context from PEM files."""

from __future__ import annotations

import ssl


def tls_context(cert: str, key: str | None) -> ssl.SSLContext:
    """Server TLS context from a PEM certificate (chain) and key (TLS 1.2 at least).
    Raises ``ssl.SSLError``/``OSError``."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    return context
