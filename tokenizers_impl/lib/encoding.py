"""LiB encoding for a frozen lexicon.

`LiBEncoder` runs the whole segmentation, races included, in a numba kernel (kernels.py) over the
text's code points. `RegexLiBEncoder` is an independent pure-Python encoder kept as a test oracle:
the greedy longest-match path comes from one compiled trie regex and Python runs the two-branch
comparison where it can change the result. The reference walk both are tested against is
`training.segment` (a live Lexicon, no shortcuts).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from itertools import repeat

import numpy as np

from tokenizers_impl.lib.kernels import build_trie as build_array_trie
from tokenizers_impl.lib.kernels import segment_docs, with_byte_fallback

MAX_CACHED = 1 << 20  # cached matches kept before the cache is cleared


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


class RegexLiBEncoder:
    """Encodes text with a fixed ordered lexicon; unknown characters become byte-fallback ids."""

    def __init__(self, units: Sequence[str], byte_base: int):
        self.units = list(units)
        self.rank = {unit: i for i, unit in enumerate(units)}
        self.trie = build_trie(units)
        self.plans = race_plans(self.trie, units)
        self.unknown_rank = len(units)
        self.byte_base = byte_base
        self.pattern = re.compile(trie_pattern(units), re.DOTALL)
        self.max_len = max(map(len, units), default=1)
        self._longest: dict[str, str] = {}  # text[p:p + max_len] -> longest unit at p

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
        trie, longest, max_len = self.trie, self._longest, self.max_len
        while end_a != end_b:
            if end_a < end_b:
                j += 1
                end_a += len(chunks[j])
            else:
                # The longest unit at a position depends only on the next max_len characters
                # (fewer where the text ends), so those characters key a cache of matches.
                window = text[end_b : end_b + max_len]
                unit = longest.get(window)
                if unit is None:
                    if len(longest) >= MAX_CACHED:
                        longest.clear()
                    unit = longest[window] = longest_in(trie, window, 0) or longest_at_end(
                        trie, window, 0
                    )
                b.append(unit)
                end_b += len(unit)
        return self._better(chunks[i : j + 1], b), j + 1, end_a

    def _better(self, a: list[str], b: list[str]) -> list[str]:
        if len(a) != len(b):
            return a if len(a) < len(b) else b
        rank, unknown = self.rank, self.unknown_rank
        sum_a = sum(rank.get(u, unknown) for u in a)
        return b if sum_a > sum(rank.get(u, unknown) for u in b) else a

    def encode(self, text: str) -> np.ndarray:
        chunks = self.segment(text)
        ids = np.fromiter(map(self.rank.get, chunks, repeat(-1)), dtype=np.int64, count=len(chunks))
        if len(ids) and ids.min() < 0:  # unknown characters: their UTF-8 bytes
            return np.array(self.ids_with_fallback(chunks), dtype=np.uint32)
        return ids.astype(np.uint32)

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        return [self.encode(t) for t in texts]

    def ids_with_fallback(self, chunks: list[str]) -> list[int]:
        ids: list[int] = []
        rank, base = self.rank, self.byte_base
        for chunk in chunks:
            rank_id = rank.get(chunk)
            if rank_id is None:
                ids.extend(base + b for b in chunk.encode("utf-8", "surrogatepass"))
            else:
                ids.append(rank_id)
        return ids


def code_points(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4")


class NumbaLiBEncoder:
    """The same segmentation as RegexLiBEncoder, computed by numba kernels over code points."""

    def __init__(self, units: Sequence[str], byte_base: int):
        self.units = list(units)
        self.rank = {unit: i for i, unit in enumerate(self.units)}
        self.byte_base = byte_base
        lengths = np.fromiter(map(len, self.units), dtype=np.int64, count=len(self.units))
        unit_ends = np.cumsum(lengths)
        n_edges = int(unit_ends[-1]) if len(unit_ends) else 0
        bits = max(4, int(2 * max(1, n_edges) - 1).bit_length())  # load factor <= 1/2
        self.keys, self.children, self.node_unit = build_array_trie(
            code_points("".join(self.units)), unit_ends, bits
        )
        self.shift, self.mask = 64 - bits, (1 << bits) - 1

    def _chunks(
        self, texts: Sequence[str]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        cps = code_points("".join(texts))
        doc_ends = np.cumsum(np.fromiter(map(len, texts), dtype=np.int64, count=len(texts)))
        ids, ends, doc_chunks = segment_docs(
            self.keys, self.children, self.node_unit, self.shift, self.mask,
            len(self.units), cps, doc_ends,
        )  # fmt: skip
        return cps, ids, ends, doc_chunks

    def segment(self, text: str) -> list[str]:
        _, _, ends, _ = self._chunks([text])
        bounds = [0, *ends.tolist()]
        return [text[bounds[i] : bounds[i + 1]] for i in range(len(ends))]

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        if not texts:
            return []
        cps, ids, ends, doc_chunks = self._chunks(texts)
        if len(ids) and ids.min() < 0:  # unknown characters: their UTF-8 bytes
            out, out_ends = with_byte_fallback(ids, ends, cps, self.byte_base)
            bounds = np.concatenate([np.zeros(1, np.int64), out_ends])[doc_chunks]
        else:
            out, bounds = ids.astype(np.uint32), doc_chunks
        return np.split(out, bounds[:-1])

    def encode(self, text: str) -> np.ndarray:
        return self.encode_batch([text])[0]

    ids_with_fallback = RegexLiBEncoder.ids_with_fallback


LiBEncoder = NumbaLiBEncoder
