"""The one renderer: plain events in, exact strings out."""

from __future__ import annotations

import io
import json
import time

from engine.events import (
    Control,
    DeployFinished,
    DeployMeta,
    GateWaiting,
    LogLine,
    MaintenanceChanged,
    NodeStatus,
    Progress,
    Summary,
    Transfer,
)
from engine.handshake import WireStats, wire_summary
from engine.plan import build_plan
from tui.headless import HeadlessPrinter
from tui.render import (
    GLYPH,
    event_lines,
    event_text,
    fmt_bytes,
    fmt_duration,
    headless_lines,
    render_tree,
    status_line,
    summary_lines,
    transcript_lines,
    wire_text,
)

D = "d1"
FAILED_SUMMARY = Summary(
    hosts=3,
    ok=2,
    failed=1,
    failures={"web3": "unhealthy after 30s"},
    reason="",
    release_id="r1",
    exit_code=1,
    duration=4.25,
)


def test_one_glyph_per_status() -> None:
    assert GLYPH == {
        "pending": "○",
        "running": "●",
        "waiting": "⏸",
        "ok": "✓",
        "failed": "✗",
        "skipped": "–",
        "cancelled": "–",
    }


def test_durations_and_sizes() -> None:
    assert [fmt_duration(s) for s in (None, 4.25, 42, 185, 3725)] == [
        "",
        "4.2s",
        "42s",
        "3m05s",
        "1h02m",
    ]
    assert [fmt_bytes(n) for n in (512, 1536, 3 * 1024 * 1024)] == ["512B", "1.5KB", "3.0MB"]


def test_summary_lines() -> None:
    assert summary_lines(FAILED_SUMMARY) == [
        "2/3 hosts ok, 1 failed in 4.2s (exit 1)",
        "  ✗ web3: unhealthy after 30s",
    ]
    stopped = Summary(hosts=2, cancelled=2, reason="aborted by bob", relay="skipped", exit_code=3)
    assert summary_lines(stopped.to_json()) == [
        "0/2 hosts ok, 2 cancelled (exit 3)",
        "  stopped: aborted by bob",
        "  relay: skipped",
    ]
    assert summary_lines({}) == ["0/0 hosts ok"]  # nothing guessed
    moved = {"hosts": 20, "sent": 105 << 20, "jump": 100 << 20, "peer": 19, "artifact": 100 << 20}
    assert summary_lines(Summary(hosts=20, ok=20, extra={"transfer": moved}))[1] == (
        "  artifact 100.0 MiB to 20 host(s): 105.0 MiB sent, 100.0 MiB across the jump link,"
        " 19 copied from peers"
    )


def test_a_transfer_in_words() -> None:
    key = "release/wave-1/web2/upload"
    peer = Transfer(D, key=key, mode="peer", sent=0, total=1 << 20, seconds=0.5, source="web1")
    assert event_lines(peer) == [f"  {key} peer from web1 0.0 KiB of 1.0 MiB in 0.50s (0.0 MB/s)"]
    delta = Transfer(
        D, key=key, mode="delta", sent=1 << 20, total=100 << 20, seconds=1.0, jump=True
    )
    assert event_lines(delta) == [
        f"  {key} delta 1.0 MiB of 100.0 MiB in 1.00s (1.0 MB/s) via the jump host"
    ]


def test_one_line_per_event() -> None:
    key = "release/wave-1/web1/upload"
    assert event_lines(NodeStatus(D, key=key, status="ok", detail="1.2MB")) == [
        f"✓ {key} ok  1.2MB"
    ]
    assert event_lines(LogLine(D, key=key, text="sent")) == [f"  {key} │ sent"]
    assert event_lines(Progress(D, key=key, done=5, total=10)) == [f"  {key} 5/10 bytes"]
    assert event_lines(GateWaiting(D, key="release/gate-1")) == [
        "⏸ release/gate-1 waiting for approval"
    ]
    assert event_lines(Control(D, action="approve", by="bob", key="release/gate-1")) == [
        "approve by bob release/gate-1"
    ]
    assert event_lines(DeployMeta(D, meta={"release_id": "r1", "sha": "3f2a9c1d" * 3})) == [
        "release r1  sha 3f2a9c1d3f2a"
    ]
    plan = build_plan(D, [["web1"]], meta={"project": "web", "ref": "main", "operator": "al"})
    assert event_lines(plan.to_event()) == ["plan: deploy web@main by al (17 nodes)"]
    finished = DeployFinished(D, status="failed", summary=FAILED_SUMMARY.to_json())
    assert event_lines(finished) == [
        "finished: failed — 2/3 hosts ok, 1 failed in 4.2s (exit 1)",
        "  ✗ web3: unhealthy after 30s",
    ]
    assert event_text(finished) == (
        "finished: failed — 2/3 hosts ok, 1 failed in 4.2s (exit 1); ✗ web3: unhealthy after 30s"
    )


