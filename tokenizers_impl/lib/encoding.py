"""Fast LiB encoding for a frozen lexicon: the greedy longest-match path comes from one compiled
trie regex (C speed); Python only runs the two-branch comparison where a unit has a shorter prefix."""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np


def trie_pattern(units: Sequence[str]) -> str:
    """A regex whose match at a position is the longest unit there (a nested, greedy trie).

    Children are tried best rank first; each node's children start with distinct characters, so
    at most one alternative can match and the greedy `?` makes the longest unit win.
    """
    root: dict = {}
    best: dict[int, int] = {}
    for rank, unit in enumerate(units):
        node = root
        for ch in unit:
            node = node.setdefault(ch, {})
            best.setdefault(id(node), rank)
        node[""] = True

    def build(node: dict) -> str:
        children = sorted((c for c in node if c), key=lambda c: best[id(node[c])])
        parts = [re.escape(c) + build(node[c]) for c in children]
        if not parts:
            return ""
        body = parts[0] if len(parts) == 1 else "(?:" + "|".join(parts) + ")"
        return "(?:" + body + ")?" if "" in node else body

    body = build(root)
    return f"{body}|." if body else "."


def longest_proper_prefix(units: Sequence[str]) -> dict[str, str]:
    """unit -> its longest proper prefix that is itself a unit (the c2 of a match on the unit)."""
    known = set(units)
    second: dict[str, str] = {}
    for unit in units:
        for k in range(len(unit) - 1, 0, -1):
            if unit[:k] in known:
                second[unit] = unit[:k]
                break
    return second


class LiBEncoder:
    """Encodes text with a fixed ordered lexicon; unknown characters become byte-fallback ids."""

    def __init__(self, units: Sequence[str], byte_base: int):
        self.rank = {unit: i for i, unit in enumerate(units)}
        self.second = longest_proper_prefix(units)
        self.unknown_rank = len(units)
        self.byte_base = byte_base
        self.pattern = re.compile(trie_pattern(units), re.DOTALL)

    def segment(self, text: str) -> list[str]:
        """The chunks of `text`: greedy path, replaced by the c2 branch where that branch wins."""
        chunks = self.pattern.findall(text)
        second, rank, match = self.second.get, self.rank, self.pattern.match
        unknown = self.unknown_rank
        out: list[str] = []
        emit = out.append
        extend = out.extend
        i, m, pos = 0, len(chunks), 0
        while i < m:
            c1 = chunks[i]
            c2 = second(c1)
            if c2 is None:
                emit(c1)
                pos += len(c1)
                i += 1
                continue
            end_a, end_b, j, b = pos + len(c1), pos + len(c2), i, [c2]
            while end_a != end_b:
                if end_a < end_b:
                    j += 1
                    end_a += len(chunks[j])
                else:
                    unit = match(text, end_b).group()
                    b.append(unit)
                    end_b += len(unit)
            n_a = j - i + 1
            if n_a < len(b):
                extend(chunks[i:j + 1])
            elif n_a > len(b):
                extend(b)
            else:
                a = chunks[i:j + 1]
                sum_a = sum(rank.get(u, unknown) for u in a)
                sum_b = sum(rank.get(u, unknown) for u in b)
                extend(b if sum_a > sum_b else a)
            pos = end_a
            i = j + 1
        return out

    def encode(self, text: str) -> np.ndarray:
        chunks = self.segment(text)
        try:
            return np.fromiter(map(self.rank.__getitem__, chunks), dtype=np.uint32,
                               count=len(chunks))
        except KeyError:
            return np.array(self._ids_with_fallback(chunks), dtype=np.uint32)

    def _ids_with_fallback(self, chunks: list[str]) -> list[int]:
        ids: list[int] = []
        rank, base = self.rank, self.byte_base
        for chunk in chunks:
            rank_id = rank.get(chunk)
            if rank_id is None:
                ids.extend(base + b for b in chunk.encode("utf-8", "surrogatepass"))
            else:
                ids.append(rank_id)
        return ids
