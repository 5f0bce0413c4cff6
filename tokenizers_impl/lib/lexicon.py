"""The LiB lexicon: ordered ranks, a prefix trie and a unit -> node index, updated together.

Ranks live in an implicit treap (ranks.py): every unit is a node of a randomised balanced binary
tree ordered by position, held in one int32 array and operated on by numba kernels. A unit's rank
is its in-order position; a move (remove + insert at the new position), a rank lookup and
`unit_at(rank)` each cost expected O(log n), independent of the distance moved (no list slicing,
no list.index). `rerank_all` applies a whole document's rewards/punishments in one kernel call.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import numpy as np

import tokenizers_impl.lib.ranks as ranks
from tokenizers_impl.lib.ranks import ALIVE, FLAGS, LEFT, PARENT, RIGHT, SINGLE, SIZE

END = ""  # trie marker: node[END] is the unit that ends at this node (chars are never "")


class Lexicon:
    """Ordered units (rank 0 = strongest) with a prefix trie and a unit -> tree-node index."""

    def __init__(self, units: Iterable[str] = ()):
        self._tree = np.zeros((5, 1025), dtype=np.int32)
        self._node_of: dict[str, int] = {}  # the index: unit -> treap node (rank = its position)
        self._unit_of: list[str | None] = [None]  # node -> unit
        self._free: list[int] = []  # nodes of deleted units, reused
        self.trie: dict = {}
        for unit in units:
            self.append(unit)

    # -- reading ----------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._node_of)

    def __contains__(self, unit: str) -> bool:
        return unit in self._node_of

    def __iter__(self) -> Iterator[str]:
        return iter(self.units())

    def units(self) -> list[str]:
        unit_of = self._unit_of
        return [unit_of[x] for x in ranks.in_order(self._tree).tolist()]  # type: ignore[misc]

    def rank(self, unit: str) -> int:
        return ranks.rank(self._tree, self._node_of[unit])

    def unit_at(self, rank: int) -> str:
        if not 0 <= rank < len(self):
            raise IndexError(f"rank {rank} outside 0..{len(self) - 1}")
        return self._unit_of[ranks.select(self._tree, rank)]  # type: ignore[return-value]

    def iter_from_tail(self) -> Iterator[str]:
        """Units from the tail; lazy, in growing batches (stop early to pay only for what is read).
        The lexicon must not change while this is iterated."""
        unit_of, done, batch = self._unit_of, 0, 64
        while done < len(self):
            nodes = ranks.from_tail(self._tree, done, batch).tolist()
            yield from (unit_of[x] for x in nodes)  # type: ignore[misc]
            done += len(nodes)
            batch *= 4

    def depth(self) -> int:
        """Depth of the rank tree (expected O(log n))."""
        return ranks.depth(self._tree)

    def matches(self, text: str, pos: int, max_len: int) -> tuple[str | None, str | None]:
        """Longest and second-longest units that are prefixes of text[pos:pos + max_len]."""
        node = self.trie
        c1 = c2 = None
        for ch in text[pos : pos + max_len]:
            node = node.get(ch)
            if node is None:
                break
            unit = node.get(END)
            if unit is not None:
                c2, c1 = c1, unit
        return c1, c2

    # -- updating ---------------------------------------------------------------------------------
    def append(self, unit: str) -> None:
        """Add a new unit at the tail."""
        if not unit:
            raise ValueError("a lexicon unit must not be empty")
        if unit in self._node_of:
            raise ValueError(f"unit {unit!r} is already in the lexicon")
        if self._free:
            x = self._free.pop()
            self._unit_of[x] = unit
        else:
            x = len(self._unit_of)
            self._unit_of.append(unit)
            if x >= self._tree.shape[1]:
                grown = np.zeros((5, 2 * self._tree.shape[1]), dtype=np.int32)
                grown[:, : self._tree.shape[1]] = self._tree
                self._tree = grown
        self._tree[FLAGS, x] = ALIVE | (SINGLE if len(unit) == 1 else 0)
        ranks.insert_at(self._tree, x, len(self._node_of))
        self._node_of[unit] = x
        node = self.trie
        for ch in unit:
            node = node.setdefault(ch, {})
        node[END] = unit

    def delete(self, unit: str) -> None:
        x = self._node_of[unit]
        ranks.remove(self._tree, x)
        self._forget(x)

    def move(self, unit: str, new_rank: int) -> None:
        """Move a unit so that it ends at `new_rank` (0 <= new_rank < len)."""
        if not 0 <= new_rank < len(self):
            raise IndexError(f"rank {new_rank} outside 0..{len(self) - 1}")
        ranks.move(self._tree, self._node_of[unit], new_rank)

    def rerank_all(self, updates: Sequence[tuple[str, bool]], delta: float) -> list[str]:
        """Apply (unit, is_reward) in order, each moving its unit floor(rank * delta) + 1 places
        (rank 0 never moves; units not in the lexicon are skipped); a multi-character unit pushed
        past the tail is deleted, a single character stays at the tail. Returns the deleted units."""
        node_of = self._node_of
        nodes = np.fromiter(
            (node_of.get(u, 0) for u, _ in updates), dtype=np.int32, count=len(updates)
        )
        rewards = np.fromiter((r for _, r in updates), dtype=np.bool_, count=len(updates))
        doomed = ranks.rerank_all(self._tree, nodes, rewards, float(delta)).tolist()
        deleted = [self._unit_of[x] for x in doomed]
        for x in doomed:
            self._forget(x)
        return deleted  # type: ignore[return-value]

    # -- internals --------------------------------------------------------------------------------
    def _forget(self, x: int) -> None:
        """Drop detached node x's unit from the index and the trie; x is reused later."""
        unit = self._unit_of[x]
        assert unit is not None
        del self._node_of[unit]
        self._unit_of[x] = None
        self._tree[FLAGS, x] = 0
        self._free.append(x)
        path = [self.trie]
        for ch in unit:
            path.append(path[-1][ch])
        del path[-1][END]
        for depth in range(len(unit), 0, -1):  # prune nodes left empty
            if path[depth]:
                break
            del path[depth - 1][unit[depth - 1]]

    def check(self) -> None:
        """Raise AssertionError unless ranks, trie and index describe the same ordered units."""
        ordered = self.units()
        if len(ordered) != len(self._node_of) or set(ordered) != set(self._node_of):
            raise AssertionError("rank order and index hold different units")
        for rank, unit in enumerate(ordered):
            if self.rank(unit) != rank:
                raise AssertionError(
                    f"index gives rank {self.rank(unit)} for {unit!r} at rank {rank}"
                )
        self._check_tree(ordered)
        in_trie: list[str] = []
        stack = [self.trie]
        while stack:
            node = stack.pop()
            for ch, child in node.items():
                if ch == END:
                    in_trie.append(child)
                elif not child:
                    raise AssertionError("the trie holds an empty branch")
                else:
                    stack.append(child)
        if sorted(in_trie) != sorted(ordered):
            raise AssertionError("the trie and the rank order hold different units")

    def _check_tree(self, ordered: list[str]) -> None:
        """Subtree sizes, parent links and flags of the treap agree with the index."""
        tree = self._tree
        root = int(tree[PARENT, 0])
        if tree[SIZE, 0] or tree[LEFT, 0] or tree[RIGHT, 0]:
            raise AssertionError("the rank tree's null node was written to")
        if (root == 0) != (not ordered) or (root and tree[PARENT, root] != 0):
            raise AssertionError("the rank tree's root is wrong")
        for unit in ordered:
            x = self._node_of[unit]
            left, right = int(tree[LEFT, x]), int(tree[RIGHT, x])
            if tree[SIZE, x] != 1 + tree[SIZE, left] + tree[SIZE, right]:
                raise AssertionError(f"subtree size of {unit!r} is wrong")
            if any(c and tree[PARENT, c] != x for c in (left, right)):
                raise AssertionError(f"a child of {unit!r} does not point back to it")
            if self._unit_of[x] != unit or not tree[FLAGS, x] & ALIVE:
                raise AssertionError(f"node of {unit!r} is not marked as holding it")
            if bool(tree[FLAGS, x] & SINGLE) != (len(unit) == 1):
                raise AssertionError(f"single-character flag of {unit!r} is wrong")
