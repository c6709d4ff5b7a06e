"""Compile time: the fast algorithms give what the straightforward ones gave.

The fusion grouping (incremental group state, bitset reachability) and the memory-aware order (a
heap with lazy invalidation) replaced simpler code that recomputed everything on each step. That
simpler code is kept here, nearly verbatim, as the reference: on random graphs and on a
transformer-stack gradient the fast versions must give the same groups and the same orders. No
timing is asserted (compile time is measured in bench/bench_compile.py); a 20,000-op chain must
compile at all.
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right

import numpy as np
import pytest

import gpugraph as gg
from gpugraph import memory, memory_hb, memory_place, runtime
from gpugraph.codegen import cuda as codegen_cuda
from gpugraph.codegen import is_inline_constant, unsupported_reason
from gpugraph.ir import Graph, Node, TensorType, Value
from gpugraph.memory import order_peak, plan_memory, reorder_for_memory
from gpugraph.memory_order import VIEW_OPS, _greedy_order, memory_aware_order
from gpugraph.memory_place import interval_conflicts, plan_intervals
from gpugraph.ops.registry import get_op
from gpugraph.passes.fuse_groups import group_nodes
from gpugraph.schedule import Schedule, schedule


# ---- the reference fusion grouping (before incremental group state) -------------------------
class RefGroups:
    def __init__(self, graph: Graph, members: list[Node]) -> None:
        self.index = {n: i for i, n in enumerate(graph.nodes)}
        self.users = graph.users()
        self.graph_outputs = set(graph.outputs)
        self.parent = {n: n for n in members}
        self.sets = {n: {n} for n in members}

    def find(self, n):
        while self.parent[n] is not n:
            n = self.parent[n]
        return n

    def outputs_of(self, group):
        outs = []
        for node in sorted(group, key=self.index.__getitem__):
            for v in node.outputs:
                if v in self.graph_outputs or any(u not in group for u in self.users[v]):
                    outs.append(v)
        return outs

    def refusal(self, group):
        last = max(self.index[n] for n in group)
        frontier = [u for n in group for v in n.outputs for u in self.users[v] if u not in group]
        seen = set()
        while frontier:
            node = frontier.pop()
            if node in seen or self.index[node] > last:
                continue
            seen.add(node)
            for v in node.outputs:
                for u in self.users[v]:
                    if u in group:
                        return f"a path leaves the group through {node.op} and re-enters it"
                    frontier.append(u)
        shape = np.broadcast_shapes(*(n.output.shape for n in group))
        bad = [v for v in self.outputs_of(group) if v.shape != shape]
        if bad:
            return (
                f"value {bad[0].type} from {bad[0].node.op} is used outside the group but is "
                f"smaller than the group's shape {tuple(shape)}"
            )
        return None

    def shape(self, root):
        return np.broadcast_shapes(*(n.output.shape for n in self.sets[root]))

    def try_merge(self, a, b):
        ra, rb = self.find(a), self.find(b)
        if ra is rb:
            return None
        union = self.sets[ra] | self.sets[rb]
        why = self.refusal(union)
        if why is None:
            self.parent[rb] = ra
            self.sets[ra] = union
            del self.sets[rb]
        return why


def ref_group_nodes(graph: Graph, notes: list[str]) -> list[set[Node]]:
    eligible = []
    for node in graph.nodes:
        if get_op(node.op).family == "elementwise":
            why = unsupported_reason(node)
            if why is None:
                eligible.append(node)
            else:
                notes.append(f"left unfused: {node.op}: {why}")
    groups = RefGroups(graph, eligible)
    for sweep in range(2):
        for node in eligible:
            for v in node.inputs:
                if v.node in groups.parent and groups.find(v.node) is not groups.find(node):
                    why = groups.try_merge(v.node, node)
                    if why and sweep == 1:
                        notes.append(f"not merged: {v.node.op} -> {node.op}: {why}")
    readers: dict[Value, list[Node]] = {}
    for node in eligible:
        for v in node.inputs:
            outer = v.node is None or (
                v.node not in groups.parent and not is_inline_constant(v.node)
            )
            if outer and node not in readers.get(v, []):
                readers.setdefault(v, []).append(node)
    for v, nodes in readers.items():
        for node in nodes[1:]:
            first, other = groups.find(nodes[0]), groups.find(node)
            if first is other or groups.shape(first) != groups.shape(other):
                continue
            why = groups.try_merge(first, other)
            if why:
                notes.append(
                    f"siblings not merged: {first.op} and {other.op} (both read {v.type}): {why}"
                )
    return [groups.sets[r] for r in dict.fromkeys(groups.find(n) for n in eligible)]


# ---- the reference memory-aware order (before the heap) --------------------------------------
def ref_greedy_order(graph: Graph) -> list[Node]:
    outputs, pinned = set(graph.outputs), set(graph.inputs)
    base: dict[Value, Value] = {}
    for n in graph.nodes:
        if n.op in VIEW_OPS:
            base[n.outputs[0]] = base.get(n.inputs[0], n.inputs[0])
    root = {v: base.get(v, v) for v in graph.values()}
    pending: dict[Value, int] = {}
    for n in graph.nodes:
        for v in n.inputs:
            pending[root[v]] = pending.get(root[v], 0) + 1
    missing = {n: len({v for v in n.inputs if v.node is not None}) for n in graph.nodes}
    users: dict[Value, list[Node]] = {}
    for n in graph.nodes:
        for v in {v for v in n.inputs if v.node is not None}:
            users.setdefault(v, []).append(n)
    pos = {n: k for k, n in enumerate(graph.nodes)}
    ready = [n for n in graph.nodes if missing[n] == 0]
    order: list[Node] = []

    def gain(n):
        counts: dict[Value, int] = {}
        for v in n.inputs:
            counts[root[v]] = counts.get(root[v], 0) + 1
        freed = sum(
            r.type.nbytes
            for r, c in counts.items()
            if pending[r] == c
            and r not in pinned
            and r not in outputs
            and r.node is not None
            and r.node.op != "constant"
        )
        alloc = sum(
            v.type.nbytes
            for v in n.outputs
            if v not in outputs and n.op not in VIEW_OPS and n.op != "constant"
        )
        return freed - alloc

    while ready:
        n = max(ready, key=lambda m: (gain(m), -pos[m]))
        ready.remove(n)
        order.append(n)
        for v in n.inputs:
            pending[root[v]] -= 1
        for v in n.outputs:
            for u in users.get(v, ()):
                missing[u] -= 1
                if missing[u] == 0:
                    ready.append(u)
    return order


# ---- graphs ------------------------------------------------------------------------------------
SHAPES = {"x": (4, 6), "row": (6,), "col": (4, 1), "w": (6, 6)}
UNARY = [gg.exp, gg.sin, gg.tanh, gg.negative, gg.abs, lambda t: t * 2.0, lambda t: t + 1.0]
BINARY = [gg.add, gg.multiply, gg.maximum, gg.subtract, lambda a, b: gg.where(a > b, a, b)]


def random_program(seed: int, steps: int):
    """A random float32 program over a (4, 6) matrix, a row, a column and a (6, 6) weight:
    elementwise ops that broadcast, reductions to a row, a column or a scalar, matmuls and
    reshapes; operands mostly recent values (chains), sometimes old ones (long edges)."""
    rng = np.random.default_rng(seed)
    recipe = [
        (rng.integers(0, 10), int(rng.integers(0, 100)), int(rng.integers(0, 100)))
        for _ in range(steps)
    ]
    n_out = int(rng.integers(1, 4))

    def pick(vals, r, shapes=None):
        ok = [v for v in vals if shapes is None or v.shape in shapes]
        if not ok:
            return None
        recent = r % 3 != 0
        return ok[-1 - r % min(3, len(ok))] if recent else ok[r % len(ok)]

    def fn(x, row, col, w):
        vals = [x, row, col]
        for kind, a, b in recipe:
            u = pick(vals, a)
            if kind <= 3:
                vals.append(UNARY[(a + b) % len(UNARY)](u))
            elif kind <= 6:
                vals.append(BINARY[(a + b) % len(BINARY)](u, pick(vals, b)))
            elif kind == 7:
                m = pick(vals, a, {(4, 6)})
                if m is not None:
                    axis = [(-1, True), (0, False), (None, False)][b % 3]
                    vals.append(gg.sum(m, axis=axis[0], keepdims=axis[1]))
            elif kind == 8:
                m = pick(vals, a, {(4, 6)})
                if m is not None:
                    vals.append(m @ w)
            else:
                m = pick(vals, a, {(4, 6)})
                if m is not None:
                    vals.append(gg.reshape(gg.reshape(m, (6, 4)) * 0.5, (4, 6)))
        return tuple(vals[3:][-n_out:]) + (vals[-1 - len(vals) // 2],)

    return fn


def args_of(*names):
    return [gg.ShapeDtype(SHAPES[n]) for n in names]


def graph_before_fusion(fn, args) -> Graph:
    return gg.jit(fn, backend="numpy", fuse=False).lower(*args).graph


def transformer_gradient(layers: int = 2, seq: int = 8, d: int = 16):
    def block(x, p):
        wq, wk, wv, wo, w1, w2 = p
        h = gg.layer_norm(x)
        q, k, v = h @ wq, h @ wk, h @ wv
        a = gg.softmax(q @ gg.swapaxes(k, -1, -2) * 0.25)
        x = x + (a @ v) @ wo
        return x + gg.gelu(gg.layer_norm(x) @ w1) @ w2

    def loss(params, x):
        for i in range(layers):
            x = block(x, params[6 * i : 6 * i + 6])
        return gg.sum(x * x)

    shapes = [(d, d)] * 4 + [(d, 4 * d), (4 * d, d)]
    params = [gg.ShapeDtype(s) for _ in range(layers) for s in shapes]
    return gg.grad(loss), [params, gg.ShapeDtype((seq, d))]


def same_reasons(notes: list[str]) -> list[str]:
    """Notes with the node named on a re-entering path blanked: both implementations name a
    node on such a path, not necessarily the same one (the reference's walk order followed set
    iteration order)."""
    return [re.sub(r"through \S+ and re-enters", "through * and re-enters", n) for n in notes]


def assert_same_groups(graph: Graph) -> None:
    notes, ref_notes = [], []
    got = group_nodes(graph, notes)
    want = ref_group_nodes(graph, ref_notes)
    assert [sorted(n.id for n in g) for g in got] == [sorted(n.id for n in g) for g in want]
    assert same_reasons([n for n in notes if not n.startswith("left unfused")]) == same_reasons(
        [n for n in ref_notes if not n.startswith("left unfused")]
    )


# ---- fusion groups -------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(60))
def test_fusion_groups_equal_the_reference_on_random_programs(seed):
    steps = 6 + seed % 5 * 8
    graph = graph_before_fusion(random_program(seed, steps), args_of("x", "row", "col", "w"))
    assert_same_groups(graph)


def test_fusion_groups_equal_the_reference_on_a_transformer_gradient():
    fn, args = transformer_gradient()
    graph = graph_before_fusion(fn, args)
    assert len(graph.nodes) > 200
    assert_same_groups(graph)


def test_random_programs_refuse_merges_for_both_reasons():
    """The comparison above must cover refusals of both kinds, or it proves little."""
    notes: list[str] = []
    for seed in range(60):
        fn = random_program(seed, 6 + seed % 5 * 8)
        group_nodes(graph_before_fusion(fn, args_of("x", "row", "col", "w")), notes)
    assert any("re-enters" in n for n in notes)
    assert any("smaller than the group's shape" in n for n in notes)
    assert any(n.startswith("siblings not merged") for n in notes)


# ---- memory-aware order --------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(40))
def test_greedy_order_equals_the_reference_on_random_programs(seed):
    fn = random_program(seed, 6 + seed % 5 * 8)
    for fuse in (False, True):
        graph = gg.jit(fn, backend="numpy", fuse=fuse).lower(*args_of("x", "row", "col", "w"))
        g = graph.graph
        assert _greedy_order(g) == ref_greedy_order(g)


def test_greedy_order_equals_the_reference_on_a_transformer_gradient():
    fn, args = transformer_gradient()
    g = gg.jit(fn, backend="numpy").lower(*args).graph
    order = _greedy_order(g)
    assert order == ref_greedy_order(g)
    assert order_peak(g, memory_aware_order(g)) <= order_peak(g, g.nodes)


def test_plan_reports_the_peak_of_the_memory_aware_order():
    """plan_memory no longer reruns memory_aware_order for its report: the pipeline's graph is
    already in that order, whose peak reorder_for_memory recorded."""
    fn, args = transformer_gradient(layers=1)
    c = gg.jit(fn, backend="numpy").lower(*args)
    g = c.graph
    assert c.memory.aware_peak_bytes == order_peak(g, g.nodes) == c.memory.order_peak_bytes
    # a graph in some other order: the report computes the memory-aware order's peak itself
    plain = Graph(g.inputs, list(g.nodes), g.outputs)
    plan = plan_memory(plain, schedule(plain, 1))
    assert plan.aware_peak_bytes == order_peak(plain, memory_aware_order(plain))
    assert reorder_for_memory(plain).meta["aware_peak_bytes"] == plan.aware_peak_bytes


# ---- interval placement --------------------------------------------------------------------------
def ref_interval_conflicts(triples):
    return [
        [j for j, (f, la, _) in enumerate(triples) if j != i and f <= t[1] and la >= t[0]]
        for i, t in enumerate(triples)
    ]


def ref_place(sizes, conflicts, order, align):
    offsets = [-1] * len(sizes)
    total = 0
    for i in order:
        size = sizes[i]
        busy = sorted((offsets[j], offsets[j] + sizes[j]) for j in conflicts[i] if offsets[j] >= 0)
        best, best_gap, cursor = -1, -1, 0
        for lo, hi in busy:
            gap = lo - cursor
            if gap >= size and (best < 0 or gap < best_gap):
                best, best_gap = cursor, gap
            cursor = max(cursor, memory_place.align_up(hi, align))
        offsets[i] = best if best >= 0 else cursor
        total = max(total, offsets[i] + size)
    return offsets, memory_place.align_up(total, align)


def random_triples(seed: int):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 250))
    span = int(rng.integers(1, 120))  # long lives: many items overlap, the vectorized scan
    firsts = rng.integers(0, 200, n)
    sizes = rng.choice([4, 64, 256, 1000, 4096, 10_000], n)
    return [(int(f), int(f + rng.integers(0, span)), int(s)) for f, s in zip(firsts, sizes)]


def test_random_triples_exercise_both_scans():
    longest = [max(len(c) for c in ref_interval_conflicts(random_triples(s))) for s in range(30)]
    assert min(longest) < memory_place._VECTOR_FROM <= max(longest)


@pytest.mark.parametrize("seed", range(30))
def test_interval_placement_equals_the_reference(seed, monkeypatch):
    triples = random_triples(seed)
    ref = ref_interval_conflicts(triples)
    assert [sorted(c) for c in interval_conflicts(triples)] == ref
    sizes = [t[2] for t in triples]
    rng = np.random.default_rng(seed)
    conflicts = memory_place.IntervalConflicts(triples)
    assert conflicts.counts == [len(c) for c in ref]
    for align in (1, 256):
        for _ in range(3):
            order = rng.permutation(len(triples)).tolist()
            got = memory_place._place(sizes, conflicts, order, align)
            assert got == ref_place(sizes, ref, order, align)
    monkeypatch.setattr(memory_place, "SEARCH_WORK", 20_000)  # a few tries, not a million
    got = plan_intervals(triples, 256)
    monkeypatch.setattr(memory_place, "MATERIALIZE_PAIRS", 0)  # the on-demand form
    assert plan_intervals(triples, 256) == got
    monkeypatch.setattr(memory_place, "_place", ref_place)
    monkeypatch.setattr(memory_place, "_interval_conflicts", ref_interval_conflicts)
    assert got == plan_intervals(triples, 256)


# ---- sizes ---------------------------------------------------------------------------------------
def test_tensor_type_size_is_exact_and_cached():
    t = TensorType((3, 0, 7), np.float32)
    assert t.size == 0 and t.nbytes == 0
    big = TensorType((2**20, 2**20, 2**10), np.float64)  # 2**50 elements: no int64 surprise
    assert big.size == 2**50 and big.nbytes == 2**53
    assert TensorType((), np.int32).size == 1
    assert t == TensorType((3, 0, 7), np.float32) and hash(t) == hash(TensorType((3, 0, 7), "f4"))


# ---- a long chain compiles -----------------------------------------------------------------------
def test_a_20000_op_chain_compiles(monkeypatch):
    # Not recorded for the end-of-session sweeps: its one kernel has 20,000 statements.
    monkeypatch.setattr(codegen_cuda, "KERNEL_OBSERVERS", [])
    monkeypatch.setattr(runtime, "COMPILED_OBSERVERS", [])

    def chain(x):
        for _ in range(20_000):
            x = gg.sin(x)
        return x

    c = gg.jit(chain, backend="numpy").lower(gg.ShapeDtype((8,)))
    assert len(c.traced_graph.nodes) == 20_000
    assert c.graph.op_counts() == {"fused": 1}
    x = np.linspace(-1, 1, 8, dtype=np.float32)
    want = x
    for _ in range(20_000):
        want = np.sin(want)
    np.testing.assert_allclose(c(x), want, rtol=1e-5, atol=1e-6)


# ---- clique bound (several streams) --------------------------------------------------------------
def ref_clique_bound(sizes, conflicts, seeds):
    """The set-based version; candidates of equal size in index order (the set version took
    them in set iteration order, which CPython does not define)."""
    nbrs = [set(c) for c in conflicts]
    best = 0
    for seed in seeds:
        clique = set(seed)
        cand = set.intersection(*(nbrs[i] for i in clique)) if clique else set()
        for i in sorted(cand, key=lambda i: (-sizes[i], i)):
            if clique <= nbrs[i]:
                clique.add(i)
        best = max(best, sum(sizes[i] for i in clique))
    return best


@pytest.mark.parametrize("seed", range(20))
def test_clique_bound_and_live_sets_equal_the_reference(seed):
    triples = random_triples(seed)
    steps = max(t[1] for t in triples) + 2
    want_seeds = {
        frozenset(i for i, t in enumerate(triples) if t[0] <= k <= t[1]) for k in range(steps)
    }
    got_seeds = memory_place.live_sets(triples, steps)
    assert {frozenset(memory_place._members(s)) for s in got_seeds} == want_seeds
    rng = np.random.default_rng(seed)
    # overlap plus random extra conflicts (as happens-before adds across streams), sizes with ties
    conflicts = [set(c) for c in ref_interval_conflicts(triples)]
    for _ in range(len(triples)):
        a, b = rng.integers(0, len(triples), 2)
        if a != b:
            conflicts[a].add(int(b))
            conflicts[b].add(int(a))
    sizes = [int(s) for s in rng.choice([256, 512, 4096], len(triples))]
    conflicts = [sorted(c) for c in conflicts]
    got = memory_place.clique_bound(sizes, conflicts, got_seeds)
    assert got == ref_clique_bound(sizes, conflicts, want_seeds)
    assert got == memory_place.clique_bound(sizes, conflicts, want_seeds)  # sets as seeds too


# ---- several streams: vectorized happens-before conflicts ----------------------------------------
def ref_hb_conflicts(heads, members, slots, readers, sched: Schedule):
    """(memory_place.hb_conflicts before the conflicts became HBConflicts: every pair stored.)
    Buffers a, b conflict unless every access of one happens-before the first write of the
    other (later accesses of a buffer all depend on its first write). Overlapping linear
    ranges always conflict; for disjoint ones only the earlier can come first, and once past
    ``concurrent_until`` of all its accesses (when the schedule offers it) every later write is
    ordered after it, so happens-before is asked only inside that window. A wide window is
    tested with NumPy on the schedule's vector clocks (when happens-before is Schedule's own):
    step x happens before step j iff ``clock[j, stream of x] >= x``."""
    hb = sched.happens_before
    horizon_of = getattr(sched, "concurrent_until", None)
    clocks = type(sched).happens_before is Schedule.happens_before
    n = len(heads)
    acc, first, last, horizon = [], [], [], []
    for h in heads:
        a = {slots[m].first for m in members[h]}
        for m in members[h]:
            a.update(readers.get(m, ()))
        acc.append(sorted(a))
        first.append(slots[h].first)
        last.append(max(a))
        horizon.append(max(horizon_of(x) for x in a) if horizon_of else len(sched.steps))
    by_first = sorted(range(n), key=lambda i: first[i])
    starts = [first[i] for i in by_first]
    first_arr, by_first_arr = np.asarray(first, dtype=np.int64), np.asarray(by_first, dtype=int)
    if clocks:
        stream_arr = np.asarray(sched._streams, dtype=np.int64)
    conflicts: list[list[int]] = [[] for _ in range(n)]
    for a in range(n):
        lo = bisect_left(starts, first[a])
        hi = bisect_right(starts, horizon[a])
        if not clocks or hi - lo < memory_place._VECTOR_FROM:
            for b in by_first[lo:hi]:
                if b == a or (first[b] == first[a] and b < a):
                    continue  # each unordered pair once
                if first[b] <= last[a] or not all(hb(x, first[b]) for x in acc[a]):
                    conflicts[a].append(b)
                    conflicts[b].append(a)
            continue
        win = by_first_arr[lo:hi]
        fb = first_arr[win]
        keep = (win != a) & ~((fb == first[a]) & (win < a))
        win, fb = win[keep], fb[keep]
        later = fb > last[a]  # disjoint ranges: conflict unless every access is ordered first
        x = np.asarray(acc[a], dtype=np.int64)
        ordered = (sched.clock[np.ix_(fb[later], stream_arr[x])] >= x).all(axis=1)
        for b in np.concatenate((win[~later], win[later][~ordered])).tolist():
            conflicts[a].append(b)
            conflicts[b].append(a)
    return conflicts, [last[i] for i in range(n)]


def plan_with(monkeypatch, c, vector_from: int):
    """plan_memory of a compiled graph with NumPy scans from ``vector_from`` conflicts on, and
    the conflict lists hb_conflicts made (as sets)."""

    seen = []

    def recording(*args):
        conflicts, lasts = memory_hb.hb_conflicts(*args)
        seen.append([sorted(c.tolist()) for c in conflicts])
        return conflicts, lasts

    monkeypatch.setattr(memory_place, "_VECTOR_FROM", vector_from)
    monkeypatch.setattr(memory, "hb_conflicts", recording)
    plan = plan_memory(c.graph, c.schedule)
    return {v.id: (s.kind, s.offset) for v, s in plan.slots.items()}, plan.arena_bytes, seen


@pytest.mark.parametrize("case", ["transformer", 3, 11, 27])
def test_several_streams_plan_is_the_same_with_and_without_numpy_scans(case, monkeypatch):
    from gpugraph.passes import fuse_reduce

    # parallel branches to plan: reduction fusion would make some of these programs one chain
    monkeypatch.setattr(fuse_reduce, "ENABLED", False)
    if case == "transformer":
        fn, args = transformer_gradient()
    else:
        fn, args = random_program(case, 40), args_of("x", "row", "col", "w")
    c = gg.jit(fn, backend="numpy", streams=4).lower(*args)
    assert c.schedule.num_streams > 1 and c.memory.method.startswith("happens-before")
    windows = plan_with(monkeypatch, c, 4)  # the pairs from per-stream windows (default)
    monkeypatch.setattr(memory_hb, "WINDOWS", False)  # one test per buffer in each window:
    fast = plan_with(monkeypatch, c, 4)  # most windows take the NumPy path
    slow = plan_with(monkeypatch, c, 10**9)  # every window the Python loop
    assert windows == fast == slow and fast[2]


# ---- several streams: overlap from the ranges, only the extra pairs stored ----------------------
def four_stream_program(case):
    from gpugraph.passes import fuse_reduce

    saved = fuse_reduce.ENABLED
    fuse_reduce.ENABLED = False  # parallel branches: reduction fusion would chain some of them
    try:
        if case == "transformer":
            fn, args = transformer_gradient()
        else:
            fn, args = random_program(case, 40), args_of("x", "row", "col", "w")
        return gg.jit(fn, backend="numpy", streams=4).lower(*args)
    finally:
        fuse_reduce.ENABLED = saved


def slot_offsets(plan):
    return {v.id: (s.kind, s.offset) for v, s in plan.slots.items()}, plan.arena_bytes


@pytest.mark.parametrize("case", ["transformer", 7, 8, 19])  # each with extra pairs
def test_hb_conflicts_clique_bound_and_plan_equal_the_stored_pairs_reference(case, monkeypatch):
    c = four_stream_program(case)
    assert c.schedule.num_streams > 1
    seen = {}

    def recording_conflicts(*args):
        got = memory_hb.hb_conflicts(*args)
        seen["args"], seen["got"] = args, got
        return got

    def recording_bound(sizes, conflicts, seeds):
        got = memory_hb.hb_clique_bound(sizes, conflicts, seeds)
        seen["bound"] = (sizes, seeds, got)
        return got

    monkeypatch.setattr(memory, "hb_conflicts", recording_conflicts)
    monkeypatch.setattr(memory, "hb_clique_bound", recording_bound)
    new = plan_memory(c.graph, c.schedule)
    if "bound" not in seen:  # the first placement met the live-bytes bound: the plan skipped
        heads, members, slots, _, sched = seen["args"]  # the clique bound; compute it here
        triples = [
            (slots[h].first, max(slots[m].last for m in members[h]), slots[h].size) for h in heads
        ]
        seeds = memory_place.live_sets(triples, len(sched.steps))
        hsizes = [memory_place.align_up(t[2], memory.ALIGN) for t in triples]
        recording_bound(hsizes, seen["got"][0], seeds)
    (lazy, lasts), (sizes, seeds, bound) = seen["got"], seen["bound"]
    ref, ref_lasts = ref_hb_conflicts(*seen["args"])
    assert lasts == ref_lasts
    assert [sorted(x.tolist()) for x in lazy] == [sorted(x) for x in ref]
    assert lazy.counts == [len(x) for x in ref]
    assert any(len(e) for e in lazy.extras), (
        "no happens-before pair beyond overlap: the case tests nothing"
    )
    assert bound == memory_place.clique_bound(sizes, ref, seeds)
    assert bound == new.lower_bound_bytes
    # the whole plan: the same offsets as from the stored pairs and the bitset clique bound, and
    # the same again when the placement scans the on-demand form
    monkeypatch.setattr(memory, "hb_conflicts", ref_hb_conflicts)
    monkeypatch.setattr(memory, "hb_clique_bound", memory_place.clique_bound)
    want = slot_offsets(plan_memory(c.graph, c.schedule))
    assert slot_offsets(new) == want
    monkeypatch.setattr(memory, "hb_conflicts", memory_hb.hb_conflicts)
    monkeypatch.setattr(memory, "hb_clique_bound", memory_hb.hb_clique_bound)
    monkeypatch.setattr(memory_place, "MATERIALIZE_PAIRS", 0)
    assert slot_offsets(plan_memory(c.graph, c.schedule)) == want


@pytest.mark.parametrize("seed", range(20))
def test_hb_clique_bound_equals_the_bitset_bound_with_many_extra_pairs(seed):
    triples = random_triples(seed)
    n = len(triples)
    rng = np.random.default_rng(seed)
    first = [t[0] for t in triples]
    last = [t[1] for t in triples]
    horizon = [la + int(rng.integers(0, 40)) for la in last]
    extras = [[] for _ in range(n)]
    for a in range(n):  # disjoint later buffers inside a's window, about half of them
        for b in range(n):
            if last[a] < first[b] <= horizon[a] and rng.random() < 0.5:
                extras[a].append(b)
                extras[b].append(a)
    conflicts = memory_hb.HBConflicts(first, last, extras, horizon)
    lists = [sorted(x.tolist()) for x in conflicts]
    assert lists == [
        sorted(set(o) | set(e)) for o, e in zip(ref_interval_conflicts(triples), extras)
    ]
    sizes = [int(s) for s in rng.choice([256, 512, 4096], n)]
    steps = max(last) + 2
    seeds = memory_place.live_sets(triples, steps)
    got = memory_hb.hb_clique_bound(sizes, conflicts, seeds)
    assert got == memory_place.clique_bound(sizes, lists, seeds)
    # any cliques as seeds (not only live sets), as sets of indices
    some = [set(rng.choice(n, size=min(n, 2), replace=False).tolist()) for _ in range(10)]
    some = [s for s in some if all(j in lists[i] for i in s for j in s if i != j)]
    assert memory_hb.hb_clique_bound(sizes, conflicts, some) == ref_clique_bound(sizes, lists, some)


@pytest.mark.parametrize("seed", range(6))
def test_search_over_on_demand_conflicts_equals_the_search_over_lists(seed, monkeypatch):
    # the on-demand form is stored as lists once the first placement misses the target
    triples = random_triples(seed)
    sizes, spans = [t[2] for t in triples], [t[1] - t[0] for t in triples]
    monkeypatch.setattr(memory_place, "SEARCH_WORK", 20_000)
    lists = ref_interval_conflicts(triples)
    want = memory_place.plan_offsets(sizes, lists, 256, spans, 0)  # target 0: every try runs
    lazy = memory_place.IntervalConflicts(triples)
    assert memory_place.plan_offsets(sizes, lazy, 256, spans, 0) == want
    monkeypatch.setattr(memory_place, "MATERIALIZE_PAIRS", 0)  # never stored
    assert memory_place.plan_offsets(sizes, lazy, 256, spans, 0) == want
