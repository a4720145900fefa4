"""Property-based malformed shipdeck.toml files: a clear ConfigError naming the key, never a traceback."""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.config import ConfigError, parse_config
from tests.engine.test_config import GOOD

pytestmark = pytest.mark.fault

SECTIONS = ["project", "build", "deploy", "ssh", "hosts", "relay"]
KEYS = {
    "project": ["name", "repo", "ref"],
    "build": ["commands", "artifact", "timeout"],
    "deploy": [
        "path",
        "keep_releases",
        "parallel",
        "batches",
        "max_fail",
        "shared",
        "before_activate",
        "after_activate",
        "health",
        "health_timeout",
        "rollback_on_failure",
        "approve",
    ],
    "ssh": [
        "user",
        "port",
        "identity",
        "jump",
        "host_key_policy",
        "known_hosts",
        "max_startups",
        "connect_timeout",
    ],
    "hosts": ["web", "db"],
    "relay": ["url", "room", "token_env"],
}

toml_values = st.one_of(
    st.integers(min_value=-(10**6), max_value=10**6).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.booleans().map(lambda b: "true" if b else "false"),
    st.text(max_size=20).map(
        lambda s: '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    ),
    st.lists(
        st.text(max_size=8).map(lambda s: '"' + re.sub(r'["\\\n\r\x00-\x1f]', "", s) + '"'),
        max_size=3,
    ).map(lambda xs: "[" + ", ".join(xs) + "]"),
    st.lists(st.integers(-5, 500).map(str), max_size=3).map(lambda xs: "[" + ", ".join(xs) + "]"),
    st.just("{ a = 1 }"),
    st.just("[]"),
    st.just('"150%"'),
    st.just('"-3"'),
    st.just('"h:0"'),
)


def replace_key(text: str, section: str, key: str, value: str) -> str:
    out, current, done = [], None, False
    for line in text.splitlines():
        m = re.match(r"^\[(\w+)\]", line)
        if m:
            current = m.group(1)
        if not done and current == section and re.match(rf"^{key}\s*=", line):
            line = f"{key} = {value}"
            done = True
        out.append(line)
    if not done:
        out.append(f"\n[{section}]\n{key} = {value}" if section not in text else "")
        text2 = "\n".join(out)
        return text2.replace(f"[{section}]", f"[{section}]\n{key} = {value}", 1)
    return "\n".join(out)


mutation = st.one_of(
    st.tuples(st.just("set"), st.sampled_from(SECTIONS), st.integers(0, 20), toml_values),
    st.tuples(st.just("drop"), st.sampled_from(SECTIONS), st.integers(0, 20), st.just("")),
    st.tuples(st.just("junk"), st.sampled_from(SECTIONS), st.integers(0, 20), st.text(max_size=30)),
    st.tuples(
        st.just("unknown"),
        st.sampled_from(SECTIONS),
        st.integers(0, 20),
        st.from_regex(r"[a-z_]{1,12}", fullmatch=True),
    ),
)


def apply(text: str, m: tuple) -> str:
    kind, section, i, value = m
    keys = KEYS[section]
    key = keys[i % len(keys)]
    if kind == "set":
        return replace_key(text, section, key, value)
    if kind == "drop":
        return "\n".join(line for line in text.splitlines() if not re.match(rf"^{key}\s*=", line))
    if kind == "junk":
        lines = text.splitlines()
        lines.insert(i % len(lines), value)
        return "\n".join(lines)
    return text.replace(f"[{section}]", f"[{section}]\n{value} = 1", 1)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(mutation, min_size=1, max_size=3))
def test_malformed_configs_give_clear_errors(mutations) -> None:
    text = GOOD
    for m in mutations:
        text = apply(text, m)
    try:
        parse_config(text, "fuzz/shipdeck.toml")
    except ConfigError as exc:
        msg = str(exc)
        assert msg.startswith("fuzz/shipdeck.toml"), msg
        # names where: a line, a [section] key, or the TOML position
        assert re.search(r"shipdeck\.toml(:\d+)?: (\[\w+\]|invalid TOML)", msg), msg
        assert "Traceback" not in msg
