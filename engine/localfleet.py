"""The local fleet: N in-process asyncssh servers on 127.0.0.1, for the demo and the
fast tests. It speaks real SSH; nothing in the engine knows it is local.

Each host has its own directory as the login home. Commands run with a real shell
(``/bin/sh -c``) with cwd and ``HOME`` set to that directory; SFTP maps relative paths
under it and leaves absolute paths alone (no chroot), so a path means the same thing
over SFTP and in a command.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncssh


@dataclass
class LocalHost:
    name: str
    home: Path
    port: int = 0
    server: Any = None
    host_key: asyncssh.SSHKey | None = None
    connections: int = 0
    commands: int = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


def _sftp_factory(home: Path) -> type:
    root = os.fsencode(str(home))

    class HomeSFTPServer(asyncssh.SFTPServer):
        def map_path(self, path: bytes) -> bytes:
            if path.startswith(b"/"):
                return path
            return os.path.normpath(os.path.join(root, path))

    return HomeSFTPServer


class LocalFleet:
    """``async with LocalFleet(root, n=8) as fleet:`` -- hosts named host1..hostN.

    ``password``: also accept this password (for password-auth tests).
    """

    def __init__(
        self,
        root: Path | str,
        n: int = 8,
        *,
        names: list[str] | None = None,
        password: str | None = None,
        user: str = "deploy",
    ):
        self.root = Path(root)
        self.names = names or [f"host{i}" for i in range(1, n + 1)]
        self.password = password
        self.user = user
        self.hosts: list[LocalHost] = []
        self.client_key_path = self.root / "client_key"
        self.known_hosts = self.root / "known_hosts"
        self.ssh_config = self.root / "ssh_config"

    @property
    def client_key(self) -> Path:
        return self.client_key_path

    def host(self, name: str) -> LocalHost:
        for h in self.hosts:
            if h.name == name:
                return h
        raise KeyError(name)

    async def __aenter__(self) -> LocalFleet:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        client_key = asyncssh.generate_private_key("ssh-ed25519")
        client_key.write_private_key(str(self.client_key_path))
        os.chmod(self.client_key_path, 0o600)
        authorized = asyncssh.import_authorized_keys(client_key.export_public_key().decode())
        kh_lines, cfg_lines = [], []
        for name in self.names:
            home = self.root / "hosts" / name
            home.mkdir(parents=True, exist_ok=True)
            host = LocalHost(
                name=name, home=home, host_key=asyncssh.generate_private_key("ssh-ed25519")
            )
            host.server = await asyncssh.listen(
                host="127.0.0.1",
                port=0,
                server_host_keys=[host.host_key],
                authorized_client_keys=authorized,
                server_factory=self._server_factory(host),
                process_factory=self._process_factory(host),
                sftp_factory=_sftp_factory(home),
                allow_scp=False,
                encoding=None,  # commands see raw bytes, like OpenSSH
                keepalive_interval=30,
            )
            host.port = host.server.sockets[0].getsockname()[1]
            self.hosts.append(host)
            pub = host.host_key.export_public_key().decode().strip()
            kh_lines.append(f"[127.0.0.1]:{host.port} {pub}")
            cfg_lines.append(
                f"Host {name}\n    HostName 127.0.0.1\n    Port {host.port}\n    User {self.user}\n"
                f"    IdentityFile {self.client_key_path}\n"
            )
        self.known_hosts.write_text("\n".join(kh_lines) + "\n")
        self.ssh_config.write_text("\n".join(cfg_lines))

    async def stop(self) -> None:
        for host in self.hosts:
            host.server.close()
        for host in self.hosts:
            try:
                await asyncio.wait_for(host.server.wait_closed(), 2)
            except (TimeoutError, OSError):
                pass

    def _server_factory(self, host: LocalHost) -> type:
        fleet = self

        class Server(asyncssh.SSHServer):
            def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
                host.connections += 1

            def password_auth_supported(self) -> bool:
                return fleet.password is not None

            def validate_password(self, username: str, password: str) -> bool:
                return fleet.password is not None and password == fleet.password

        return Server

    def _process_factory(self, host: LocalHost):  # type: ignore[no-untyped-def]
        async def handle(process: asyncssh.SSHServerProcess) -> None:
            host.commands += 1
            command = process.command
            if isinstance(command, bytes):
                command = command.decode()
            if command is None:
                process.stderr.write(
                    b"shipdeck local fleet: interactive shells are not supported\n"
                )
                process.exit(1)
                return
            env = {
                "HOME": str(host.home),
                # ~/bin first, as a login profile would set it
                "PATH": f"{host.home}/bin:" + os.environ.get("PATH", "/usr/bin:/bin"),
                "USER": self.user,
                "LOGNAME": self.user,
                "SHELL": "/bin/sh",
                "LANG": os.environ.get("LANG", "C.UTF-8"),
                "SHIPDECK_LOCAL_HOST": host.name,
            }
            proc = await asyncio.create_subprocess_exec(
                "/bin/sh",
                "-c",
                command,
                cwd=host.home,
                env=env,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
            )

            async def feed() -> None:
                try:
                    # chunks as they come (iterating would wait for newlines)
                    while data := await process.stdin.read(65536):
                        proc.stdin.write(data if isinstance(data, bytes) else data.encode())
                        await proc.stdin.drain()
                except (asyncssh.Error, OSError, BrokenPipeError, ConnectionResetError):
                    pass
                finally:
                    try:
                        proc.stdin.close()
                    except (OSError, RuntimeError):
                        pass

            async def pump(src: asyncio.StreamReader, dst: Any) -> None:
                while chunk := await src.read(65536):
                    dst.write(chunk)

            feeder = asyncio.ensure_future(feed())
            try:
                await asyncio.gather(
                    pump(proc.stdout, process.stdout), pump(proc.stderr, process.stderr)
                )
                code = await proc.wait()
            except (asyncio.CancelledError, asyncssh.Error, OSError):
                # the client went away (closed the channel): end the command, keep the
                # connection (as sshd does)
                try:
                    os.killpg(proc.pid, 9)
                except ProcessLookupError:
                    pass
                await proc.wait()
                return
            finally:
                feeder.cancel()
            try:
                process.exit(code if code >= 0 else 255)
            except (asyncssh.Error, OSError):
                pass

        return handle

    def hosts_toml(self, group: str = "web") -> str:
        names = ", ".join(f'"{h.name}"' for h in self.hosts)
        return f"[hosts]\n{group} = [{names}]\n"

    def write_config(self, path: Path | str, repo: Path | str, **deploy: Any) -> Path:
        """Write a shipdeck.toml for this fleet; ``deploy`` overrides [deploy] keys;
        ``build_commands``, ``artifact``, ``ref``, ``name``, ``relay_url``, ``relay_room``
        and ``ssh_extra`` (a dict of [ssh] keys) are also accepted."""
        path = Path(path)
        project = {
            "name": deploy.pop("name", "demo"),
            "repo": str(repo),
            "ref": deploy.pop("ref", "main"),
        }
        build_commands = deploy.pop("build_commands", ["sh build.sh"])
        artifact = deploy.pop("artifact", "dist")
        relay_url = deploy.pop("relay_url", None)
        relay_room = deploy.pop("relay_room", "demo")
        ssh_extra = deploy.pop("ssh_extra", {})
        group = deploy.pop("group", "web")
        d: dict[str, Any] = {
            "path": "app",
            "keep_releases": 3,
            "parallel": 20,
            "shared": ["log"],
            "after_activate": ["./bin/restart"],
            "health": "./bin/health",
            "health_timeout": 5,
            "health_interval": 0.2,
        }
        d.update(deploy)
        ssh: dict[str, Any] = {
            "known_hosts": str(self.known_hosts),
            "config": str(self.ssh_config),
            "host_key_policy": "strict",
        }
        ssh.update(ssh_extra)
        lines = ["[project]"] + [f"{k} = {_toml(v)}" for k, v in project.items()]
        lines += ["", "[build]", f"commands = {_toml(build_commands)}"]
        if artifact:
            lines.append(f"artifact = {_toml(artifact)}")
        lines += ["", "[deploy]"] + [f"{k} = {_toml(v)}" for k, v in d.items() if v is not None]
        lines += ["", "[ssh]"] + [f"{k} = {_toml(v)}" for k, v in ssh.items() if v is not None]
        lines += ["", self.hosts_toml(group)]
        if relay_url:
            lines += ["[relay]", f"url = {_toml(relay_url)}", f"room = {_toml(relay_room)}", ""]
        path.write_text("\n".join(lines))
        return path

    def fail_health(self, name: str, version: str = "") -> None:
        """Make the sample app's health check fail on ``name`` (only for ``version`` if given)."""
        (self.host(name).home / "FAIL_HEALTH").write_text(version)


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    s = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{s}"'


