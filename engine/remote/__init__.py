"""What runs on a host, each remote script beside the parser of its output.

- :mod:`engine.remote.shell`: quoting helpers, UTC stamps, the deploy path resolver;
- :mod:`engine.remote.hooks`: the one wrapper a hook or health check runs in (cwd,
  env, timeout, kill), and the reason a failed one gives;
- :mod:`engine.remote.lock`: the probe (``key=value`` lines, :func:`parse_kv`), the
  lock, its takeover, heartbeat and fence;
- :mod:`engine.remote.release`: upload, unpack, link, activate, cleanup, finish, and
  the detail each reports;
- :mod:`engine.remote.phase`: several steps as one script with start/end markers,
  and the parser of those markers;
- :mod:`engine.remote.revisions`: a host's releases and ``revisions.log`` (which
  release came before, which commit a release was built from).

Every remote path and argument is shell-quoted. The parsers are pure functions of
strings, tested without SSH.
"""
