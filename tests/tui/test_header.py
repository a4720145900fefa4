"""The header's two lines, from plain facts (no app)."""

from __future__ import annotations

from engine.events import MaintenanceChanged
from engine.state import Counts
from tui.widgets.header import (
    HeaderFacts,
    exec_text,
    identity_line,
    relay_text,
    run_text,
    state_line,
)


def styles_of(text) -> dict[str, str]:
    return {text.plain[s.start : s.end]: str(s.style) for s in text.spans}


def test_identity_names_project_ref_sha_release_and_operator():
    facts = HeaderFacts(
        operator="alice", project="web", ref="main", sha="3f2a9c1d4e", release_id="r42"
    )
    line = identity_line(facts)
    assert line.plain == "⛴ shipdeck  web  main → 3f2a9c1  r42  @alice  relay not configured"
    assert styles_of(line)[" → 3f2a9c1"] == "yellow"


def test_identity_without_a_sha_yet_shows_a_question_mark():
    line = identity_line(HeaderFacts(operator="al", ref="main"))
    assert line.plain == "⛴ shipdeck  main → ?  @al  relay not configured"
    assert styles_of(line)[" → ?"] == "dim"


def test_relay_state_and_who_is_in_the_room():
    assert relay_text(None).plain == "not configured"
    here = relay_text("connected", ("a", "b", "c", "d", "e"))
    assert here.plain == "◉ connected · 5 here: a, b, c, d"
    assert styles_of(here)["◉ connected"] == "green"
    assert " · 5 here: a, b, c, d" not in styles_of(here)  # names are not coloured
    assert relay_text("reconnecting").plain == "◌ reconnecting"


def test_a_plan_not_yet_started_says_which_key_starts_it():
    facts = HeaderFacts(operator="al", totals=Counts(pending=3))
    assert state_line(facts).plain == "○ ready — press d to deploy  0/3 ✓ hosts"
    rollback = HeaderFacts(operator="al", kind="rollback", totals=Counts(pending=3))
    assert run_text(rollback).plain == "○ ready — press d to start"


def test_maintenance_comes_first_with_who_and_why():
    on = MaintenanceChanged("m1", on=True, by="alice", message="db upgrade")
    facts = HeaderFacts(operator="al", spectator=True, maintenance=on)
    line = state_line(facts)
    assert line.plain == "⚠ MAINTENANCE by alice: db upgrade  waiting for a deploy"
    assert "reverse" in styles_of(line)["⚠ MAINTENANCE"]
    long = MaintenanceChanged("m1", on=True, by="al", message="x" * 200)
    assert len(state_line(HeaderFacts(operator="al", maintenance=long)).plain) < 80


def test_no_plan_reads_differently_for_an_operator_and_a_spectator():
    assert state_line(HeaderFacts(operator="al")).plain == "no plan"
    assert state_line(HeaderFacts(operator="al", spectator=True)).plain == "waiting for a deploy"


def test_a_running_deploy_shows_counts_time_gate_and_modes():
    facts = HeaderFacts(
        operator="al",
        running=True,
        totals=Counts(ok=37, failed=1, running=2, pending=10),
        elapsed=185.0,
        gate_waiting=True,
        following=True,
        filter_text="web",
        filtered=12,
    )
    assert state_line(facts).plain == (
        "● deploy running  1 ✗ 37/50 ✓ 2 ● hosts  3m05s  ⏸ gate waiting: g approves"
        "  follow  filter “web”: 12 hosts"
    )


def test_a_finished_run_shows_how_it_ended_and_its_exit_code():
    failed = HeaderFacts(operator="al", finished="failed", exit_code=1, totals=Counts(failed=1))
    assert state_line(failed).plain == "✗ deploy failed (exit 1)  1 ✗ 0/1 ✓ hosts"
    assert styles_of(run_text(failed))["✗ deploy failed"] == "bold red bold"
    stopped = HeaderFacts(operator="al", kind="rollback", finished="stopped", running=True)
    assert run_text(stopped).plain == "– rollback stopped"  # finished wins over running
    assert run_text(HeaderFacts(operator="al", finished="odd")).plain == "? deploy odd"


def test_identity_names_the_environment_after_the_project():
    line = identity_line(HeaderFacts(operator="al", project="web", env="production", ref="main"))
    assert line.plain == "⛴ shipdeck  web  [production]  main → ?  @al  relay not configured"
    assert styles_of(line)["[production]"] == "bold magenta"


def test_an_exec_names_its_command_and_hosts_instead_of_a_ref():
    facts = HeaderFacts(
        operator="al", project="web", ref="main", kind="exec", command="uptime",
        cwd="current", totals=Counts(ok=4, failed=1),
    )  # fmt: skip
    assert identity_line(facts).plain == (
        "⛴ shipdeck  web  exec: uptime on 5 hosts  @al  relay not configured"
    )
    one = HeaderFacts(operator="al", kind="exec", command="ls  -l " + "x" * 80, cwd="shared",
                      totals=Counts(pending=1))  # fmt: skip
    assert exec_text(one).plain == "exec: ls -l " + "x" * 33 + "… on 1 host in shared"
