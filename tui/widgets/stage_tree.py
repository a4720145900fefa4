"""The stage tree: built once from the plan, relabelled from the model in batches.

Only dirty nodes that are on screen are relabelled on a flush (the visible lines are
walked with ``get_node_at_line``); off-screen dirty nodes stay dirty and catch up when
they scroll into view. Beyond ``LAZY_HOSTS`` hosts, a host's step nodes are created
when it is first expanded.
"""

from __future__ import annotations

from rich.text import Text
from textual import on
from textual.binding import Binding
from textual.widgets import Tree
from textual.widgets.tree import TreeNode

from engine.events import RUNNING, WAITING
from engine.plan import Node
from tui.model import DeckModel

LAZY_HOSTS = 200


def in_tree(node: Node, host_filter: set[str] | None, *, lazy: bool) -> bool:
    """Whether a plan node gets a tree node on a build: a host the filter keeps; a
    step unless steps are made lazily (when its host is first opened)."""
    if node.kind == "host":
        return host_filter is None or node.key in host_filter
    if node.kind == "step":
        return not lazy
    return True


def opens_on_build(node: Node, expanded: set[str]) -> bool:
    """Whether a node is open after a build: every wave and the release stage, and
    whatever was open before it."""
    return (
        node.key in expanded
        or node.kind == "wave"
        or (node.kind == "stage" and node.key == "release")
    )


