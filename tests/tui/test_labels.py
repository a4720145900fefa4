"""Tree labels: one line per node, from a plain Node and its counts."""

from __future__ import annotations

from engine.plan import Node
from engine.state import Counts
from tui.labels import (
    amount_part,
    counts_text,
    detail_part,
    elapsed_part,
    gate_part,
    node_label,
    shows_detail,
    step_part,
)

HOST = "release/wave-1/web1"


def node(key: str, kind: str, status: str = "pending", **kw) -> Node:
    return Node(
        key=key, label=kw.pop("label", key.rpartition("/")[2]), kind=kind, status=status, **kw
    )


def styled(text) -> list[tuple[str, str]]:
    """A label as (piece, style) pairs, the way the operator sees colours."""
    return [(text.plain[s.start : s.end], str(s.style)) for s in text.spans]


def test_a_running_host_shows_its_step_and_time_in_yellow():
    label = node_label(node(HOST, "host", "running"), elapsed=4.2, current_step="upload")
    assert label.plain == "● web1  upload  4.2s"
    assert ("  upload", "yellow") in styled(label) and ("  4.2s", "yellow") in styled(label)


def test_a_failed_host_shows_its_reason_or_the_note_that_replaces_it():
    failed = node(HOST, "host", "failed", detail="unhealthy after 30s")
    assert node_label(failed, elapsed=31.0).plain == "✗ web1  31s  unhealthy after 30s"
    assert ("  unhealthy after 30s", "red") in styled(node_label(failed))
    noted = node_label(failed, note="rolled back to r1")
    assert noted.plain == "✗ web1  rolled back to r1"


def test_a_wave_shows_its_counts_before_its_label_and_not_its_detail():
    counts = Counts(ok=1, failed=1, running=1)
    wave = node("release/wave-1", "wave", "running", label="wave 1 (3 hosts)", detail="1/3")
    assert node_label(wave, counts=counts).plain == "● 1 ✗ 1/3 ✓ 1 ●  wave 1 (3 hosts)"


def test_a_wave_that_never_ran_says_why():
    counts = Counts(cancelled=2)
    wave = node("release/wave-2", "wave", "cancelled", label="wave 2", detail="budget exceeded")
    assert node_label(wave, counts=counts).plain == "– 0/2 ✓ 2 –  wave 2  budget exceeded"


def test_a_step_shows_its_progress_while_running_and_its_size_when_done():
    upload = node(HOST + "/upload", "step", "running", total=2048)
    assert node_label(upload, progress=(512, 2048)).plain == "● upload  25%"
    assert node_label(upload, progress=(0, 0)).plain == "● upload"
    upload.status = "ok"
    assert node_label(upload, elapsed=1.0).plain == "✓ upload  2.0KB  1.0s"


def test_a_waiting_gate_says_which_key_approves_it():
    gate = node("release/gate-1", "gate", "waiting", label="approve wave 2")
    assert node_label(gate).plain == "⏸ approve wave 2  press g to approve"


def test_a_rollback_step_shows_its_target():
    step = node(HOST + "/rollback", "step", "running", detail="to r1")
    assert node_label(step).plain == "● rollback  to r1"
    step.status = "ok"
    assert styled(node_label(step))[-1] == ("  to r1", "dim")


def test_an_unknown_status_reads_as_a_question_mark():
    assert node_label(node("fetch", "stage", "bogus")).plain == "? fetch"


def test_parts_on_plain_nodes():
    running = node(HOST, "host", "running")
    assert step_part(running, "upload") == ("upload", "yellow")
    assert step_part(running, None) is None
    assert step_part(node(HOST, "host", "ok"), "upload") is None
    assert amount_part(node("s", "step", "running"), (300, 200)) == ("100%", "bold cyan")
    assert amount_part(node("s", "step", "ok"), None) is None
    assert elapsed_part("pending", 3.0) is None
    assert elapsed_part("ok", 3.0) == ("3.0s", "dim")
    assert gate_part(node("release/gate-1", "gate", "pending")) is None


def test_which_details_are_shown():
    assert shows_detail(node("fetch", "stage", "ok"), None)  # a stage says what it did
    assert not shows_detail(node(HOST, "host", "ok"), None)
    assert shows_detail(node(HOST, "host", "skipped"), None)
    ran = node("release/wave-1", "wave", "skipped", started=1.0)
    assert not shows_detail(ran, Counts(skipped=1))
    assert detail_part(node(HOST, "host", "ok", detail="fine"), None, None) is None
    assert detail_part(node(HOST, "host", "ok"), None, "a note") == ("a note", "yellow")


def test_counts_put_failures_first():
    assert counts_text(Counts(ok=37, failed=1, running=2, pending=10)).plain == "1 ✗ 37/50 ✓ 2 ●"
    assert counts_text(Counts(pending=3)).plain == "0/3 ✓"
