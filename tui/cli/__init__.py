"""The ``shipdeck`` command: the parser, :func:`main` and the console script :func:`run`.

One module per command group, each registering its subcommands with
``add_parsers(sub)``:

- :mod:`tui.cli.deploy`   ``deploy`` (full screen, headless, JSON, dry run), ``rollback``
- :mod:`tui.cli.history`  ``history``, ``show``
- :mod:`tui.cli.download` ``download``;  :mod:`tui.cli.logs` ``logs``
- :mod:`tui.cli.status`   ``status``;  :mod:`tui.cli.exec` ``exec``
- :mod:`tui.cli.maintenance` ``maintenance on|off``
- :mod:`tui.cli.relay`    ``relay``, ``say``, ``tail``
- :mod:`tui.cli.demo`     ``demo``;  :mod:`tui.cli.watch` ``watch``

and the helpers they share: :mod:`tui.cli.common` (errors, ``-c FILE``, exit codes),
:mod:`tui.cli.prompt` (questions on the terminal), :mod:`tui.cli.operator` (who the
operator is, asking the relay), :mod:`tui.cli.room` (the config's relay room), :mod:`tui.cli.aliases` (the config's
``[aliases]``, expanded before parsing and listed in ``--help``).

Building the parser imports only the standard library; every command imports what it
needs when it runs. ``relay``, ``say``, ``tail``, ``history``, ``show``, ``download``
and ``deploy --headless`` never import textual.
"""

from __future__ import annotations

import argparse
import os
import sys

from engine.errors import ExitCode
from tui.cli import demo, deploy, download, history, logs, maintenance, relay, status, watch
from tui.cli import exec as fleet_exec

__all__ = ["build_parser", "main", "run"]

#: the command groups, in the order ``shipdeck --help`` lists them
GROUPS = (deploy, status, fleet_exec, logs, maintenance, history, download, relay, demo, watch)


def build_parser() -> argparse.ArgumentParser:
    """The ``shipdeck`` parser with every subcommand (``args.func`` runs it)."""
    parser = argparse.ArgumentParser(
        prog="shipdeck",
        description="Release code to a fleet over SSH, from the terminal.",
        formatter_class=argparse.RawDescriptionHelpFormatter,  # the aliases' epilog as it is
    )
    parser.add_argument("--version", action="version", version="shipdeck 0.1.0")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for group in GROUPS:
        group.add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``) and run the command; its exit code."""
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    from tui.cli import aliases

    builtins = aliases.commands(parser)
    try:
        argv = aliases.expand(argv, builtins)
    except aliases.AliasError as exc:
        sys.stderr.write(f"shipdeck: {exc}\n")
        return ExitCode.USAGE
    if not argv or argv[0] in ("-h", "--help"):
        parser.epilog = aliases.help_text(argv, builtins) or None
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return ExitCode.USAGE
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return ExitCode.STOPPED
    except BrokenPipeError:  # `shipdeck history | head`: the reader went away
        from tui.pipes import stdout_gone

        stdout_gone()
        return ExitCode.PIPE


def run() -> None:
    """The ``shipdeck`` command: :func:`main`, then exit without tearing the interpreter
    down (every file is closed and every subprocess waited for by then; module teardown
    of asyncssh, cryptography and GitPython would add tens of milliseconds to every
    command)."""
    code = main()
    if os.environ.get("SHIPDECK_SLOW_EXIT"):
        sys.exit(code)
    logging = sys.modules.get("logging")  # loaded by the commands that log
    if logging is not None:
        logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            code = ExitCode.PIPE  # a closed pipe: nothing more can be said
    os._exit(code)
