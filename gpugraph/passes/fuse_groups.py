"""Which elementwise ops fuse: the grouping half of the fusion pass (``fuse.py`` builds the
fused nodes from the groups).

Every eligible op starts as a group of its own; groups joined by a producer -> consumer edge
merge when the union stays legal (two sweeps in graph order), then sibling groups that read the
same outer value merge under the same rules. A union is legal when it is convex (no path leaves
it and re-enters it) and every value it hands to the rest of the graph has its full iteration
shape. See docs/fusion.md.

Cost. Each group keeps what the checks need and updates it on a merge: its iteration shape,
last graph position, outputs (member values used outside it or returned) with a count of outside
uses per value, and, once a check needs it, the set of its members' ancestors as a bitset. A
merge attempt then costs the two groups' outputs and their users, not the groups' sizes.
Convexity needs a reachability query only when one group's outside consumers come before the
other group's last member; it is answered from ancestor bitsets (Python ints, one bit per node),
computed lazily, only for the nodes whose ancestry some query asks about. A chain or a wide
elementwise graph never asks; a gradient graph asks for a part of the graph, at n / 8 bytes a
node at most.
"""

from __future__ import annotations

from ..codegen import is_inline_constant, unsupported_reason
from ..ir import Graph, Node, Value
from ..ops.registry import get_op


