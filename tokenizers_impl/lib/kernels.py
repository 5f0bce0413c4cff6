"""Numba kernels for LiB encoding: a trie flattened into an open-addressing hash table of
(node, code point) -> child, and the greedy walk with the two-branch comparison over a text held
as a numpy array of code points.

Compiled on first use and cached on disk (`cache=True`), so only the first process on a machine
pays the JIT (about a second); later imports load the machine code.
"""

from __future__ import annotations

import numpy as np
from numba import njit

EMPTY = -1
N_CODEPOINTS = 0x110000  # key = node * N_CODEPOINTS + code point
HASH_MUL = np.uint64(0x9E3779B97F4A7C15)  # Fibonacci hashing


@njit(cache=True, nogil=True, inline="always")
def _slot(key, shift):
    return np.intp((np.uint64(key) * HASH_MUL) >> np.uint64(shift))


@njit(cache=True, nogil=True, inline="always")
def child_of(keys, children, shift, mask, node, cp):
    """The child of `node` along code point `cp`, or -1."""
    key = np.int64(node) * N_CODEPOINTS + cp
    h = _slot(key, shift)
    while True:
        k = keys[h]
        if k == key:
            return children[h]
        if k == EMPTY:
            return -1
        h = (h + 1) & mask


@njit(cache=True, nogil=True)
def build_trie(cps, unit_ends, bits):
    """Insert units (code points `cps`, unit i = cps[unit_ends[i-1]:unit_ends[i]], rank = i).

    Returns (keys, children, node_unit): the hash table of edges (2**bits slots) and, per node,
    the rank of the unit ending there or -1. Node 0 is the root.
    """
    size = 1 << bits
    shift = 64 - bits
    mask = size - 1
    keys = np.full(size, EMPTY, dtype=np.int64)
    children = np.full(size, -1, dtype=np.int32)
    node_unit = np.full(len(cps) + 1, -1, dtype=np.int32)
    n_nodes = 1
    start = 0
    for rank in range(len(unit_ends)):
        end = unit_ends[rank]
        node = 0
        for k in range(start, end):
            key = np.int64(node) * N_CODEPOINTS + cps[k]
            h = _slot(key, shift)
            while keys[h] != EMPTY and keys[h] != key:
                h = (h + 1) & mask
            if keys[h] == EMPTY:
                keys[h] = key
                children[h] = n_nodes
                n_nodes += 1
            node = children[h]
        if node_unit[node] < 0:
            node_unit[node] = rank
        start = end
    return keys, children, node_unit[:n_nodes].copy()


@njit(cache=True, nogil=True, inline="always")
def two_longest(keys, children, node_unit, shift, mask, cps, pos, end):
    """(c1, l1, c2, l2): rank and length of the longest and of the second-longest unit at `pos`
    (not past `end`), one trie walk; rank -1 and length 0 where there is none."""
    node = 0
    c1 = -1
    l1 = 0
    c2 = -1
    l2 = 0
    k = pos
    while k < end:
        node = child_of(keys, children, shift, mask, node, cps[k])
        if node < 0:
            break
        k += 1
        u = node_unit[node]
        if u >= 0:
            c2 = c1
            l2 = l1
            c1 = u
            l1 = k - pos
    return c1, l1, c2, l2


@njit(cache=True, nogil=True, inline="always")
def longest(keys, children, node_unit, shift, mask, cps, pos, end):
    """(rank, length) of the longest unit at `pos` (not past `end`), or (-1, 1) for none."""
    c1, l1, _, _ = two_longest(keys, children, node_unit, shift, mask, cps, pos, end)
    if c1 < 0:
        return -1, 1
    return c1, l1


