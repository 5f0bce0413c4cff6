"""Fast LiB encoding for a frozen lexicon: the greedy longest-match path comes from one compiled
trie regex (C speed); Python only runs the two-branch comparison where a unit has a shorter prefix."""

from __future__ import annotations

import re
from collections.abc import Sequence
from itertools import repeat

import numpy as np

MAX_MEMO = 1 << 21  # memo entries kept before the memo is cleared
MAX_WIDTH = 5  # longest run of greedy chunks (c1 included) a memo entry covers
SHORT = 48  # texts with fewer greedy chunks take the plain Python loop


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


def build_trie(units: Sequence[str]) -> dict:
    trie: dict = {}
    for unit in units:
        node = trie
        for ch in unit:
            node = node.setdefault(ch, {})
        node[""] = unit
    return trie


def longest_in(trie: dict, text: str, pos: int) -> str | None:
    """The longest unit at `pos` if text[pos:] decides it, None if the text beyond could extend it."""
    node, longest, k, n = trie, None, pos, len(text)
    while k < n and text[k] in node:
        node = node[text[k]]
        k += 1
        longest = node.get("", longest)
    if k == n and len(node) > ("" in node):
        return None
    return longest or text[pos]


def longest_at_end(trie: dict, text: str, pos: int) -> str:
    """The longest unit at `pos` when the text ends within the trie walk."""
    node, longest = trie, None
    for ch in text[pos:]:
        node = node[ch]
        longest = node.get("", longest)
    return longest or text[pos]


def race_plans(trie: dict, units: Sequence[str]) -> dict[str, tuple[list[str], int]]:
    """For each unit c1 whose race is not decided by c1 alone: the c2 branch's chunks that lie
    inside c1 and the offset where that branch continues.

    A match inside c1 is fixed by c1 alone when its trie walk ends within c1. Units without a
    shorter prefix (no c2), and units whose c2 branch exactly tiles c1 (so it has at least 2 chunks
    against 1 and loses), never race and get no plan.
    """
    plans: dict[str, tuple[list[str], int]] = {}
    for unit in units:
        c2 = None
        node = trie
        for ch in unit[:-1]:
            node = node[ch]
            c2 = node.get("", c2)
        if c2 is None:
            continue
        chunks, q = [c2], len(c2)
        while q < len(unit):
            chunk = longest_in(trie, unit, q)
            if chunk is None:
                break  # the match could run past c1: decided by the text that follows
            chunks.append(chunk)
            q += len(chunk)
        if q < len(unit):
            plans[unit] = (chunks, q)
    return plans