# -- the sample app -------------------------------------------------------------

_BUILD_SH = """#!/bin/sh
# Build the sample app into dist/.
set -e
rm -rf dist
mkdir -p dist/bin dist/log
cp VERSION app.sh dist/
cp bin/* dist/bin/
chmod +x dist/app.sh dist/bin/*
echo "built $(cat VERSION) at sha ${SHIPDECK_SHA:-unknown}" | tee dist/BUILD_INFO
"""

_APP_SH = """#!/bin/sh
echo "sample app $(cat "$(dirname "$0")/VERSION")"
"""

# The sample app's log: log/ is a shared entry in the configs written here, so this
# is <deploy.path>/shared/log/app.log (what `shipdeck logs shared/log/app.log` tails).
# Writing it never fails the hook or the check.
_APP_LOG = """
applog() {
  mkdir -p log 2>/dev/null
  echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) $*" 2>/dev/null >> log/app.log
  return 0
}
"""

_RESTART = (
    """#!/bin/sh
# 'Restart' the sample app: record the running version; say so in its log.
"""
    + _APP_LOG
    + """
echo "restarted $(cat VERSION)"
cat VERSION > "$HOME/RUNNING" || exit 1
applog "sample app $(cat VERSION) started (release ${SHIPDECK_RELEASE:-unknown})"
"""
)

