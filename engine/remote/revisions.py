"""A host's releases and its ``revisions.log``: the script that reads them and the
parsers of what it prints.

Every run appends one line per host to ``<path>/revisions.log``
(:func:`revision_line`): ``<iso> <kind> release=<id> sha=<sha> operator=<who>
outcome=<outcome> deploy=<deploy id>``, then ``env=<name>`` when the config has
environments and ``freeze_override=<reason, percent-encoded>`` when a freeze window was overridden (one
word, so a reason can never read as another field). :func:`releases_script` prints
``release=<id>`` per release directory and ``revision=<line>`` per log line;
:func:`parse_releases` reads them back, :func:`previous_release` and
:func:`sha_of_release` answer what a rollback needs. (:mod:`engine.releases` merges
many hosts' answers for the rollback picker.)
"""

from __future__ import annotations

import re
from urllib.parse import quote

from engine.remote.shell import iso, resolve_path_sh


def releases_script(path: str) -> str:
    """Print the deploy path, ``current=``, ``release=<id>`` per release directory
    (unfinished ``.tmp`` ones left out) and ``revision=<line>`` per line of the last
    500 of ``revisions.log``. Changes nothing."""
    return "\n".join(
        [
            resolve_path_sh(path),
            "printf 'path=%s\\n' \"$P\"",
            'c=$(readlink "$P/current" 2>/dev/null || true); echo "current=${c##*/}"',
            'ls -1 "$P/releases" 2>/dev/null | grep -v "\\.tmp$" | sed "s/^/release=/"',
            'tail -n 500 "$P/revisions.log" 2>/dev/null | sed "s/^/revision=/"',
        ]
    )


def revision_line(
    release_id: str,
    sha: str,
    operator: str,
    outcome: str,
    deploy_id: str,
    kind: str = "deploy",
    *,
    env: str | None = None,
    freeze_override: str | None = None,
) -> str:
    """The ``revisions.log`` line of one run on one host (now, UTC). ``env``: the
    config's environment; ``freeze_override``: the reason a freeze window was
    overridden (percent-encoded: ``no%20Friday%20rush``)."""
    line = f"{iso()} {kind} release={release_id} sha={sha} operator={operator} outcome={outcome} deploy={deploy_id}"
    if env:
        line += f" env={env}"
    if freeze_override is not None:
        line += f" freeze_override={quote(' '.join(freeze_override.split()), safe='')}"
    return line


def parse_releases(stdout: str) -> tuple[list[str], list[str]]:
    """(release ids, revisions.log lines) from :func:`releases_script`'s output, in
    the order printed (release ids sort oldest first; log lines are oldest first)."""
    releases: list[str] = []
    revisions: list[str] = []
    for line in stdout.splitlines():
        if line.startswith("release="):
            releases.append(line[len("release=") :])
        elif line.startswith("revision="):
            revisions.append(line[len("revision=") :])
    return releases, revisions


_REVISION = re.compile(r"^\S+ (?P<kind>\w+) release=(?P<release>\S+) .*\boutcome=(?P<outcome>\S+)")


def sha_of_release(release: str, revisions: list[str]) -> str:
    """The commit a release was built from, from the newest revisions.log line naming it."""
    for line in reversed(revisions):
        fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
        if fields.get("release") == release and fields.get("sha"):
            return fields["sha"]
    return ""


def previous_release(current: str, releases: list[str], revisions: list[str]) -> str:
    """The release deployed successfully just before ``current`` that is still on the
    host: by the order of successful deploys in revisions.log (not by names or times,
    which a same-second redeploy or a file written into a release can disturb);
    without a usable log, the newest release whose name sorts before ``current``."""
    deployed: list[str] = []
    for line in revisions:
        m = _REVISION.match(line)
        if m and m["kind"] == "deploy" and m["outcome"] == "ok" and m["release"] not in deployed:
            deployed.append(m["release"])
    present = set(releases)
    if current in deployed:
        for release in reversed(deployed[: deployed.index(current)]):
            if release in present:
                return release
        return ""
    older = sorted(r for r in releases if current and r < current)
    return older[-1] if older else ""
