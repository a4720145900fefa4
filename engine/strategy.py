"""Waves, the failure budget and gates: how a deploy moves through the fleet."""

from __future__ import annotations

from dataclasses import dataclass, field

from engine.config import DeployConfig, HostSpec, resolve_size, split_waves


@dataclass
class Budget:
    """``max_fail`` failed hosts are allowed over the whole deploy; one more stops it."""

    allowed: int
    failed: dict[str, str] = field(default_factory=dict)  # host -> reason

    @classmethod
    def from_config(cls, max_fail: str, total: int) -> Budget:
        return cls(allowed=resolve_size(max_fail, total))

    def fail(self, host: str, reason: str) -> None:
        self.failed[host] = reason

    @property
    def exceeded(self) -> bool:
        return len(self.failed) > self.allowed


def wave_plan(
    hosts: list[HostSpec], deploy: DeployConfig
) -> tuple[list[list[HostSpec]], list[str], set[int]]:
    """(waves, labels, gates): the hosts of each wave, its label, and the wave numbers
    followed by an approval gate."""
    waves = split_waves(hosts, deploy.batches)
    labels = []
    for i, wave in enumerate(waves, start=1):
        size = deploy.batches[i - 1] if i <= len(deploy.batches) else "rest"
        noun = "host" if len(wave) == 1 else "hosts"
        kind = "canary: " if i == 1 and len(waves) > 1 else ""
        pct = f" ({size})" if str(size).endswith("%") else ""
        labels.append(
            f"wave {i} ({kind}{len(wave)} {noun}){pct}"
            if kind
            else f"wave {i} ({len(wave)} {noun}){pct}"
        )
    if deploy.approve is True:
        gates = set(range(1, len(waves)))
    elif deploy.approve:
        gates = {n for n in deploy.approve if n < len(waves)}
    else:
        gates = set()
    return waves, labels, gates
