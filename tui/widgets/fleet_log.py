"""The merged fleet log: every host's lines in arrival order, tagged and coloured
per host; filter, search, marks, timestamps; follows the tail unless scrolled up.

:class:`FleetLog` is a line-based widget (Textual's Line API, like ``Log``): only
the lines on screen are rendered, from a bounded ring (:class:`tui.fleetlines.FleetLines`);
appending a flush's lines is a ring append and one refresh, whatever the fleet's size.
:class:`FleetLogPane` adds a title (what is filtered, searched, whether it follows)
and a one-line prompt for the filter and the search.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable, Iterable

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.cache import LRUCache
from textual.containers import Vertical
from textual.events import Key
from textual.geometry import Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip
from textual.widgets import Input, Static

from tui.fleetlines import MARK, NOTE, FleetLine, FleetLines, StatusOf

#: host colours (8-colour terminals have them; the host's name is there too)
HOST_COLOURS = (
    "cyan",
    "green",
    "magenta",
    "yellow",
    "blue",
    "bright_cyan",
    "bright_green",
    "bright_magenta",
    "bright_yellow",
    "bright_blue",
    "red",
    "bright_red",
)
HOST_WIDTH = 12  # a host's tag is padded (or cut) to this many cells
STEP_WIDTH = 9
_CONTROL = {c: "?" for c in (*range(0, 9), *range(10, 32), 127, 0x9B)}


def host_colour(host: str) -> str:
    """The colour of ``host``'s tag: the same for a host in every run."""
    return HOST_COLOURS[zlib.crc32(host.encode()) % len(HOST_COLOURS)]


def clock_text(at: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(at))


def line_text(
    line: FleetLine,
    *,
    stamps: bool,
    search: str = "",
    current: bool = False,
    host_width: int = HOST_WIDTH,
    step_width: int = STEP_WIDTH,
) -> Text:
    """One merged line as drawn: ``[time] host step ! text`` (a mark: a divider); the
    host and step columns are as wide as the widest seen, up to their maximum."""
    text = Text(no_wrap=True, end="")
    if line.stream == MARK:
        label = f" mark {clock_text(line.at)} {line.text} ".replace("  ", " ")
        text.append(f"──{label}" + "─" * 200, style="bold reverse")
        return text
    if stamps:
        text.append(clock_text(line.at) + " ", style="dim")
    if host_width:
        host = line.host if len(line.host) <= host_width else line.host[: host_width - 1] + "…"
        text.append(f"{host:<{host_width}} ", style=f"bold {host_colour(line.host)}")
    if step_width:
        text.append(f"{line.step[:step_width]:<{step_width}} ", style="dim")
    if line.stream == "stderr":
        text.append("! ", style="bold red")
    elif line.stream == NOTE:
        text.append("~ ", style="bold yellow")
    else:
        text.append("  ")
    start = len(text)
    body = line.text.translate(_CONTROL)
    text.append(body, style="yellow" if line.stream == NOTE else "")
    if search:
        low = body.lower()
        at = low.find(search)
        style = "bold black on bright_yellow" if current else "black on yellow"
        while at >= 0:
            text.stylize(style, start + at, start + at + len(search))
            at = low.find(search, at + len(search))
    return text