class StageTree(Tree[str]):
    """Tree of fetch/build/package/release → waves → hosts → steps."""

    BINDINGS = [
        Binding("j", "cursor_down", "Down", show=False, id="tree.down"),
        Binding("k", "cursor_up", "Up", show=False, id="tree.up"),
        Binding("right,l", "open_node", "Open", show=False, id="tree.open"),
        Binding("left", "close_node", "Close", show=False, id="tree.close"),
    ]

    DEFAULT_CSS = """
    StageTree { scrollbar-size-vertical: 1; }
    """

    def __init__(self, model: DeckModel, **kwargs) -> None:
        super().__init__(Text("deploy"), **kwargs)
        self.model = model
        self.show_root = False
        self.guide_depth = 3
        self.nodes_by_key: dict[str, TreeNode[str]] = {}
        self.host_filter: set[str] | None = None
        self.lazy = False

    # -- building -----------------------------------------------------------------

    def rebuild(self) -> None:
        """(Re)build every tree node from the model's plan (plan or filter changed)."""
        model = self.model
        plan = model.plan
        cursor_key = self.cursor_node.data if self.cursor_node is not None else None
        expanded = {k for k, n in self.nodes_by_key.items() if n.is_expanded}
        self.clear()
        self.nodes_by_key = by_key = {}
        self.lazy = len(plan.hosts()) > LAZY_HOSTS
        label_for = model.label_for
        for node in plan:
            if not in_tree(node, self.host_filter, lazy=self.lazy):
                continue
            parent = by_key.get(node.parent) if node.parent else self.root
            if parent is None:  # under a host the filter hides
                continue
            expand = opens_on_build(node, expanded)
            has_kids = bool(plan.children.get(node.key))
            tnode = self._quick_add(parent, label_for(node.key), node.key, expand, has_kids)
            by_key[node.key] = tnode
            if node.kind == "host" and self.lazy and expand:
                self._add_steps(tnode)
        self._invalidate()
        model.dirty.difference_update(by_key)
        self._restore_cursor(cursor_key)

    def _restore_cursor(self, key: str | None) -> None:
        """Back on the node the cursor was on, if it is still in the tree."""
        if key in self.nodes_by_key:
            self.move_cursor(self.nodes_by_key[key])
        elif self.cursor_line < 0 or self.cursor_line >= self.last_line:
            self.cursor_line = 0

    def _quick_add(
        self, parent: TreeNode[str], label: Text, key: str, expand: bool, allow_expand: bool
    ) -> TreeNode[str]:
        """``TreeNode.add`` without invalidating the whole tree per node (one
        ``_invalidate`` after a bulk build instead of one per node: 10x faster)."""
        try:
            node = self._add_node(parent, label, key)
            node._expanded = expand
            node._allow_expand = allow_expand
            parent._children.append(node)
            parent._updates += 1
            return node
        except AttributeError:  # pragma: no cover - Textual internals changed
            return parent.add(label, data=key, expand=expand, allow_expand=allow_expand)

    def _add_steps(self, tnode: TreeNode[str]) -> None:
        if tnode.children:
            return
        plan = self.model.plan
        for key in plan.children.get(tnode.data, ()):
            self.nodes_by_key[key] = self._quick_add(
                tnode, self.model.label_for(key), key, False, False
            )
        self.model.dirty.difference_update(plan.children.get(tnode.data, ()))
        self._invalidate()

    @on(Tree.NodeExpanded)
    def _expanded(self, event: Tree.NodeExpanded[str]) -> None:
        node = event.node
        if self.lazy and node.data and self.model.plan.nodes[node.data].kind == "host":
            self._add_steps(node)
        # children that changed while collapsed are still dirty: label them now
        self._relabel_children(node)

    # -- keys ------------------------------------------------------------------------

    def action_open_node(self) -> None:
        """→ / l: open the node under the cursor; on an open node, go to its first child."""
        node = self.cursor_node
        if node is None or not node.allow_expand:
            return
        if not node.is_expanded:
            node.expand()
        elif node.children:
            self.move_cursor(node.children[0])

    def action_close_node(self) -> None:
        """←: close the node under the cursor; on a closed node or a step, go to its
        parent (and close a host when leaving one of its steps)."""
        node = self.cursor_node
        if node is None:
            return
        if node.is_expanded and node.children:
            node.collapse()
            return
        parent = node.parent
        if parent is None or parent is self.root:
            return
        if parent.data and self.model.plan.nodes[parent.data].kind == "host":
            parent.collapse()
        self.move_cursor(parent)

    # -- relabelling ----------------------------------------------------------------

    def relabel_visible(self, *, running_too: bool = False) -> int:
        """Relabel dirty (and, with ``running_too``, running) nodes on screen."""
        model = self.model
        dirty = model.dirty
        plan_nodes = model.plan.nodes
        top = self.scroll_offset.y
        height = self.size.height or 40
        count = 0
        for line in range(top, top + height):
            tnode = self.get_node_at_line(line)
            if tnode is None:
                break
            key = tnode.data
            if key is None:
                continue
            if key in dirty or (running_too and plan_nodes[key].status in (RUNNING, WAITING)):
                tnode.set_label(model.label_for(key))
                dirty.discard(key)
                count += 1
        return count

    def watch_scroll_y(self, old: float, new: float) -> None:
        super().watch_scroll_y(old, new)
        if self.model.dirty:
            self.call_later(self.relabel_visible)

    def select_key(self, key: str, *, expand_to: bool = True) -> bool:
        """Move the cursor to a node, expanding its ancestors."""
        if expand_to:
            parts = key.split("/")
            for i in range(1, len(parts)):
                anc = self.nodes_by_key.get("/".join(parts[:i]))
                if anc is None:
                    return False
                if not anc.is_expanded:
                    anc.expand()
                    if self.lazy and self.model.plan.nodes[anc.data].kind == "host":
                        self._add_steps(anc)
                    self._relabel_children(anc)
        tnode = self.nodes_by_key.get(key)
        if tnode is None:
            return False
        self._tree_lines  # noqa: B018 - rebuild line numbers after expanding
        self.move_cursor(tnode)
        return True

    def _relabel_children(self, tnode: TreeNode[str]) -> None:
        """Label a just-expanded node's children that changed while it was collapsed
        (a host has about ten steps: cheap, and right before they are drawn)."""
        dirty = self.model.dirty
        for child in tnode.children:
            key = child.data
            if key is not None and key in dirty:
                child.set_label(self.model.label_for(key))
                dirty.discard(key)

    @property
    def selected_key(self) -> str | None:
        node = self.cursor_node
        return node.data if node is not None else None
