"""``python -m tui.cli``: the ``shipdeck`` command."""

from tui.cli import run

if __name__ == "__main__":
    run()