_HEALTH = (
    """#!/bin/sh
# Healthy unless $HOME/FAIL_HEALTH exists and is empty or names this VERSION.
"""
    + _APP_LOG
    + """
v=$(cat VERSION)
if [ -f "$HOME/FAIL_HEALTH" ]; then
  f=$(cat "$HOME/FAIL_HEALTH")
  if [ -z "$f" ] || [ "$f" = "$v" ]; then
    echo "unhealthy: version $v is failing on this host" >&2
    applog "GET /health 503: version $v is failing on this host"
    exit 1
  fi
fi
echo "healthy: $v"
applog "GET /health 200: $v"
"""
)


def _git(repo: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "shipdeck",
        "GIT_AUTHOR_EMAIL": "demo@shipdeck.invalid",
        "GIT_COMMITTER_NAME": "shipdeck",
        "GIT_COMMITTER_EMAIL": "demo@shipdeck.invalid",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_CONFIG_NOSYSTEM": "1",
    }
    return subprocess.run(
        ["git", *args], cwd=repo, env=env, check=True, capture_output=True, text=True
    ).stdout.strip()


def make_sample_repo(path: Path | str, version: str = "1.0.0") -> Path:
    """Create a tiny app repo (VERSION, build.sh, bin/restart, bin/health) on branch main;
    restart and health append to the app's log, log/app.log."""
    repo = Path(path)
    repo.mkdir(parents=True, exist_ok=True)
    _git(repo, "init", "-q", "-b", "main")
    (repo / "bin").mkdir(exist_ok=True)
    (repo / "VERSION").write_text(version + "\n")
    (repo / "app.sh").write_text(_APP_SH)
    (repo / "build.sh").write_text(_BUILD_SH)
    (repo / "bin" / "restart").write_text(_RESTART)
    (repo / "bin" / "health").write_text(_HEALTH)
    for f in ("app.sh", "build.sh", "bin/restart", "bin/health"):
        os.chmod(repo / f, 0o755)
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", f"sample app {version}")
    return repo


def commit_version(repo: Path | str, version: str, message: str | None = None) -> str:
    """Commit a new VERSION to the sample repo; returns the new sha."""
    repo = Path(repo)
    (repo / "VERSION").write_text(version + "\n")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", message or f"release {version}")
    return _git(repo, "rev-parse", "HEAD")


def temp_root(prefix: str = "shipdeck-demo-") -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


__all__ = [
    "LocalFleet",
    "LocalHost",
    "make_sample_repo",
    "commit_version",
    "temp_root",
    "remove_tree",
]
