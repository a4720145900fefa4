"""The phase script's step markers and their parser (engine/remote/phase.py)."""

from __future__ import annotations

import subprocess

from engine.remote.lock import FENCED_EXIT
from engine.remote.phase import (
    MARK,
    TAIL,
    Marker,
    PhaseReader,
    parse_marker,
    phase_script,
    step_failure,
)


def test_parse_marker() -> None:
    assert parse_marker(f"{MARK}unpack start") == Marker("unpack", "start")
    assert parse_marker(f"{MARK}unpack end 0") == Marker("unpack", "end", 0)
    assert parse_marker(f"{MARK}before end 3") == Marker("before", "end", 3)
    assert parse_marker(f"{MARK}before end -1") == Marker("before", "end", -1)
    assert parse_marker("step unpack start") is None  # no record separator: output
    assert parse_marker("") is None


def test_an_end_marker_without_a_readable_status_is_a_failure() -> None:
    assert parse_marker(f"{MARK}health end") == Marker("health", "end", 255)
    assert parse_marker(f"{MARK}health end x") == Marker("health", "end", 255)


def test_reader_keeps_each_steps_last_lines() -> None:
    reader = PhaseReader()
    assert reader.feed("before any step") is None
    reader.feed(f"{MARK}before start")
    assert reader.step == "before"
    for n in range(TAIL + 3):
        assert reader.feed(f"line {n}") is None
    assert reader.feed(f"{MARK}before end 1") == Marker("before", "end", 1)
    assert reader.step == ""
    assert reader.tail("before") == [f"line {n}" for n in range(3, TAIL + 3)]
    assert reader.tail("restart") == []
    reader.feed("between steps")
    assert reader.tail("before")[-1] == f"line {TAIL + 2}"


def test_step_failure_reasons() -> None:
    assert step_failure("before", 3, ["$ ./migrate", "`./migrate` exited 3"], "/srv") == (
        "before failed (exit 3): `./migrate` exited 3"
    )
    assert step_failure("unpack", 1, [], "/srv") == "unpack failed (exit 1)"
    taken = "lock taken over by bob (deploy d-2)"
    assert step_failure("activate", FENCED_EXIT, [taken], "/srv") == f"activate refused: {taken}"
    full = ["tar: write error: No space left on device"]
    assert step_failure("unpack", 2, full, "/srv/app") == (
        "unpack failed: no space left on device on /srv/app"
    )


def test_phase_script_markers_round_trip_through_a_real_shell() -> None:
    script = phase_script(
        [("one", "echo hello"), ("two", "echo oops >&2; exit 4"), ("three", "echo never")]
    )
    res = subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True, timeout=30)
    assert res.returncode == 4
    reader = PhaseReader()
    # as the session hands lines over: split at newlines only (str.splitlines() also
    # splits at the marker's \x1e), empty lines dropped
    lines = [text for text in res.stdout.split("\n") if text]
    markers = [m for m in map(reader.feed, lines) if m is not None]
    assert markers == [
        Marker("one", "start"),
        Marker("one", "end", 0),
        Marker("two", "start"),
        Marker("two", "end", 4),
    ]
    assert reader.tail("one") == ["hello"]
    assert reader.tail("two") == ["oops"]  # stderr merged into the step's output
