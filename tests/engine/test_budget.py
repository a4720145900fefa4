"""The failure budget and wave planning (engine/strategy.py), without a deploy."""

from __future__ import annotations

from engine.config import DeployConfig, HostSpec
from engine.strategy import Budget, wave_plan


def hosts(n: int) -> list[HostSpec]:
    return [HostSpec(name=f"web{i}", host=f"web{i}") for i in range(1, n + 1)]


def names(waves: list[list[HostSpec]]) -> list[list[str]]:
    return [[h.name for h in wave] for wave in waves]


def test_budget_allows_max_fail_failures_and_stops_at_one_more() -> None:
    budget = Budget.from_config("1", 10)
    budget.fail("web1", "unhealthy")
    assert not budget.exceeded
    budget.fail("web2", "exit 1")
    assert budget.exceeded
    assert budget.failed == {"web1": "unhealthy", "web2": "exit 1"}


def test_budget_percentage_rounds_up() -> None:
    assert Budget.from_config("10%", 12).allowed == 2
    assert Budget.from_config("10%", 10).allowed == 1
    assert Budget.from_config("0", 5).allowed == 0


def test_a_host_failing_twice_counts_once() -> None:
    budget = Budget.from_config("1", 3)
    budget.fail("web1", "first")
    budget.fail("web1", "again")
    assert not budget.exceeded
    assert budget.failed == {"web1": "again"}


def test_waves_follow_batches_and_the_last_takes_the_rest() -> None:
    waves, labels, gates = wave_plan(
        hosts(10), DeployConfig(path="app", batches=("1", "25%", "100%"))
    )
    assert names(waves) == [
        ["web1"],
        ["web2", "web3", "web4"],
        ["web5", "web6", "web7", "web8", "web9", "web10"],
    ]
    assert labels == [
        "wave 1 (canary: 1 host)",
        "wave 2 (3 hosts) (25%)",
        "wave 3 (6 hosts) (100%)",
    ]
    assert gates == set()


def test_hosts_left_after_the_batches_make_a_last_wave() -> None:
    waves, labels, _ = wave_plan(hosts(5), DeployConfig(path="app", batches=("2",)))
    assert names(waves) == [["web1", "web2", "web3", "web4", "web5"]]
    waves, labels, _ = wave_plan(hosts(5), DeployConfig(path="app", batches=("1", "1", "1")))
    assert names(waves)[-1] == ["web3", "web4", "web5"]
    assert labels[-1] == "wave 3 (3 hosts)"


def test_one_wave_has_no_canary_label() -> None:
    waves, labels, _ = wave_plan(hosts(3), DeployConfig(path="app"))
    assert len(waves) == 1
    assert labels == ["wave 1 (3 hosts) (100%)"]


def test_fewer_hosts_than_batches_drop_empty_waves() -> None:
    waves, _, gates = wave_plan(
        hosts(2), DeployConfig(path="app", batches=("1", "1", "100%"), approve=True)
    )
    assert names(waves) == [["web1"], ["web2"]]
    assert gates == {1}  # a gate between waves, none after the last


def test_gates_after_every_wave_but_the_last_or_the_listed_ones() -> None:
    config = DeployConfig(path="app", batches=("1", "1", "100%"), approve=True)
    assert wave_plan(hosts(4), config)[2] == {1, 2}
    listed = DeployConfig(path="app", batches=("1", "1", "100%"), approve=(2, 3))
    assert wave_plan(hosts(4), listed)[2] == {2}  # 3 is the last wave: no gate after it
