"""The operator's name: SHIPDECK_OPERATOR, else the relay-confirmed name, else user@host."""

from __future__ import annotations

import getpass
import socket

import pytest

from engine.operator import default_operator, local_operator, resolve_operator

pytestmark = pytest.mark.timeout(10)


@pytest.fixture
def no_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.delenv("SHIPDECK_OPERATOR", raising=False)
    return monkeypatch


def test_without_env_or_relay_it_is_user_at_host(no_env) -> None:
    me = f"{getpass.getuser()}@{socket.gethostname()}"
    assert resolve_operator() == me
    assert resolve_operator(None) == me
    assert default_operator() == me
    assert local_operator() == me


def test_the_relay_confirmed_name_beats_user_at_host(no_env) -> None:
    assert resolve_operator("carol") == "carol"
    assert default_operator() != "carol"  # nobody asked the relay


def test_the_environment_beats_the_relay_and_says_so(no_env) -> None:
    no_env.setenv("SHIPDECK_OPERATOR", "release-bot")
    notes: list[str] = []
    assert resolve_operator("carol", warn=notes.append) == "release-bot"
    assert default_operator() == "release-bot"
    assert len(notes) == 1 and "release-bot" in notes[0] and "carol" in notes[0]


def test_no_warning_when_env_and_relay_agree_or_relay_silent(no_env) -> None:
    no_env.setenv("SHIPDECK_OPERATOR", "carol")
    notes: list[str] = []
    assert resolve_operator("carol", warn=notes.append) == "carol"
    assert resolve_operator(None, warn=notes.append) == "carol"
    assert notes == []


@pytest.mark.parametrize("blank", ["", "   ", "\t"])
def test_a_blank_env_is_not_a_name(no_env, blank: str) -> None:
    no_env.setenv("SHIPDECK_OPERATOR", blank)
    assert resolve_operator("carol") == "carol"
    assert resolve_operator() == f"{getpass.getuser()}@{socket.gethostname()}"


def test_the_env_name_is_trimmed(no_env) -> None:
    no_env.setenv("SHIPDECK_OPERATOR", "  alice \n")
    assert resolve_operator("bob") == "alice"


def test_a_user_without_a_name_is_unknown_not_a_crash(no_env) -> None:
    def nameless() -> str:
        raise KeyError("getpwuid(): uid not found: 12345")

    no_env.setattr(getpass, "getuser", nameless)
    assert resolve_operator() == f"unknown@{socket.gethostname()}"


def test_engine_and_tui_backend_use_the_one_rule() -> None:
    import engine.deploy
    import tui.backend

    assert engine.deploy.default_operator is default_operator
    assert tui.backend.default_operator is default_operator
