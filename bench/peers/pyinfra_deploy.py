"""pyinfra: the workload as operations (release, tarball and path from --data)."""

from pyinfra import host
from pyinfra.operations import files, server

p, r, tarball = host.data.path, host.data.release, host.data.tarball

server.shell(name="mkdir", commands=[f"mkdir -p {p}/releases/{r} {p}/artifacts"])
files.put(name="upload", src=tarball, dest=f"{p}/artifacts/{r}.tar.gz")
server.shell(name="unpack", commands=[f"tar -xzf {p}/artifacts/{r}.tar.gz -C {p}/releases/{r}"])
server.shell(
    name="switch",
    commands=[f"cd {p} && ln -sfn releases/{r} current.tmp && mv -T current.tmp current"],
)
server.shell(name="restart", commands=[f"cd {p}/current && sh -c 'sleep 0.05; echo restarted'"])
server.shell(name="health", commands=[f"cd {p}/current && test -f HEALTH && echo healthy"])