class FleetLog(ScrollView, can_focus=True):
    """The merged lines, drawn from a :class:`FleetLines` (see the module docstring)."""

    BINDINGS = [
        Binding("slash", "prompt('filter')", "Filter", key_display="/", id="fleet_filter",
                tooltip="show only some hosts: a name glob, a status (failed), or both"),
        Binding("s", "prompt('search')", "Search", id="fleet_search",
                tooltip="search the lines (highlighted); n next, N previous"),
        Binding("n", "find(True)", "Next", id="fleet_next", tooltip="next match"),
        Binding("N", "find(False)", "Previous", id="fleet_previous", tooltip="previous match"),
        Binding("m", "mark", "Mark", id="fleet_mark", tooltip="insert a timestamped divider"),
        Binding("t", "stamps", "Times", id="fleet_stamps", tooltip="timestamps on or off"),
        Binding("end,G", "follow", "Follow", key_display="end", id="fleet_follow",
                tooltip="back to the tail, following it"),
        Binding("home", "scroll_home", "Top", show=False),
        Binding("up,k", "scroll_up", "Up", show=False),
        Binding("down,j", "scroll_down", "Down", show=False),
        Binding("pageup", "page_up", "Page up", show=False),
        Binding("pagedown", "page_down", "Page down", show=False),
    ]  # fmt: skip

    def __init__(self, lines: FleetLines, clock: Callable[[], float] = time.time, **kwargs) -> None:
        super().__init__(**kwargs)
        self.lines = lines
        self.clock = clock
        self.stamps = False
        self.follow = True
        #: the seq of the line the last find landed on (drawn brighter)
        self.current: int | None = None
        self._cache: LRUCache[tuple[int, bool, str, bool], Strip] = LRUCache(1024)
        #: the host and step columns' widths: the widest seen, up to their maximum
        self.host_width = 0
        self.step_width = 0

    # -- content ------------------------------------------------------------------

    def append(self, items: Iterable[tuple[str, str, str, str, float]]) -> None:
        """Append lines ``(host, step, stream, text, at)`` (one flush's worth)."""
        items = list(items)
        if not self.lines.extend(items):
            return
        host_width = min(HOST_WIDTH, max(self.host_width, *(len(i[0]) for i in items)))
        step_width = min(STEP_WIDTH, max(self.step_width, *(len(i[1]) for i in items)))
        if (host_width, step_width) != (self.host_width, self.step_width):
            self.host_width, self.step_width = host_width, step_width
            self._cache.clear()
        if self.is_mounted:  # before it is, on_mount lays out what is there
            self._resized(self.lines.dropped_shown)

    def on_mount(self) -> None:
        self._resized()

    def _resized(self, dropped: int = 0) -> None:
        """The view's length changed: keep following, or keep the place when not."""
        follow = self.follow
        self.virtual_size = Size(self.size.width, len(self.lines.shown))
        if follow:
            # forced: the scrollbar the new lines need is not laid out yet
            self.scroll_end(animate=False, immediate=True, x_axis=False, force=True)
        elif dropped:
            self.scroll_to(
                y=max(0, self.scroll_y - dropped), animate=False, immediate=True, force=True
            )
        self.refresh()

    def reset(self) -> None:
        """The view changed wholesale (a filter): redraw, at the tail if following."""
        self._cache.clear()
        self._resized()

    def mark(self, note: str = "") -> None:
        self.lines.mark(self.clock(), note)
        self._resized()

    # -- drawing ------------------------------------------------------------------

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._cache.clear()

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        index = scroll_y + y
        width = self.size.width
        style = self.rich_style
        shown = self.lines.shown
        if index >= len(shown):
            return Strip.blank(width, style)
        line = shown[index]
        search = self.lines.search if self.lines.matches(line) else ""
        current = line.seq == self.current
        key = (line.seq, self.stamps, search, current)
        strip = self._cache.get(key)
        if strip is None:
            text = line_text(
                line,
                stamps=self.stamps,
                search=search,
                current=current,
                host_width=self.host_width,
                step_width=self.step_width,
            )
            segments = list(text.render(self.app.console))
            strip = Strip(segments, text.cell_len)
            self._cache[key] = strip
        return strip.crop_extend(scroll_x, scroll_x + width, style).apply_offsets(scroll_x, index)

    # -- keys ---------------------------------------------------------------------

    def watch_scroll_y(self, old: float, new: float) -> None:
        super().watch_scroll_y(old, new)
        # scrolled up by hand: stop following; back at the end: follow again
        follow = new >= self.max_scroll_y
        if follow != self.follow:
            self.follow = follow
            self.post_message(FleetLog.Moved())

    def action_follow(self) -> None:
        self.follow = True
        self.scroll_end(animate=False, immediate=True, x_axis=False, force=True)
        self.post_message(FleetLog.Moved())

    def action_mark(self) -> None:
        self.mark()

    def action_stamps(self) -> None:
        self.stamps = not self.stamps
        self._cache.clear()
        self.refresh()
        self.post_message(FleetLog.Moved())

    def action_find(self, forward: bool) -> None:
        lines = self.lines
        if not lines.search:
            self.notify("no search yet: press s", timeout=3)
            return
        start = self._current_index()
        if start is None:
            start = self.scroll_y - 1 if forward else self.scroll_y + self.size.height
        found = lines.find(int(start), forward)
        if found is None:
            self.notify(f"{lines.search!r}: not found", timeout=3)
            return
        self.show_index(found)

    def show_index(self, index: int) -> None:
        """Scroll ``shown[index]`` into view (about a third down) and make it current."""
        self.current = self.lines.shown[index].seq
        top = max(0, index - self.size.height // 3)
        self.follow = False
        self.scroll_to(y=top, animate=False, immediate=True, force=True)
        self.follow = False
        self._cache.clear()
        self.refresh()
        self.post_message(FleetLog.Moved())

    def _current_index(self) -> int | None:
        if self.current is None:
            return None
        shown = self.lines.shown
        if not shown:
            return None
        first = shown[0].seq
        if self.current < first:
            return None
        # shown is in seq order: bisect by seq
        lo, hi = 0, len(shown) - 1
        while lo <= hi:
            mid = (lo + hi) // 2
            seq = shown[mid].seq
            if seq == self.current:
                return mid
            if seq < self.current:
                lo = mid + 1
            else:
                hi = mid - 1
        return None

    def action_prompt(self, what: str) -> None:
        self.post_message(FleetLog.Prompt(what))

    class Prompt(Message):
        """The operator asked for the filter or search prompt."""

        def __init__(self, what: str) -> None:
            super().__init__()
            self.what = what

    class Moved(Message):
        """Following, the current match or timestamps changed (the title says so)."""

        def can_replace(self, message) -> bool:
            return isinstance(message, FleetLog.Moved)


class FleetLogPane(Vertical):
    """Title, the merged lines and a prompt (filter or search) under them."""

    DEFAULT_CSS = """
    FleetLogPane > #fleet-title { height: 1; padding: 0 1; }
    FleetLogPane > FleetLog { height: 1fr; padding: 0 0 0 1; overflow-x: hidden; }
    FleetLogPane > Input { height: 1; padding: 0 1; display: none; }
    FleetLogPane.-prompting > Input { display: block; }
    """

    def __init__(
        self,
        lines: FleetLines,
        *,
        clock: Callable[[], float] = time.time,
        status_of: Callable[[], StatusOf] | None = None,
        cursor_blink: bool = True,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.lines = lines
        self.clock = clock
        #: makes a host -> status lookup for the current run (status filters)
        self.status_of = status_of
        self.cursor_blink = cursor_blink
        self.prompting: str | None = None
        self.source = "deploy"
        #: hosts whose tail is disconnected now (named in the title)
        self.down: tuple[str, ...] = ()
        self._title = ""
        self._titled = 0.0
        #: held, not queried: lines may arrive before the pane's children are mounted
        self._log = FleetLog(self.lines, clock=clock, id="fleet-log")
        self._title_w = Static("fleet log", id="fleet-title")

    def compose(self) -> ComposeResult:
        yield self._title_w
        yield self._log
        prompt = Input(id="fleet-prompt", compact=True)
        prompt.cursor_blink = self.cursor_blink
        yield prompt

    @property
    def log(self) -> FleetLog:
        return self._log

    def on_mount(self) -> None:
        self.update_title()

    def append(self, items: Iterable[tuple[str, str, str, str, float]]) -> None:
        self.log.append(items)
        self.update_title(count_only=True)

    def set_down(self, hosts: set[str]) -> None:
        down = tuple(sorted(hosts))
        if down != self.down:
            self.down = down
            self.update_title()

    def refilter(self) -> None:
        """Once a second: hosts' statuses moved on (a ``failed`` filter grows)."""
        if self.lines.filter.statuses:
            if self.status_of is not None:
                self.lines.status_of = self.status_of()
            if self.lines.refilter():
                self.log.reset()
                self.update_title()

    def set_filter(self, text: str) -> None:
        self.lines.set_filter(text, self.status_of() if self.status_of else None)
        self.log.follow = True
        self.log.reset()
        self.update_title()

    def set_search(self, text: str) -> None:
        self.lines.search = text.strip().lower()
        log = self.log
        log.current = None
        log._cache.clear()
        if self.lines.search:
            found = self.lines.find(len(self.lines.shown), forward=False)  # the newest
            if found is None:
                self.notify(f"{text.strip()!r}: not found", timeout=3)
            else:
                log.show_index(found)
        log.refresh()
        self.update_title()

    def update_title(self, *, count_only: bool = False) -> None:
        """``fleet · <source> · filter … · /search/ n · following|paused · N lines``
        (what narrows the view first: the title is cut at the pane's width). When only
        the line count moved (``count_only``: a flush), at most once a second."""
        now = time.monotonic()
        if count_only and now - self._titled < 1.0:
            return
        lines, log = self.lines, self.log
        parts = [f"fleet · {self.source}"]
        if self.down:
            more = f" +{len(self.down) - 3}" if len(self.down) > 3 else ""
            parts.append(f"disconnected: {', '.join(self.down[:3])}{more}")
        if lines.filtered:
            parts.append(f"filter {lines.filter.text}")
        if lines.search:
            parts.append(f"/{lines.search}/ {lines.count_matches()}")
        parts.append("following" if log.follow else "paused (end follows)")
        if log.stamps:
            parts.append("times")
        parts.append(f"{len(lines.shown)} lines")
        title = " · ".join(parts)
        self._titled = now
        if title != self._title:
            self._title = title
            # one line, always: no layout pass (a flush must not lay out the screen)
            self._title_w.update(Text(title, style="bold"), layout=False)

    @on(FleetLog.Moved)
    def _moved(self) -> None:
        self.update_title()

    @on(FleetLog.Prompt)
    def _prompt(self, message: FleetLog.Prompt) -> None:
        self.prompting = message.what
        prompt = self.query_one("#fleet-prompt", Input)
        if message.what == "filter":
            prompt.placeholder = "host glob and/or status (failed, running …); empty: all"
            prompt.value = self.lines.filter.text
        else:
            prompt.placeholder = "search text; Enter finds, then n / N"
            prompt.value = self.lines.search
        self.add_class("-prompting")
        prompt.focus()

    @on(Input.Submitted, "#fleet-prompt")
    def _submitted(self, event: Input.Submitted) -> None:
        event.stop()
        what = self.prompting
        self._close_prompt()
        if what == "filter":
            self.set_filter(event.value)
        elif what == "search":
            self.set_search(event.value)

    def on_key(self, event: Key) -> None:
        if event.key == "escape" and self.prompting is not None:
            event.stop()
            event.prevent_default()
            self._close_prompt()

    def _close_prompt(self) -> None:
        self.prompting = None
        self.remove_class("-prompting")
        self.log.focus()