class LiBEncoder:
    """Encodes text with a fixed ordered lexicon; unknown characters become byte-fallback ids.

    Two exact paths give the same chunks. `segment` walks the greedy chunks in Python and runs
    each race. `encode` (long texts) looks each race up in a memo keyed by the window of greedy
    chunk ids it covers: most races are decided by c1 and the next one or two greedy chunks alone.
    Windows form a trie (window node = parent node * (n + 1) + next id; a single chunk's node is its
    id), looked up with numpy one width at a time; only races no window up to MAX_WIDTH decides run
    in Python, and the walk over race starts is a tight loop over a list of codes.
    """

    def __init__(self, units: Sequence[str], byte_base: int):
        self.units = list(units)
        self.rank = {unit: i for i, unit in enumerate(units)}
        self.trie = build_trie(units)
        self.plans = race_plans(self.trie, units)
        self.unknown_rank = len(units)
        self.byte_base = byte_base
        self.pattern = re.compile(trie_pattern(units), re.DOTALL)
        self.racing = np.zeros(len(units) + 1, dtype=bool)
        self.racing[[self.rank[u] for u in self.plans]] = True
        self._clear_memo()

    def _clear_memo(self) -> None:
        self._memo_keys = np.zeros(0, dtype=np.int64)  # sorted window keys
        self._memo_codes = np.zeros(0, dtype=np.int64)
        self._memo_nodes = np.zeros(0, dtype=np.int64)
        self._recent: dict[int, tuple[int, int]] = {}  # key -> (code, node), not yet in the arrays
        self._next_node = len(self.units) + 1
        self._b_wins: list[tuple[np.ndarray, int]] = []  # (ids emitted, greedy chunks replaced)

    # -- the plain path -------------------------------------------------------------------------
    def segment(self, text: str) -> list[str]:
        """The chunks of `text`: greedy path, replaced by the c2 branch where that branch wins."""
        chunks = self.pattern.findall(text)
        plan_of = self.plans.get
        out: list[str] = []
        i, m, pos = 0, len(chunks), 0
        while i < m:
            c1 = chunks[i]
            if plan_of(c1) is None:
                out.append(c1)
                pos += len(c1)
                i += 1
                continue
            emitted, i, pos = self._race(text, chunks, i, pos)
            out.extend(emitted)
        return out

    def _race(self, text: str, chunks: list[str], i: int, pos: int) -> tuple[list[str], int, int]:
        """Race at greedy chunk i (at char pos): (chunks emitted, next chunk index, next pos)."""
        c1 = chunks[i]
        b_start, q = self.plans[c1]
        b = b_start[:]
        end_a, end_b, j = pos + len(c1), pos + q, i
        trie = self.trie
        while end_a != end_b:
            if end_a < end_b:
                j += 1
                end_a += len(chunks[j])
            else:
                unit = longest_in(trie, text, end_b) or longest_at_end(trie, text, end_b)
                b.append(unit)
                end_b += len(unit)
        return self._better(chunks[i:j + 1], b), j + 1, end_a

    def _better(self, a: list[str], b: list[str]) -> list[str]:
        if len(a) != len(b):
            return a if len(a) < len(b) else b
        rank, unknown = self.rank, self.unknown_rank
        sum_a = sum(rank.get(u, unknown) for u in a)
        return b if sum_a > sum(rank.get(u, unknown) for u in b) else a

    # -- the memo path --------------------------------------------------------------------------
    def encode(self, text: str) -> np.ndarray:
        chunks = self.pattern.findall(text)
        if len(chunks) < SHORT:
            return np.array(self._ids_with_fallback(self.segment(text)), dtype=np.uint32)
        if self._next_node - self.unknown_rank > MAX_MEMO:
            self._clear_memo()  # node numbers restart, so every window is decided afresh
        ids = np.fromiter(map(self.rank.get, chunks, repeat(-1)), dtype=np.int64,
                          count=len(chunks))
        unknown = np.flatnonzero(ids < 0)
        if not len(unknown):
            return self._encode_ids(text, chunks, ids).astype(np.uint32)
        ids[unknown] = -unknown - 1  # unknown k-th chunk: id -(k + 1) until the byte fallback
        return self._expand_unknown(self._encode_ids(text, chunks, ids), chunks)

    def _expand_unknown(self, ids: np.ndarray, chunks: list[str]) -> np.ndarray:
        out: list[int] = []
        base = self.byte_base
        for i in ids.tolist():
            if i >= 0:
                out.append(i)
            else:
                out.extend(base + b for b in chunks[-i - 1].encode("utf-8", "surrogatepass"))
        return np.array(out, dtype=np.uint32)

    def _encode_ids(self, text: str, chunks: list[str], ids: np.ndarray) -> np.ndarray:
        m = len(ids)
        codes = np.ones(m, dtype=np.int64)  # >0: keep that many greedy chunks; 0: race; <0: b wins
        racing = self.racing[np.maximum(ids, -1)]  # unknown (negative) ids never race
        starts = np.flatnonzero(racing)
        codes[starts] = self._window_codes(chunks, ids, starts)
        code_list = codes.tolist()
        pieces: list[np.ndarray] = []
        char_starts = None
        i = kept_from = 0
        while i < m:
            code = code_list[i]
            if code > 0:
                i += code
                continue
            if code < 0:
                b_ids, replaced = self._b_wins[-code - 1]
                pieces.append(ids[kept_from:i])
                pieces.append(b_ids)
                i += replaced
                kept_from = i
                continue
            if char_starts is None:
                char_starts = np.zeros(m + 1, dtype=np.int64)
                np.cumsum(np.fromiter(map(len, chunks), dtype=np.int64, count=m),
                          out=char_starts[1:])
                char_starts = char_starts.tolist()
            emitted, j, _ = self._race(text, chunks, i, char_starts[i])
            if len(emitted) != j - i or emitted != chunks[i:j]:
                pieces.append(ids[kept_from:i])
                pieces.append(np.array(self._ids_with_fallback(emitted), dtype=np.int64))
                kept_from = j
            i = j
        pieces.append(ids[kept_from:])
        return np.concatenate(pieces)

    def _window_codes(self, chunks: list[str], ids: np.ndarray, starts: np.ndarray) -> np.ndarray:
        """Memo codes of the races at `starts` (0 where no window up to MAX_WIDTH decides)."""
        codes = np.zeros(len(starts), dtype=np.int64)
        nodes = ids[starts]
        active = np.arange(len(starts))
        stride = self.unknown_rank + 1
        for width in range(2, MAX_WIDTH + 1):
            last = starts[active] + width - 1
            inside = last < len(ids)
            active, last = active[inside], last[inside]
            following = ids[last]
            known = following >= 0  # a window holding an unknown character is never memoised
            active, following = active[known], following[known]
            if not len(active):
                break
            found_codes, found_nodes = self._lookup(nodes[active] * stride + following,
                                                    chunks, starts[active], width)
            codes[active] = found_codes
            nodes[active] = found_nodes
            active = active[found_codes == 0]
        return codes

    def _lookup(self, keys: np.ndarray, chunks: list[str], starts: np.ndarray,
                width: int) -> tuple[np.ndarray, np.ndarray]:
        """(code, node) of each window key, deciding unseen windows from their chunks now."""
        memo_keys = self._memo_keys
        if len(memo_keys):
            at = np.minimum(np.searchsorted(memo_keys, keys), len(memo_keys) - 1)
            found = memo_keys[at] == keys
            codes = np.where(found, self._memo_codes[at], 0)
            nodes = np.where(found, self._memo_nodes[at], 0)
            missing = np.flatnonzero(~found)
        else:
            codes = np.zeros(len(keys), dtype=np.int64)
            nodes = np.zeros(len(keys), dtype=np.int64)
            missing = np.arange(len(keys))
        if len(missing):
            recent = self._recent
            fill_codes, fill_nodes = [], []
            for key, i in zip(keys[missing].tolist(), starts[missing].tolist(), strict=True):
                entry = recent.get(key)
                if entry is None:
                    entry = recent[key] = (self._decide(chunks[i], chunks[i + 1:i + width]),
                                           self._next_node)
                    self._next_node += 1
                fill_codes.append(entry[0])
                fill_nodes.append(entry[1])
            codes[missing] = fill_codes
            nodes[missing] = fill_nodes
            if len(recent) > max(1024, len(memo_keys) // 16):
                self._merge_recent()
        return codes, nodes

    def _merge_recent(self) -> None:
        recent = self._recent
        keys = np.concatenate([self._memo_keys, np.fromiter(recent, dtype=np.int64)])
        codes = np.concatenate([self._memo_codes,
                                np.fromiter((c for c, _ in recent.values()), dtype=np.int64)])
        nodes = np.concatenate([self._memo_nodes,
                                np.fromiter((n for _, n in recent.values()), dtype=np.int64)])
        order = np.argsort(keys, kind="stable")
        self._memo_keys, self._memo_codes, self._memo_nodes = keys[order], codes[order], nodes[order]
        recent.clear()

    def _decide(self, c1: str, following: list[str]) -> int:
        """Memo code of the race at c1 followed by the greedy chunks `following`: 0 when those
        chunks do not decide it, n > 0 when the greedy branch wins over n chunks, -k - 1 when the c2
        branch wins (self._b_wins[k] holds its ids and the greedy chunks it replaces)."""
        span = c1 + "".join(following)
        b_start, end_b = self.plans[c1]
        b = b_start[:]
        end_a, n_a = len(c1), 1
        while end_a != end_b:
            if end_a < end_b:
                if n_a > len(following):
                    return 0
                end_a += len(following[n_a - 1])
                n_a += 1
            else:
                unit = longest_in(self.trie, span, end_b)
                if unit is None:
                    return 0
                b.append(unit)
                end_b += len(unit)
        a = [c1, *following][:n_a]
        if self._better(a, b) is a:
            return n_a
        self._b_wins.append((np.array(self._ids_with_fallback(b), dtype=np.int64), n_a))
        return -len(self._b_wins)

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
