"""The loader's layout kernels (numba, cached on disk once per machine): the ones that decide
where windows' tokens go without copying any (pipeline/loader/kernels.py copies them): best-fit
packing of documents into windows, the mixture's per-block source order, position and document ids
and cu_seqlens from the segments a fill placed (segments: kernels.py's module docstring)."""

from __future__ import annotations

import numba
import numpy as np
from numba import njit
from numba.cpython.unsafe.numbers import trailing_zeros

MOVES = 16  # stable_argsort: insertion moves an element on average before it sorts otherwise


@njit(cache=True, nogil=True)
def stable_argsort(keys):  # noqa: ANN001, ANN201
    """np.argsort(keys, kind="mergesort") (equal keys in index order) for non-negative keys,
    about 10x faster for the loader's random 64-bit keys: a stable counting sort into about n
    buckets by the keys' top bits, then one insertion pass (an element only moves within its
    bucket, past larger keys: a few moves each for evenly spread keys). Keys that crowd into
    a few buckets (more than MOVES moves an element) are sorted by `_argsort_ties` instead."""
    n = len(keys)
    if n < 2 or keys.min() < 0:
        return _argsort_ties(keys)
    low = numba.uint64(keys.min())
    span = numba.uint64(keys.max()) - low
    shift = 0
    while (span >> numba.uint64(shift)) >= numba.uint64(n):
        shift += 1
    count = np.zeros(n + 1, dtype=np.int64)
    for k in keys:
        count[numba.int64((numba.uint64(k) - low) >> numba.uint64(shift)) + 1] += 1
    for b in range(n):
        count[b + 1] += count[b]
    order = np.empty(n, dtype=np.int64)
    for i in range(n):
        b = numba.int64((numba.uint64(keys[i]) - low) >> numba.uint64(shift))
        order[count[b]] = i
        count[b] += 1
    budget = MOVES * n
    for i in range(1, n):
        j, item = i, order[i]
        while j > 0 and keys[order[j - 1]] > keys[item]:
            order[j] = order[j - 1]
            j -= 1
        order[j] = item
        budget -= i - j
        if budget < 0:
            return _argsort_ties(keys)
    return order


@njit(cache=True, nogil=True)
def _argsort_ties(keys):  # noqa: ANN001, ANN201
    """np.argsort(keys, kind="mergesort") by numba's quicksort, then each run of equal keys put
    back in index order."""
    order = np.argsort(keys)
    n, i = len(order), 0
    while i < n:
        j = i + 1
        while j < n and keys[order[j]] == keys[order[i]]:
            j += 1
        if j - i > 1:
            order[i:j] = np.sort(order[i:j])
        i = j
    return order


@njit(cache=True, nogil=True)
def longest_first(sizes, most):  # noqa: ANN001, ANN201
    """np.argsort(-sizes, kind="mergesort") for sizes in [0, most]: a counting sort (stable)."""
    start = np.zeros(most + 2, dtype=np.int64)
    for v in sizes:
        start[most - v + 1] += 1
    for v in range(1, most + 2):
        start[v] += start[v - 1]
    order = np.empty(len(sizes), dtype=np.int64)
    for j in range(len(sizes)):
        k = most - sizes[j]
        order[start[k]] = j
        start[k] += 1
    return order


@njit(cache=True, nogil=True)
def _first_room(rooms, x):  # noqa: ANN001, ANN201
    """Smallest free room >= x with an open bin (bit set in the bitset `rooms`), or -1: a scan
    of 64-bit words from x's (at most window / 64 + 1 of them, mostly one or two)."""
    w = x >> 6
    if w >= len(rooms):
        return -1
    word = rooms[w] & (~numba.uint64(0) << numba.uint64(x & 63))
    while word == 0:
        w += 1
        if w == len(rooms):
            return -1
        word = rooms[w]
    return w * 64 + numba.int64(trailing_zeros(word))


@njit(cache=True, nogil=True, inline="always")
def _set_room(rooms, r, on):  # noqa: ANN001, ANN201
    bit = numba.uint64(1) << numba.uint64(r & 63)
    rooms[r >> 6] = rooms[r >> 6] | bit if on else rooms[r >> 6] & ~bit