def test_events_without_words_of_their_own() -> None:
    from engine.events import Event

    assert event_lines(Event(D)) == ["event"]  # an event type with no words: its type
    assert event_lines(DeployMeta(D, meta={"subject": "fix", "sha": "abc"})) == [
        "subject fix  sha abc"
    ]
    assert event_lines(NodeStatus(D, key="fetch", status="bogus")) == ["? fetch bogus"]
    plan = build_plan(D, [["web1"]], meta={"hosts": 1, "kind": "rollback", "release_id": "r7"})
    assert event_lines(plan.to_event()) == ["plan: rollback @r7 to 1 host(s) (17 nodes)"]


def test_transcript_lines_carry_a_local_time() -> None:
    at = 1_780_000_000.0
    stamp = time.strftime("%H:%M:%S", time.localtime(at))
    raw = NodeStatus(D, key="fetch", status="running", at=at).dumps()
    assert transcript_lines(raw) == [f"{stamp} ● fetch running"]
    raw = DeployFinished(D, status="failed", summary=FAILED_SUMMARY.to_json(), at=at).dumps()
    assert transcript_lines(raw) == [
        f"{stamp} finished: failed — 2/3 hosts ok, 1 failed in 4.2s (exit 1)",
        "  ✗ web3: unhealthy after 30s",
    ]
    assert transcript_lines("not json\n") == ["not json"]
    future = json.dumps({"type": "newthing", "deploy_id": D, "x": 1})
    assert transcript_lines(future) == ["         newthing x 1"]


def test_headless_columns() -> None:
    ev = NodeStatus(D, key="release/wave-1/web1/upload", status="ok", detail="sent")
    assert status_line(ev, 1.5) == f"✓ ok        {'web1  upload':<40}   1.50s  sent"
    gate = NodeStatus(D, key="release/gate-1", status="waiting")
    assert status_line(gate) == f"⏸ waiting   {'release/gate-1':<40}        "
    finished = DeployFinished(D, status="ok", summary=Summary(hosts=1, ok=1, exit_code=0).to_json())
    assert headless_lines(finished) == ["OK: 1/1 hosts ok (exit 0)"]


def test_maintenance_in_words_headless_and_in_a_transcript() -> None:
    at = time.mktime((2026, 12, 1, 12, 1, 5, 0, 0, -1))
    on = MaintenanceChanged(
        D, on=True, by="alice", message="db upgrade", at=at, where="web: 3/3 servers in MAINT"
    )
    said = "maintenance on since 12:01:05 by alice: db upgrade (web: 3/3 servers in MAINT)"
    assert event_lines(on) == [f"⚠ {said}"]
    out = io.StringIO()
    HeadlessPrinter(out)(on)  # a deploy that finds maintenance on says so, headless too
    assert out.getvalue() == f"⚠ {said}\n"
    off = MaintenanceChanged(D, on=False, by="bob")
    assert headless_lines(off) == ["maintenance off by bob"]
    assert transcript_lines(json.dumps(on.to_json())) == [f"12:01:05 ⚠ {said}"]


def test_headless_printer_prints_a_duration_from_the_reducers_start_time() -> None:
    out = io.StringIO()
    printer = HeadlessPrinter(out)
    plan = build_plan(D, [["web1"]], meta={"project": "web", "ref": "main", "hosts": 1})
    printer(plan.to_event())
    printer(NodeStatus(D, key="release/wave-1/web1/upload", status="running", at=10.0))
    printer(LogLine(D, key="release/wave-1/web1/upload", text="quiet"))
    printer(LogLine(D, key="release/wave-1/web1/upload", stream="stderr", text="loud"))
    printer(NodeStatus(D, key="release/wave-1/web1/upload", status="ok", at=12.5))
    printer(NodeStatus(D, key="release/wave-1/web1/rollback", status="skipped", at=12.5))
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("deploy web@main to 1 host(s)")
    assert lines[1:] == [
        "    release/wave-1/web1/upload: loud",
        f"✓ ok        {'web1  upload':<40}   2.50s",
    ]


def test_render_tree() -> None:
    plan = build_plan(D, [["web1"]], meta={"project": "web", "ref": "main", "sha": "3f2a9c1d"})
    lines = render_tree(plan, collapse_steps=True)
    assert lines[0] == "deploy web@main (sha 3f2a9c1)"
    assert lines[-2:] == [
        "    └── wave 1",
        "        └── web1  (connect, lock, upload, unpack, link, before, activate, restart, health, rollback, cleanup)",
    ]


