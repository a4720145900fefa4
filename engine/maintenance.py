"""Maintenance mode: the whole backend out of rotation, who and why recorded.

``shipdeck maintenance on|off`` calls :func:`switch`: with the built-in HAProxy
adapter (``[balancer] kind = "haproxy"``) every server of the backend is put in
``maint`` (on) or back to ``ready`` (off), over the same balancer connection a deploy
uses; ``deploy.maintenance_on`` / ``deploy.maintenance_off`` hooks run after it (or
alone), where the drain hooks run. A server that was already out of rotation when
maintenance went on (a host a failed deploy left drained) stays in ``maint`` when it
goes off: maintenance only puts back what it took out (the servers' states before
``on`` are kept in its history record).

A run learns whether maintenance is on with :func:`find`, when it starts, before any
host is touched:

- with the HAProxy adapter it asks HAProxy: maintenance is on when every server of the
  backend is in ``MAINT``. HAProxy is the truth whoever switched it and from whichever
  machine; the who and why come from this machine's latest maintenance record when it
  says on (else the run says the servers are in maint, set outside shipdeck here);
- with hooks only there is nothing to ask, so it is the latest maintenance record of
  the project in the local history.

A deploy during maintenance goes ahead (it is not refused) and says so; its hosts
stay out of rotation (:attr:`engine.balancer.Balancer.maintenance`).

Errors: :class:`engine.errors.ConfigError` when neither the adapter nor the hooks are
configured; :class:`engine.errors.StepFailed` when HAProxy refuses, the balancer host
cannot be reached, or a hook fails.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from engine.balancer import Balancer, ServerStat, in_maint
from engine.errors import ConfigError
from engine.events import MaintenanceChanged

if TYPE_CHECKING:
    from engine.config import Config
    from engine.history import History
    from engine.ssh import Connector

__all__ = ["Switched", "announce", "configured", "find", "switch"]

NOT_CONFIGURED = (
    'maintenance needs the HAProxy adapter ([balancer] kind = "haproxy") or'
    " deploy.maintenance_on / deploy.maintenance_off hooks"
)


def configured(config: Config) -> bool:
    """Whether the config can switch maintenance mode (adapter or hooks)."""
    d = config.deploy
    lb = config.balancer
    return (lb is not None and lb.kind == "haproxy") or bool(d.maintenance_on or d.maintenance_off)


@dataclass
class Switched:
    """What :func:`switch` did: ``event`` (to publish and record), each server's state
    ``before`` and ``after``, the servers ``kept`` out of rotation on off (they were out
    before maintenance went on) and the hooks run."""

    event: MaintenanceChanged
    before: dict[str, str] = field(default_factory=dict)
    after: dict[str, str] = field(default_factory=dict)
    kept: list[str] = field(default_factory=list)
    hooks: int = 0
    #: on: the servers that were out of rotation before maintenance went on (kept
    #: from an earlier on when it is switched on again)
    out_before: list[str] = field(default_factory=list)

    def detail(self) -> dict[str, Any]:
        """What the history record keeps beside the event."""
        return {
            "before": self.before,
            "after": self.after,
            "kept": self.kept,
            "hooks": self.hooks,
            "out_before": self.out_before,
        }


def _where(backend: str, after: dict[str, str], on: bool, kept: list[str], hooks: int) -> str:
    parts = []
    if after:
        if on:
            n = sum(in_maint(s) for s in after.values())
            parts.append(f"{backend}: {n}/{len(after)} servers in MAINT")
        else:
            n = sum(not in_maint(s) for s in after.values())
            left = f", {', '.join(kept)} left in maint (out before maintenance on)" if kept else ""
            parts.append(f"{backend}: {n}/{len(after)} servers back in rotation{left}")
    if hooks:
        parts.append(f"{hooks} hook(s)")
    return "; ".join(parts)


async def switch(
    config: Config,
    on: bool,
    *,
    by: str,
    message: str,
    deploy_id: str,
    connector: Callable[[], Connector],
    previous: dict[str, Any] | None = None,
) -> Switched:
    """Put maintenance mode ``on`` or off: the adapter's servers, then the hooks.

    ``previous`` is the latest maintenance record (:meth:`History.last_maintenance`):
    on off, the servers it saw out of rotation before on are left in maint.

    Raises ConfigError (neither adapter nor hooks), StepFailed (HAProxy refused, the
    balancer host unreachable, a hook failed: what was done before stays done).
    """
    if not configured(config):
        raise ConfigError(config.path, NOT_CONFIGURED, key="balancer")
    balancer = Balancer(config, connector)
    d = config.deploy
    done = Switched(MaintenanceChanged(deploy_id))
    try:
        if balancer.adapter:
            await _switch_servers(balancer, on, previous, done)
        hooks = d.maintenance_on if on else d.maintenance_off
        if hooks:
            env = {
                "SHIPDECK_MAINTENANCE": "on" if on else "off",
                "SHIPDECK_MAINTENANCE_MESSAGE": message,
                "SHIPDECK_OPERATOR": by,
                "SHIPDECK_PROJECT": config.project.name,
            }
            if config.balancer is not None:
                env["SHIPDECK_BACKEND"] = config.balancer.backend
            await balancer.hooks(hooks, env)
            done.hooks = len(hooks)
    finally:
        await balancer.close()
    backend = config.balancer.backend if config.balancer is not None else ""
    done.event = MaintenanceChanged(
        deploy_id,
        on=on,
        by=by,
        message=message,
        at=time.time(),
        where=_where(backend, done.after, on, done.kept, done.hooks),
    )
    return done


async def _switch_servers(
    balancer: Balancer, on: bool, previous: dict[str, Any] | None, done: Switched
) -> None:
    servers = await balancer.servers()
    if not servers:
        lb = balancer.lb
        assert lb is not None
        raise ConfigError(
            balancer.config.path,
            f"HAProxy has no servers in backend {lb.backend!r}",
            key="balancer.backend",
        )
    done.before = {name: stat.status for name, stat in servers.items()}
    was_out = _out_before(servers, on, previous)
    if on:
        done.out_before = sorted(was_out)
    for name, stat in servers.items():
        if on and not in_maint(stat.status):
            await balancer.set_state(name, "maint")
        elif not on and in_maint(stat.status):
            if name in was_out:
                done.kept.append(name)
                continue
            await balancer.set_state(name, "ready")
    done.after = {name: stat.status for name, stat in (await balancer.servers()).items()}


def _out_before(
    servers: dict[str, ServerStat], on: bool, previous: dict[str, Any] | None
) -> set[str]:
    """The servers that were out of rotation before maintenance was first switched on
    (they stay out when it is switched off): from the record of that first ``on`` when
    there is one, else those in MAINT now (when switching on)."""
    if previous is not None and previous.get("on"):
        return {str(n) for n in (previous.get("summary") or {}).get("out_before") or ()}
    if on:
        return {name for name, stat in servers.items() if in_maint(stat.status)}
    return set()


async def find(
    config: Config,
    balancer: Balancer | None,
    history: History,
    *,
    deploy_id: str,
) -> MaintenanceChanged | None:
    """Maintenance mode as a run finds it at its start: the event to emit when it is on,
    else None (see the module's docstring for where it looks). Never raises: a
    balancer that cannot be asked here is asked again by the first drain, which fails
    the host with the reason."""
    record = _record(history, config.project.name)
    if balancer is not None and balancer.adapter:
        try:
            servers = await balancer.servers()
        except Exception:  # noqa: BLE001 - the drain step reports it, with the host
            return None
        return _from_servers(config, servers, record, deploy_id)
    if record is None or not record["on"] or not configured(config):
        return None
    return _recorded(deploy_id, record, f"recorded in history ({record['id']})")


def _recorded(deploy_id: str, record: dict[str, Any], where: str) -> MaintenanceChanged:
    """Maintenance on as history's latest record of it says (who, why, since when)."""
    return MaintenanceChanged(
        deploy_id,
        on=True,
        by=str(record.get("operator") or ""),
        message=record["message"],
        at=float(record.get("started") or 0.0),
        where=where,
    )


def _from_servers(
    config: Config,
    servers: dict[str, ServerStat],
    record: dict[str, Any] | None,
    deploy_id: str,
) -> MaintenanceChanged | None:
    if not servers or not all(in_maint(s.status) for s in servers.values()):
        return None
    assert config.balancer is not None
    where = f"{config.balancer.backend}: {len(servers)}/{len(servers)} servers in MAINT"
    if record is not None and record["on"]:
        return _recorded(deploy_id, record, where)
    return MaintenanceChanged(
        deploy_id, on=True, where=where + " (not set with shipdeck maintenance here)"
    )


def _record(history: History, project: str) -> dict[str, Any] | None:
    try:
        return history.last_maintenance(project)
    except Exception:  # noqa: BLE001 - an unreadable history must not stop a deploy
        return None


async def announce(run: Any) -> MaintenanceChanged | None:
    """At a deploy's or rollback's start (``run``: :class:`engine.run.Run`): find
    maintenance mode (:func:`find`); when it is on, emit it, say in the release's log
    what that means for this run, and tell the run's balancer, so that its hosts stay
    out of rotation. Returns the event, or None when maintenance is off. Never raises."""
    found = await find(run.config, run.balancer, run.history, deploy_id=run.deploy_id)
    if found is None:
        return None
    if run.balancer is not None:
        run.balancer.maintenance = found
    run.emit(found)
    run.log(
        "release",
        f"{run.kind} during maintenance: it goes ahead, and its hosts stay out of rotation"
        " until `shipdeck maintenance off`",
    )
    return found
