"""What the stage tree builds, from plain plan nodes (no app)."""

from __future__ import annotations

from engine.plan import Node
from tui.widgets.stage_tree import in_tree, opens_on_build


def node(key: str, kind: str) -> Node:
    return Node(key=key, label=key, kind=kind)


def test_the_filter_keeps_hosts_and_lazy_trees_leave_steps_out():
    host = node("release/wave-1/web1", "host")
    step = node("release/wave-1/web1/upload", "step")
    assert in_tree(host, None, lazy=False)
    assert in_tree(host, {"release/wave-1/web1"}, lazy=True)
    assert not in_tree(host, {"release/wave-1/web2"}, lazy=False)
    assert in_tree(step, None, lazy=False) and not in_tree(step, None, lazy=True)
    for other in (
        node("fetch", "stage"),
        node("release/wave-1", "wave"),
        node("release/gate-1", "gate"),
    ):
        assert in_tree(other, set(), lazy=True)  # a filter is about hosts only


def test_waves_and_the_release_open_and_what_was_open_stays_open():
    assert opens_on_build(node("release", "stage"), set())
    assert opens_on_build(node("release/wave-2", "wave"), set())
    assert not opens_on_build(node("fetch", "stage"), set())
    assert opens_on_build(node("fetch", "stage"), {"fetch"})
    host = node("release/wave-1/web1", "host")
    assert not opens_on_build(host, set()) and opens_on_build(host, {host.key})