def test_control_notes() -> None:
    from tui.render import control_note

    assert control_note(Control(D, action="abort", by="bob")) == "aborted the deploy"
    assert control_note(Control(D, action="approve", key="release/gate-1")) == (
        "approved release/gate-1"
    )


def _card(**over) -> dict:
    group = {
        "state": "ahead",
        "base": "1" * 40,
        "release": "20261120T101500Z-1111111",
        "hosts": ["web1", "web2"],
        "host_count": 5,
        "commits": [
            {
                "sha": "3f2a9c1" + "0" * 33,
                "subject": "Tune the pool",
                "author": "ada",
                "date": "2026-11-24T15:35:00+00:00",
            },
        ],
        "commits_total": 4,
        "files": [
            {"path": "app/pool.py", "added": 12, "removed": 3},
            {"path": "logo.png", "added": None, "removed": None},
        ],
        "files_total": 2,
        "added": 12,
        "removed": 3,
    }
    return {
        "target": "3f2a9c1" + "0" * 33,
        "subject": "Tune the pool",
        "hosts": 5,
        "groups": [group],
        **over,
    }


def test_what_goes_out_in_words_for_tail_headless_and_transcripts() -> None:
    from engine.events import ChangesOutgoing

    event = ChangesOutgoing(D, key="release/gate-1", changes=_card(), at=1.0)
    expected = [
        "what goes out at gate-1 to 5 hosts: 3f2a9c1 Tune the pool",
        "── 5 hosts on 20261120T101500Z-1111111: 4 commits going out, 2 files +12 −3",
        "   web1, web2, … +3",
        "   3f2a9c1  2026-11-24  ada  Tune the pool",
        "   … and 3 more commits",
        "      +12 −3  app/pool.py",
        "   +bin −bin  logo.png",
    ]
    assert event_lines(event) == headless_lines(event) == expected
    stamp, *rest = transcript_lines(event.dumps())
    assert stamp.endswith(expected[0]) and rest == expected[1:]
    out = io.StringIO()
    printer = HeadlessPrinter(out)
    printer(build_plan(D, [["web1"]]).to_event())
    printer(event)
    assert out.getvalue().splitlines()[1:] == expected


def test_a_no_op_and_an_unreadable_card_say_so() -> None:
    same = {"state": "same", "base": "3f2a9c1" + "0" * 33, "hosts": ["web1"], "host_count": 1}
    noop = _card(hosts=1, groups=[same], noop=True)
    assert event_lines_of(noop)[1] == (
        "⚠ no-op: the host already runs 3f2a9c1; nothing new goes out"
    )
    assert event_lines_of({"hosts": 2, "error": "no git mirror at /x"})[1] == (
        "⚠ cannot tell what goes out: no git mirror at /x"
    )
    assert event_lines_of("not a card")[1].startswith("⚠ cannot tell what goes out")


def event_lines_of(changes) -> list[str]:
    from engine.events import ChangesOutgoing

    return event_lines(ChangesOutgoing(D, key="release", changes=changes))


def test_the_wire_counter_reads_as_round_trips_and_bytes() -> None:
    wire = wire_summary(
        {
            "web1": WireStats(
                round_trips=13, bytes_out=300_000, bytes_in=20_000, handshake_round_trips=8
            ),
            "web2": WireStats(
                round_trips=15, bytes_out=300_000, bytes_in=24_000, handshake_round_trips=8
            ),
            "web3": WireStats(
                round_trips=12, bytes_out=300_000, bytes_in=20_000, handshake_round_trips=8
            ),
        },
        keep=2,
    )
    assert list(wire["per_host"]) == ["web2", "web1"]  # the costliest hosts, at most keep
    assert (
        wire_text(wire)
        == "13 round trips per host (median; max 15, handshake 8), 878.9KB out, 62.5KB in"
    )
    lines = summary_lines(Summary(hosts=3, ok=2, failed=1, failures={"web3": "down"}, wire=wire))
    assert lines[1:] == ["  ✗ web3: down", "  wire: " + wire_text(wire)]  # the counter last
    # read back from its JSON as any summary is; a wire that is not numbers says less
    assert Summary.from_json(Summary(wire=wire).to_json()).wire == wire
    assert wire_text({"round_trips_median": "x", "bytes_out": 2048}) == "2.0KB out"
    assert summary_lines(Summary(hosts=1, ok=1)) == ["1/1 hosts ok"]  # nothing counted, no line
