"""One shell session per host: every command of a deploy runs in it, and nothing that
arrives on its stdin is ever run unless it came as a command."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest

from engine.config import load_config
from engine.ssh import CommandTimeout, Connector, Host
from tests.helpers import splice

pytestmark = pytest.mark.timeout(60)


async def _host(fleet, tmp_path: Path, sample_repo: Path) -> tuple[Connector, Host]:
    config = load_config(fleet.write_config(tmp_path / "c.toml", sample_repo))
    connector = Connector(config.ssh, config.base_dir)
    return connector, await connector.connect(config.all_hosts()[0])


async def test_commands_share_one_session_with_separate_streams(
    fleet, tmp_path, sample_repo
) -> None:
    connector, host = await _host(fleet, tmp_path, sample_repo)
    try:
        lines: list[tuple[str, str]] = []
        res = await host.run(
            "echo out; echo err >&2; printf 'no newline'; exit 3",
            on_line=lambda s, t: lines.append((s, t)),
        )
        assert res.exit_status == 3
        assert res.stdout == "out\nno newline" and res.stderr == "err"
        assert ("stderr", "err") in lines
        # state does not leak between commands (each runs in its own subshell)
        await host.run("cd /; X=1; set -e")
        res = await host.run('pwd; echo "x=${X:-unset}"; false; echo still')
        assert res.stdout.splitlines()[1:] == ["x=unset", "still"]
        assert res.stdout.splitlines()[0] == str(fleet.hosts[0].home)
        assert host.shells_started == 1 and fleet.hosts[0].commands == 1
    finally:
        await connector.close()


async def test_stray_upload_bytes_after_a_failed_command_are_never_run(
    fleet, tmp_path, sample_repo
) -> None:
    """A command that fails before reading its upload leaves the bytes unread; the
    session is dropped and they are never taken for a command."""
    connector, host = await _host(fleet, tmp_path, sample_repo)
    home = fleet.hosts[0].home
    payload = tmp_path / "payload"
    payload.write_bytes(b"touch PWNED\nSD1 guess 11 null\ntouch PWNED\n" * 2000)
    try:
        res = await host.run("exit 4", stdin_file=payload)
        assert res.exit_status == 4
        res = await host.run("echo next")
        assert res.ok and res.stdout == "next"
        await asyncio.sleep(0.3)
        assert not (home / "PWNED").exists()
        assert host.shells_started == 2  # the poisoned session was replaced
    finally:
        await connector.close()


async def test_an_upload_has_a_session_of_its_own_and_the_shell_serves_on(
    fleet, tmp_path, sample_repo
) -> None:
    """Before the host's shell is up (and on hosts whose ``head -c`` is not exact) an
    upload has a session of its own: its stdin ends with the file, so a plain ``cat``
    (any host's) reads it all and nothing after it; the shell session is untouched."""
    connector, host = await _host(fleet, tmp_path, sample_repo)
    payload = tmp_path / "payload"
    payload.write_bytes(bytes(range(256)) * 4096)  # 1 MiB, every byte value
    sent: list[int] = []
    try:
        res = await host.run(
            "cat > got && wc -c < got",
            stdin_file=payload,
            progress=lambda done, total: sent.append(done),
        )
        assert res.ok and res.stdout.strip() == str(payload.stat().st_size)
        assert sent[-1] == payload.stat().st_size
        assert (fleet.hosts[0].home / "got").read_bytes() == payload.read_bytes()
        assert (await host.run("echo before")).stdout == "before"
        assert (await host.run("echo after")).stdout == "after"
        assert host.shells_started == 2  # the shell, and the upload's own session
    finally:
        await connector.close()


async def test_a_timed_out_command_is_dropped_and_the_next_gets_a_new_shell(
    fleet, tmp_path, sample_repo
) -> None:
    connector, host = await _host(fleet, tmp_path, sample_repo)
    try:
        with pytest.raises(CommandTimeout):
            await host.run("sleep 5", timeout=0.3)
        res = await host.run("echo fine", timeout=5)
        assert res.ok and res.stdout == "fine"
        assert host.shells_started == 2
    finally:
        await connector.close()


async def test_a_cancelled_command_leaves_the_host_usable(fleet, tmp_path, sample_repo) -> None:
    connector, host = await _host(fleet, tmp_path, sample_repo)
    try:
        task = asyncio.ensure_future(host.run("sleep 5"))
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert (await host.run("echo again")).stdout == "again"
    finally:
        await connector.close()


async def test_a_connection_reset_before_the_handshake_is_retried(
    fleet, tmp_path, sample_repo
) -> None:
    """What sshd does past its MaxStartups: accept, then reset before the banner."""
    import socket
    import struct

    from engine.config import parse_host

    target = fleet.hosts[0]
    seen = [0]

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen[0] += 1
        if seen[0] <= 2:
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.close()
            return
        up_r, up_w = await asyncio.open_connection("127.0.0.1", target.port)

        await asyncio.gather(splice(reader, up_w), splice(up_r, writer))

    proxy = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = proxy.sockets[0].getsockname()[1]
    pub = target.host_key.export_public_key().decode().strip()
    with open(fleet.known_hosts, "a") as fh:
        fh.write(f"[127.0.0.1]:{port} {pub}\n")
    config = load_config(
        fleet.write_config(
            tmp_path / "c.toml", sample_repo, ssh_extra={"identity": str(fleet.client_key)}
        )
    )
    connector = Connector(config.ssh, config.base_dir)
    try:
        host = await connector.connect(parse_host(f"{fleet.user}@127.0.0.1:{port}"))
        assert (await host.run("echo through")).stdout == "through"
        assert connector.connect_retries == 2 and seen[0] == 3
    finally:
        await connector.close()
        proxy.close()


async def test_a_line_longer_than_64_kib_is_cut_and_output_is_bounded(
    fleet, tmp_path, sample_repo
) -> None:
    """A command printing megabytes without a newline: the line arrives cut with a
    marker, the result keeps a bounded tail, and the session goes on."""
    from engine.session import KEEP_BYTES, LINE_MAX

    connector, host = await _host(fleet, tmp_path, sample_repo)
    lines: list[str] = []
    try:
        res = await host.run(
            "head -c 3000000 /dev/zero | tr '\\0' x; echo; echo tail; "
            "i=0; while [ $i -lt 40 ]; do head -c 60000 /dev/zero | tr '\\0' y; echo; i=$((i+1)); done",
            on_line=lambda s, t: lines.append(t),
        )
        assert res.ok
        assert lines[0].startswith("xxx") and lines[0].endswith("line cut: longer than 64 KiB]")
        assert len(lines[0].encode()) < LINE_MAX + 100
        assert lines[1] == "tail" and len(lines) == 42
        assert len(res.stdout) <= KEEP_BYTES + 60001
        assert (await host.run("echo next")).stdout == "next"
    finally:
        await connector.close()


def _gnu_head() -> bool:
    out = subprocess.run(["head", "--version"], capture_output=True, text=True, check=False)
    return "(GNU coreutils)" in out.stdout


gnu_head = pytest.mark.skipif(not _gnu_head(), reason="the test hosts' head is not GNU's")


@gnu_head
async def test_an_upload_after_a_command_travels_inline_on_the_shell(
    fleet, tmp_path, sample_repo
) -> None:
    """Where ``head -c`` is exact, the upload's bytes follow its command on the shell's
    own stdin: every byte arrives, no other session is opened, and the shell serves on."""
    connector, host = await _host(fleet, tmp_path, sample_repo)
    payload = tmp_path / "payload"
    payload.write_bytes(bytes(range(256)) * 4096 + b"\nSD2 x 1\ntouch PWNED\n")
    sent: list[int] = []
    try:
        assert (await host.run("echo probe")).stdout == "probe"
        res = await host.run(
            "cat > got && wc -c < got",
            stdin_file=payload,
            progress=lambda done, total: sent.append(done),
        )
        assert res.ok and res.stdout.strip() == str(payload.stat().st_size)
        assert sent[-1] == payload.stat().st_size
        assert (fleet.hosts[0].home / "got").read_bytes() == payload.read_bytes()
        assert (await host.run("echo after")).stdout == "after"
        assert host.shells_started == 1 and fleet.hosts[0].commands == 1
        assert not (fleet.hosts[0].home / "PWNED").exists()
    finally:
        await connector.close()


@gnu_head
async def test_inline_upload_bytes_a_command_leaves_unread_are_never_run(
    fleet, tmp_path, sample_repo
) -> None:
    """A command that fails before reading its upload, or reads only part of it: the
    rest is drained, never taken for a command, and the same shell serves on."""
    connector, host = await _host(fleet, tmp_path, sample_repo)
    home = fleet.hosts[0].home
    payload = tmp_path / "payload"
    payload.write_bytes(b"touch PWNED\nSD2 guess 1\ntouch PWNED\n" * 20000)
    try:
        assert (await host.run("echo probe")).ok
        res = await host.run("exit 4", stdin_file=payload)
        assert res.exit_status == 4
        res = await host.run("head -c 12 > part; echo read", stdin_file=payload)
        assert res.ok and res.stdout == "read"
        assert (home / "part").read_bytes() == b"touch PWNED\n"
        res = await host.run("echo next")
        assert res.ok and res.stdout == "next"
        assert not (home / "PWNED").exists()
        assert host.shells_started == 1
    finally:
        await connector.close()


@gnu_head
async def test_a_timed_out_inline_upload_drops_the_shell(fleet, tmp_path, sample_repo) -> None:
    connector, host = await _host(fleet, tmp_path, sample_repo)
    payload = tmp_path / "payload"
    payload.write_bytes(b"x" * 1000)
    try:
        assert (await host.run("echo probe")).ok
        with pytest.raises(CommandTimeout):
            await host.run("sleep 5; cat >/dev/null", stdin_file=payload, timeout=0.3)
        assert (await host.run("echo fine")).stdout == "fine"
        assert host.shells_started == 2
    finally:
        await connector.close()


@gnu_head
async def test_a_prepared_upload_opens_nothing_where_the_shell_takes_it(
    fleet, tmp_path, sample_repo
) -> None:
    connector, host = await _host(fleet, tmp_path, sample_repo)
    payload = tmp_path / "payload"
    payload.write_bytes(b"x" * 100_000)
    try:
        host.prepare_upload()
        assert (await host.run("echo probe")).stdout == "probe"
        res = await host.run("cat > got; wc -c < got", stdin_file=payload)
        assert res.ok and res.stdout.strip() == "100000"
        assert host.shells_started == 1 and fleet.hosts[0].commands == 1
        host.prepare_upload()  # one left unused is closed with the host
    finally:
        await connector.close()


async def test_a_warmed_shell_is_the_one_commands_use(fleet, tmp_path, sample_repo) -> None:
    connector, host = await _host(fleet, tmp_path, sample_repo)
    try:
        host.warm()
        host.warm()  # once
        assert (await host.run("echo one")).stdout == "one"
        assert (await host.run("echo two")).stdout == "two"
        assert host.shells_started == 1 and fleet.hosts[0].commands == 1
    finally:
        await connector.close()


def test_ready_and_done_markers_are_read_for_their_session_only() -> None:
    from engine.session import parse_done, parse_ready

    assert parse_ready("\x1eready ab12 4242 1", "ab12") == (4242, True)
    assert parse_ready("\x1eready ab12 4242 0", "ab12") == (4242, False)
    assert parse_ready("\x1eready ab12 4242", "ab12") == (4242, False)  # stderr's
    assert parse_ready("\x1eready ab12 x", "ab12") == (0, False)
    assert parse_ready("\x1eready other 4242 1", "ab12") is None
    assert parse_ready("Welcome to the host", "ab12") is None
    assert parse_done("\x1edone ab12 3", "ab12") == 3
    assert parse_done("\x1edone ab12 ?", "ab12") == 255
    assert parse_done("\x1edone other 0", "ab12") is None
    assert parse_done("done ab12 0", "ab12") is None


def test_the_loader_runs_framed_scripts_and_its_markers_parse() -> None:
    """The boot line and the loader through a local /bin/sh, as sshd would start
    them: a framed script runs, its exit status comes back in a done marker on both
    streams; an unframed line ends the shell without running."""
    from engine.session import BOOT, loader, parse_done, parse_ready, script_lines

    n, body = script_lines("echo hello; exit 7")
    stdin = loader("t0k", None) + f"SD2 t0k {n}\n".encode() + body + b"echo pwned\n"
    proc = subprocess.run(
        ["/bin/sh", "-c", BOOT], input=stdin, capture_output=True, timeout=20, check=False
    )
    out = proc.stdout.decode().split("\n")  # not splitlines: \x1e is a boundary there
    err = proc.stderr.decode().split("\n")
    ready = parse_ready(out[0], "t0k")
    assert ready is not None and ready[0] > 0
    assert "hello" in out
    assert [parse_done(line, "t0k") for line in out if parse_done(line, "t0k") is not None] == [7]
    assert [parse_done(line, "t0k") for line in err if parse_done(line, "t0k") is not None] == [7]
    assert "pwned" not in proc.stdout.decode()
    assert proc.returncode == 2


async def test_an_interrupt_as_the_command_ends_leaves_no_dead_shell_behind(
    fleet, tmp_path, sample_repo
) -> None:
    """The command ends by itself just before the signal goes out: the signal still
    ends the shell, and the next command gets a new one instead of failing on it."""
    connector, host = await _host(fleet, tmp_path, sample_repo)
    started = asyncio.Event()
    try:
        running = asyncio.ensure_future(
            host.run("echo started; sleep 0.3; echo done", on_line=lambda s, t: started.set())
        )
        await started.wait()
        send = host.conn.run

        async def late(*args, **kw):  # the signal leaves once the command has ended
            await asyncio.wait({running})
            return await send(*args, **kw)

        host.conn.run = late  # type: ignore[method-assign]
        assert await host.interrupt()
        assert (await running).stdout.splitlines()[-1] == "done"
        host.conn.run = send  # type: ignore[method-assign]
        assert (await host.run("echo next")).stdout == "next"
        assert host.shells_started == 2
    finally:
        await connector.close()