@njit(cache=True, nogil=True)
def segment_docs(keys, children, node_unit, shift, mask, n_units, cps, doc_ends):
    """Segment every document (doc d = cps[doc_ends[d-1]:doc_ends[d]]).

    Returns (ids, ends, doc_chunks): per chunk the unit rank (-1 = unknown character) and its end
    offset in `cps`; per document the end of its chunks in `ids`. Greedy longest match c1; where a
    second-longest match c2 exists, the greedy branches starting with c1 and with c2 are rolled
    until they end at the same position and the c2 branch replaces the c1 branch when it has fewer
    chunks, or as many and a smaller sum of ranks (unknown characters rank n_units).
    """
    n = len(cps)
    ids = np.empty(n, dtype=np.int32)
    ends = np.empty(n, dtype=np.int64)
    doc_chunks = np.empty(len(doc_ends), dtype=np.int64)
    a_ids = np.empty(n + 1, dtype=np.int32)
    a_ends = np.empty(n + 1, dtype=np.int64)
    b_ids = np.empty(n + 1, dtype=np.int32)
    b_ends = np.empty(n + 1, dtype=np.int64)
    m = 0
    start = 0
    for d in range(len(doc_ends)):
        end = doc_ends[d]
        pos = start
        while pos < end:
            c1, l1, c2, l2 = two_longest(keys, children, node_unit, shift, mask, cps, pos, end)
            if c1 < 0:
                ids[m] = -1
                ends[m] = pos + 1
                m += 1
                pos += 1
                continue
            if c2 < 0:
                ids[m] = c1
                ends[m] = pos + l1
                m += 1
                pos += l1
                continue
            # the race
            na = 1
            a_ids[0] = c1
            end_a = pos + l1
            a_ends[0] = end_a
            nb = 1
            b_ids[0] = c2
            end_b = pos + l2
            b_ends[0] = end_b
            while end_a != end_b:
                if end_a < end_b:
                    u, length = longest(keys, children, node_unit, shift, mask, cps, end_a, end)
                    end_a += length
                    a_ids[na] = u
                    a_ends[na] = end_a
                    na += 1
                else:
                    u, length = longest(keys, children, node_unit, shift, mask, cps, end_b, end)
                    end_b += length
                    b_ids[nb] = u
                    b_ends[nb] = end_b
                    nb += 1
            take_b = nb < na
            if nb == na:
                sum_a = 0
                sum_b = 0
                for i in range(na):
                    sum_a += a_ids[i] if a_ids[i] >= 0 else n_units
                    sum_b += b_ids[i] if b_ids[i] >= 0 else n_units
                take_b = sum_a > sum_b
            if take_b:
                for i in range(nb):
                    ids[m] = b_ids[i]
                    ends[m] = b_ends[i]
                    m += 1
            else:
                for i in range(na):
                    ids[m] = a_ids[i]
                    ends[m] = a_ends[i]
                    m += 1
            pos = end_a
        doc_chunks[d] = m
        start = end
    return ids[:m], ends[:m], doc_chunks


@njit(cache=True, nogil=True)
def with_byte_fallback(ids, ends, cps, byte_base):
    """Token ids: unit ranks as they are, each unknown character (-1) as its UTF-8 bytes
    (surrogates as their 3-byte form, like Python's 'surrogatepass'). Also returns, per chunk, the
    end of its ids."""
    out = np.empty(4 * len(ids), dtype=np.uint32)
    out_ends = np.empty(len(ids), dtype=np.int64)
    m = 0
    for i in range(len(ids)):
        u = ids[i]
        if u >= 0:
            out[m] = u
            m += 1
        else:
            cp = np.int64(cps[ends[i] - 1])
            if cp < 0x80:
                out[m] = byte_base + cp
                m += 1
            elif cp < 0x800:
                out[m] = byte_base + (0xC0 | (cp >> 6))
                out[m + 1] = byte_base + (0x80 | (cp & 0x3F))
                m += 2
            elif cp < 0x10000:
                out[m] = byte_base + (0xE0 | (cp >> 12))
                out[m + 1] = byte_base + (0x80 | ((cp >> 6) & 0x3F))
                out[m + 2] = byte_base + (0x80 | (cp & 0x3F))
                m += 3
            else:
                out[m] = byte_base + (0xF0 | (cp >> 18))
                out[m + 1] = byte_base + (0x80 | ((cp >> 12) & 0x3F))
                out[m + 2] = byte_base + (0x80 | ((cp >> 6) & 0x3F))
                out[m + 3] = byte_base + (0x80 | (cp & 0x3F))
                m += 4
        out_ends[i] = m
    return out[:m], out_ends