@njit(cache=True, nogil=True)
def best_fit(lengths, window, buffer, keys):  # noqa: ANN001, ANN201
    """Hot loop: best-fit-decreasing packing of document streams (`lengths`: stream tokens of each
    document, in stream order) into windows of `window` tokens, one buffer of `buffer`
    consecutive documents at a time. A document longer than a window is cut into window-sized
    pieces (each its own bin) and its remainder; every other piece goes, largest first (ties: the
    earlier), into the open bin of the buffer with the least room that holds it (a bitset of the
    free rooms that have open bins, each room's bins a linked list), or into a new bin. The bins
    of a buffer are then ordered by `keys` (random: a shuffle; at least as many as bins). Returns
    (bin starts [bins + 1], pieces [document, stream offset, length] in bin order)."""
    n = len(lengths)
    cap = n + 1
    for d in range(n):
        cap += lengths[d] // window
    pieces = np.empty((cap, 3), dtype=np.int64)
    bins = np.zeros(cap + 1, dtype=np.int64)
    rooms = np.zeros(window // 64 + 1, dtype=np.uint64)  # free rooms that have open bins
    head = np.full(window + 1, -1, dtype=np.int64)  # open bins of each free room (linked)
    nxt = np.empty(cap, dtype=np.int64)
    room = np.empty(cap, dtype=np.int64)
    placed = np.empty((cap, 4), dtype=np.int64)  # per piece: bin, document, offset, length
    sizes = np.empty(buffer, dtype=np.int64)
    nbins, npieces = 0, 0
    for b0 in range(0, n, buffer):
        b1 = min(b0 + buffer, n)
        first_bin, first_piece = nbins, npieces
        for d in range(b0, b1):
            whole, rest = lengths[d] // window, lengths[d] % window
            for k in range(whole if rest else whole - 1):  # full pieces: a bin each
                placed[npieces, 0], placed[npieces, 1] = nbins, d
                placed[npieces, 2], placed[npieces, 3] = k * window, window
                room[nbins] = 0
                npieces += 1
                nbins += 1
            sizes[d - b0] = rest if rest else window
        for j in longest_first(sizes[: b1 - b0], window):
            d, s = b0 + j, sizes[j]
            r = _first_room(rooms, s)
            if r < 0:  # no open bin holds it: a new one
                b = nbins
                nbins += 1
                room[b] = window
            else:
                b = head[r]
                head[r] = nxt[b]
                if head[r] < 0:
                    _set_room(rooms, r, False)
            placed[npieces, 0], placed[npieces, 1] = b, d
            placed[npieces, 2], placed[npieces, 3] = lengths[d] - s, s
            npieces += 1
            room[b] -= s
            if room[b] > 0:
                nxt[b] = head[room[b]]
                head[room[b]] = b
                _set_room(rooms, room[b], True)
        for b in range(first_bin, nbins):  # the buffer's bins close
            if room[b] > 0:
                head[room[b]] = -1
        rooms[:] = 0
        _order_bins(bins, pieces, placed, keys, first_bin, nbins, first_piece, npieces)
    return bins[: nbins + 1].copy(), pieces[:npieces].copy()


@njit(cache=True, nogil=True)
def _order_bins(bins, pieces, placed, keys, first_bin, nbins, first_piece, npieces):  # noqa: ANN001, ANN201, PLR0913
    """Write a buffer's bins (first_bin .. nbins-1) in the order of their keys, each bin's pieces
    in placement order, into `bins` (starts) and `pieces`."""
    m = nbins - first_bin
    newpos = np.empty(m, dtype=np.int64)
    newpos[stable_argsort(keys[first_bin:nbins])] = np.arange(m)
    count = np.zeros(m + 1, dtype=np.int64)
    for p in range(first_piece, npieces):
        count[newpos[placed[p, 0] - first_bin] + 1] += 1
    for i in range(m):
        count[i + 1] += count[i]
        bins[first_bin + i + 1] = first_piece + count[i + 1]
    for p in range(first_piece, npieces):
        k = newpos[placed[p, 0] - first_bin]
        at = first_piece + count[k]
        count[k] += 1
        pieces[at, 0], pieces[at, 1], pieces[at, 2] = placed[p, 1], placed[p, 2], placed[p, 3]


@njit(cache=True, nogil=True)
def mixed_blocks(key, k0, before):  # noqa: ANN001, ANN201
    """Source and source-window index of every sample of mixture blocks k0, k0 + 1, ...:
    `before[i, s]` is the count of source s before block k0 + i (one row more than blocks).
    Block k holds each source s `before[k + 1, s] - before[k, s]` times, in an order permuted by
    a splitmix64 hash of (key, k, position) (stable sort of the hashes)."""
    blocks, n_sources = before.shape[0] - 1, before.shape[1]
    total = 0
    for s in range(n_sources):
        total += before[blocks, s] - before[0, s]
    sources = np.empty(total, dtype=np.int64)
    local = np.empty(total, dtype=np.int64)
    at = 0
    for i in range(blocks):
        n = 0
        for s in range(n_sources):
            n += before[i + 1, s] - before[i, s]
        hashes = np.empty(n, dtype=np.uint64)
        base = numba.uint64(key) ^ (numba.uint64(k0 + i) * numba.uint64(0x9E3779B97F4A7C15))
        for j in range(n):
            z = base + numba.uint64(j + 1) * numba.uint64(0xBF58476D1CE4E5B9)
            z = (z ^ (z >> numba.uint64(30))) * numba.uint64(0xBF58476D1CE4E5B9)
            z = (z ^ (z >> numba.uint64(27))) * numba.uint64(0x94D049BB133111EB)
            hashes[j] = z ^ (z >> numba.uint64(31))
        order = stable_argsort(hashes)
        label = np.empty(n, dtype=np.int64)
        j = 0
        for s in range(n_sources):
            for _ in range(before[i + 1, s] - before[i, s]):
                label[j] = s
                j += 1
        seen = before[i].copy()
        for j in range(n):
            s = label[order[j]]
            sources[at + j] = s
            local[at + j] = seen[s]
            seen[s] += 1
        at += n
    return sources, local


@njit(cache=True, nogil=True)
def segment_ids(positions, documents, seg, order, want_positions, want_documents):  # noqa: ANN001, ANN201
    """Position ids (0 at each segment start, then counting) into positions and segment numbers
    within the row into documents (both [n, seq_len + 1], first seq_len columns written; only
    those wanted); `order` lists the segments sorted by (row, column)."""
    limit = positions.shape[1] - 1
    last_row, number = -1, 0
    for k in order:
        row, c, length = seg[k, 0], seg[k, 1], seg[k, 2]
        number = number + 1 if row == last_row else 0
        last_row = row
        end = c + length if c + length < limit else limit
        if want_positions:
            for j in range(c, end):
                positions[row, j] = j - c
        if want_documents:
            for j in range(c, end):
                documents[row, j] = number


@njit(cache=True, nogil=True)
def input_starts(seg, seq_len, total):  # noqa: ANN001, ANN201
    """The flat input positions (row * seq_len + column) where the segments start, sorted, with
    `total` appended: what varlen takes. A segment at the last column (seq_len) is a label only.
    Placed by row (a counting sort: the readers record each row's segments in column order),
    then checked, and sorted only if they are not in order after all."""
    n, rows = 0, 0
    for k in range(len(seg)):
        if seg[k, 1] < seq_len:
            n += 1
            rows = max(rows, seg[k, 0] + 1)
    at = np.zeros(rows + 1, dtype=np.int64)  # each row's first slot
    for k in range(len(seg)):
        if seg[k, 1] < seq_len:
            at[seg[k, 0] + 1] += 1
    for r in range(rows):
        at[r + 1] += at[r]
    starts = np.empty(n + 1, dtype=np.int64)
    for k in range(len(seg)):
        if seg[k, 1] < seq_len:
            row = seg[k, 0]
            starts[at[row]] = row * seq_len + seg[k, 1]
            at[row] += 1
    for j in range(1, n):
        if starts[j] < starts[j - 1]:
            starts[:n].sort()
            break
    starts[n] = total
    return starts


@njit(cache=True, nogil=True)
def varlen(starts, sizes, seq_len):  # noqa: ANN001, ANN201
    """flash-attn varlen inputs of items of `sizes` rows from a block's segment starts (flat
    input positions, sorted, the block's total last; every row starts a segment): each item's
    cu_seqlens (int32, concatenated), their lengths, and each item's longest segment."""
    items = len(sizes)
    at = np.empty(items + 1, dtype=np.int64)
    bound, k = 0, 0
    for i in range(items + 1):
        while starts[k] < bound:
            k += 1
        at[i] = k
        if i < items:
            bound += sizes[i] * seq_len
    counts = at[1:] - at[:-1] + 1
    values = np.empty(counts.sum(), dtype=np.int32)
    longest = np.zeros(items, dtype=np.int64)
    o, base = 0, 0
    for i in range(items):
        for j in range(at[i], at[i + 1] + 1):
            values[o] = starts[j] - base
            o += 1
            if j < at[i + 1] and starts[j + 1] - starts[j] > longest[i]:
                longest[i] = starts[j + 1] - starts[j]
        base += sizes[i] * seq_len
    return values, counts, longest