def _broadcast(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
    """``np.broadcast_shapes(a, b)`` for two shapes, without NumPy's per-call overhead."""
    if a == b:
        return a
    if len(a) < len(b):
        a, b = b, a
    b = (1,) * (len(a) - len(b)) + b
    out = []
    for x, y in zip(a, b):
        if x != y and x != 1 and y != 1:
            raise ValueError(f"shapes {a} and {b} do not broadcast")
        out.append(y if x == 1 else x)
    return tuple(out)


class Ancestors:
    """Strict ancestors of nodes as bitsets over graph positions, computed on demand."""

    def __init__(self, index: dict[Node, int]) -> None:
        self.index = index
        self.memo: dict[Node, int] = {}

    def of(self, node: Node) -> int:
        memo, index = self.memo, self.index
        if node in memo:
            return memo[node]
        stack = [node]
        while stack:  # iterative post-order: chains are deeper than Python's recursion limit
            n = stack[-1]
            if n in memo:  # pushed by two consumers: done on its first turn
                stack.pop()
                continue
            todo = [v.node for v in n.inputs if v.node is not None and v.node not in memo]
            if todo:
                stack.extend(todo)
                continue
            stack.pop()
            bits = 0
            for v in n.inputs:
                p = v.node
                if p is not None:
                    bits |= memo[p] | (1 << index[p])
            memo[n] = bits
        return memo[node]


class Groups:
    """Union-find over the eligible nodes with per-group state (see the module docstring)."""

    def __init__(self, graph: Graph, members: list[Node]) -> None:
        self.index = {n: i for i, n in enumerate(graph.nodes)}
        self.users = graph.users()
        self.graph_outputs = set(graph.outputs)
        self.ancestors = Ancestors(self.index)
        self.parent: dict[Node, Node] = {n: n for n in members}
        self.sets: dict[Node, set[Node]] = {n: {n} for n in members}
        self.shapes: dict[Node, tuple[int, ...]] = {n: n.output.shape for n in members}
        self.last: dict[Node, int] = {n: self.index[n] for n in members}
        # uses of a member value by nodes outside its group (with multiplicity, as in users)
        self.outside = {v: len(self.users[v]) for n in members for v in n.outputs}
        self.outs: dict[Node, set[Value]] = {
            n: {v for v in n.outputs if self.outside[v] or v in self.graph_outputs} for n in members
        }
        self.anc: dict[Node, int] = {}  # a group's ancestor bitset, once a check needed it
        # refusals of unchanged pairs: (root, version, root, version) -> reason
        self.version: dict[Node, int] = dict.fromkeys(members, 0)
        self.refused: dict[tuple, str] = {}

    def find(self, n: Node) -> Node:
        while self.parent[n] is not n:
            self.parent[n] = self.parent[self.parent[n]]
            n = self.parent[n]
        return n

    def root(self, n: Node) -> Node | None:
        """The group of ``n``, or None for a node that is in no group (not eligible)."""
        return self.find(n) if n in self.parent else None

    def shape(self, root: Node) -> tuple[int, ...]:
        """The group's iteration shape (the broadcast of its members' shapes)."""
        return self.shapes[root]

    def _ancestors(self, r: Node) -> int:
        if r not in self.anc:
            bits = 0
            for n in self.sets[r]:
                bits |= self.ancestors.of(n)
            self.anc[r] = bits
        return self.anc[r]

    def _check(self, ra: Node, rb: Node):
        """(why the union may not be one kernel or None, its shape, its outputs, the uses that
        the merge makes internal).

        Both groups are legal on their own. So a path that leaves the union and re-enters it
        goes from one group, through an outside consumer X of that group, into the other group
        (back into the same group would make that group illegal already): the union is convex
        unless such an X is an ancestor of the other group. And every output of a group has
        that group's shape, so only outputs of a group whose shape the union widens, and that
        stay outputs, can be too small."""
        internal: dict[Value, int] = {}
        starts: dict[Node, list[Node]] = {ra: [], rb: []}
        for r, other in ((ra, rb), (rb, ra)):
            for v in self.outs[r]:
                for u in self.users[v]:
                    g = self.root(u)
                    if g is other:
                        internal[v] = internal.get(v, 0) + 1
                    elif g is not r and self.index[u] < self.last[other]:
                        starts[r].append(u)
        for r, other in ((ra, rb), (rb, ra)):
            if starts[r]:
                anc = self._ancestors(other)
                for x in starts[r]:
                    if anc >> self.index[x] & 1:
                        return f"a path leaves the group through {x.op} and re-enters it", None
        shape = _broadcast(self.shapes[ra], self.shapes[rb])
        outs = {
            v
            for r in (ra, rb)
            for v in self.outs[r]
            if v in self.graph_outputs or self.outside[v] > internal.get(v, 0)
        }
        bad = [v for v in outs if v.shape != shape]
        if bad:
            v = min(bad, key=lambda v: (self.index[v.node], v.index))
            return (
                f"value {v.type} from {v.node.op} is used outside the group but is "
                f"smaller than the group's shape {tuple(shape)}"
            ), None
        return None, (shape, outs, internal)

    def try_merge(self, a: Node, b: Node) -> str | None:
        """Merge the groups of ``a`` and ``b`` (``a``'s root stays the root) unless the union
        would be illegal; returns why not, or None."""
        ra, rb = self.find(a), self.find(b)
        if ra is rb:
            return None
        key = (ra, self.version[ra], rb, self.version[rb])
        if key in self.refused:
            return self.refused[key]
        why, state = self._check(ra, rb)
        if why is not None:
            self.refused[key] = why
            return why
        shape, outs, internal = state
        for v, k in internal.items():
            self.outside[v] -= k
        if ra in self.anc or rb in self.anc:  # keep a known bitset known: one OR per merge
            self.anc[ra] = self._ancestors(ra) | self._ancestors(rb)
            del self.anc[rb]
        small, big = sorted((self.sets.pop(ra), self.sets.pop(rb)), key=len)
        big |= small
        self.parent[rb] = ra
        self.sets[ra], self.shapes[ra], self.outs[ra] = big, shape, outs
        self.last[ra] = max(self.last[ra], self.last.pop(rb))
        self.version[ra] += 1
        del self.shapes[rb], self.outs[rb], self.version[rb]
        return None


def describe(node: Node) -> str:
    return f"{node.op}{f' ({node.loc})' if node.loc else ''}"


def group_nodes(graph: Graph, notes: list[str]) -> list[set[Node]]:
    """The fusion groups of ``graph``, each a set of eligible nodes, ordered by their first
    member; reasons for what did not fuse go to ``notes``."""
    eligible = []
    for node in graph.nodes:
        if get_op(node.op).family != "elementwise":
            continue
        why = unsupported_reason(node)
        if why is None:
            eligible.append(node)
        else:
            notes.append(f"left unfused: {describe(node)}: {why}")
    groups = Groups(graph, eligible)
    for sweep in range(2):  # a second sweep picks up merges a later merge made legal
        for node in eligible:
            for v in node.inputs:
                if v.node in groups.parent and groups.find(v.node) is not groups.find(node):
                    why = groups.try_merge(v.node, node)
                    if why and sweep == 1:
                        notes.append(f"not merged: {v.node.op} -> {node.op}: {why}")
    _merge_siblings(groups, eligible, notes)
    return [groups.sets[r] for r in dict.fromkeys(groups.find(n) for n in eligible)]


def _merge_siblings(groups: Groups, eligible: list[Node], notes: list[str]) -> None:
    """Merge groups that read the same outer value (a graph input, or the result of a
    reduction, matmul, ...) over the same iteration shape: one pass over that value, not one
    per group. Inlined scalar constants are copied into each body and do not count."""
    readers: dict[Value, dict[Node, None]] = {}  # insertion-ordered sets
    for node in eligible:
        for v in node.inputs:
            outer = v.node is None or (
                v.node not in groups.parent and not is_inline_constant(v.node)
            )
            if outer:
                readers.setdefault(v, {})[node] = None
    for v, found in readers.items():
        nodes = list(found)
        for node in nodes[1:]:
            first, other = groups.find(nodes[0]), groups.find(node)
            if first is other or groups.shape(first) != groups.shape(other):
                continue
            why = groups.try_merge(first, other)
            if why:
                notes.append(
                    f"siblings not merged: {first.op} and {other.op} (both read {v.type}): {why}"
                )
