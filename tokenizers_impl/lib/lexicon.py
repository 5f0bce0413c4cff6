"""The LiB lexicon: ordered ranks, a prefix trie and a unit -> rank index, updated together.

Ranks are kept with fractional keys: every unit holds an integer sort key, the keys live in a
`sortedcontainers.SortedList`, and a unit's rank is the position of its key. A rank move removes the
key and inserts a fresh one between the keys of its new neighbours, so a move, a rank lookup and
`unit_at(rank)` each cost O(log n) (SortedList's amortised cost; no list slicing, no list.index).
Keys start `GAP` apart; when two neighbours have no integer left between them, all keys are
renumbered in one O(n) pass, which happens about once every log2(GAP) moves into the same gap.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from sortedcontainers import SortedList

END = ""  # trie marker: node[END] is the unit that ends at this node (chars are never "")
GAP = 1 << 40


class Lexicon:
    """Ordered units (rank 0 = strongest) with a prefix trie and a unit -> sort-key index."""

    def __init__(self, units: Iterable[str] = ()):
        self._keys = SortedList()
        self._unit_of_key: dict[int, str] = {}
        self._key_of: dict[str, int] = {}  # the index: unit -> sort key (rank = position of key)
        self.trie: dict = {}
        self.renumberings = 0
        for unit in units:
            self.append(unit)

    # -- reading ----------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._key_of)

    def __contains__(self, unit: str) -> bool:
        return unit in self._key_of

    def __iter__(self) -> Iterator[str]:
        unit_of = self._unit_of_key
        return (unit_of[k] for k in self._keys)

    def units(self) -> list[str]:
        return list(self)

    def rank(self, unit: str) -> int:
        return self._keys.bisect_left(self._key_of[unit])

    def unit_at(self, rank: int) -> str:
        return self._unit_of_key[self._keys[rank]]

    def iter_from_tail(self) -> Iterator[str]:
        unit_of = self._unit_of_key
        return (unit_of[k] for k in reversed(self._keys))

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
        if unit in self._key_of:
            raise ValueError(f"unit {unit!r} is already in the lexicon")
        key = self._keys[-1] + GAP if self._keys else 0
        self._set_key(unit, key)
        node = self.trie
        for ch in unit:
            node = node.setdefault(ch, {})
        node[END] = unit

    def delete(self, unit: str) -> None:
        key = self._key_of.pop(unit)
        del self._unit_of_key[key]
        self._keys.remove(key)
        path = [self.trie]
        for ch in unit:
            path.append(path[-1][ch])
        del path[-1][END]
        for depth in range(len(unit), 0, -1):  # prune nodes left empty
            if path[depth]:
                break
            del path[depth - 1][unit[depth - 1]]

    def move(self, unit: str, new_rank: int) -> None:
        """Move a unit so that it ends at `new_rank` (0 <= new_rank < len)."""
        old_key = self._key_of[unit]
        self._keys.remove(old_key)
        del self._unit_of_key[old_key]
        key = self._key_between(new_rank)
        if key is None:
            self._renumber()
            key = self._key_between(new_rank)
        self._set_key(unit, key)

    # -- internals --------------------------------------------------------------------------------
    def _set_key(self, unit: str, key: int) -> None:
        self._key_of[unit] = key
        self._unit_of_key[key] = unit
        self._keys.add(key)

    def _key_between(self, rank: int) -> int | None:
        """A free key that would sit at position `rank` of the current keys, or None if none is left."""
        keys = self._keys
        if not keys:
            return 0
        if rank <= 0:
            return keys[0] - GAP
        if rank >= len(keys):
            return keys[-1] + GAP
        low, high = keys[rank - 1], keys[rank]
        if high - low < 2:
            return None
        return (low + high) // 2

    def _renumber(self) -> None:
        self.renumberings += 1
        units = list(self)
        self._keys = SortedList(range(0, len(units) * GAP, GAP))
        self._unit_of_key = {i * GAP: u for i, u in enumerate(units)}
        self._key_of = {u: i * GAP for i, u in enumerate(units)}

    def check(self) -> None:
        """Raise AssertionError unless ranks, trie and index describe the same ordered units."""
        ordered = self.units()
        if len(ordered) != len(self._key_of) or set(ordered) != set(self._key_of):
            raise AssertionError("rank order and index hold different units")
        for rank, unit in enumerate(ordered):
            if self.rank(unit) != rank:
                raise AssertionError(
                    f"index gives rank {self.rank(unit)} for {unit!r} at rank {rank}"
                )
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
