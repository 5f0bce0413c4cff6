"""The loader's compiled kernels (numba, cached on disk once per machine).

A document's *stream* is `[BOS] + tokens + [EOS]` (BOS only when the dataset inserts one): that is
what windows are cut from. Reading kernels copy document-stream slices into rows of a
[n, seq_len + 1] window array and record one *segment* per slice placed: (row, column, length,
document index in its shuffle group, offset in the document's stream); padding is a segment of
document -1. Segments drive everything a batch adds to the tokens: labels masks, position and
document ids, cu_seqlens, and provenance.
A labels row is int (labels="ids": targets, IGNORE) or bool (labels="mask": True, False), written
by the same loops through `target_value` / `ignore_value` (compiled per row type).
"""

from __future__ import annotations

import numba
import numpy as np
from numba import njit, types
from numba.extending import overload

IGNORE = -100  # torch's cross_entropy ignore_index
SEG_FIELDS = 5  # row, column, length, document (-1: padding), offset in the document's stream


def target_value(lab, v):  # noqa: ANN001, ANN201, ARG001
    """A counted label's value in labels row `lab`: its target v, or True in a bool row."""
    return v


def ignore_value(lab):  # noqa: ANN001, ANN201, ARG001
    """A label's value in labels row `lab` where it does not count: IGNORE, or False."""
    return IGNORE


@overload(target_value)
def _target_value(lab, v):  # noqa: ANN001, ANN202, ARG001
    return (lambda lab, v: True) if isinstance(lab.dtype, types.Boolean) else (lambda lab, v: v)


@overload(ignore_value)
def _ignore_value(lab):  # noqa: ANN001, ANN202, ARG001
    return (lambda lab: False) if isinstance(lab.dtype, types.Boolean) else (lambda lab: IGNORE)


@njit(cache=True, nogil=True, inline="always")
def copy_piece(dst, lab, at, tokens, start, length, lead, bos, eos, q, n):  # noqa: ANN001, ANN201
    """Document-stream positions [q, q + n) into dst[at : at + n]; the stream is `lead` BOS
    tokens (0 or 1), then tokens[start : start + length], then one EOS. With a labels row `lab`
    (length > 0), each token also goes to lab[j - 1] for its column j >= 1 (the label whose
    target it is; True in a bool row), in the same pass: one read of the shard, two stores."""
    labelled = len(lab) > 0
    k = 0
    if q < lead:
        dst[at] = bos
        if labelled and at > 0:
            lab[at - 1] = target_value(lab, bos)
        k = 1
    t0 = q + k - lead
    t1 = q + n - lead
    if t1 > length:
        t1 = length
    if t1 > t0:
        one = numba.uint64(1)
        d0, s0, m = numba.uint64(at + k), numba.uint64(start + t0), numba.uint64(t1 - t0)
        if not labelled:
            for i in range(m):  # unsigned: no wraparound, vectorised
                dst[d0 + i] = tokens[s0 + i]
        else:
            if d0 == 0:  # column 0 is an input only: no label has it as target
                dst[0] = tokens[s0]
                d0, s0, m = d0 + one, s0 + one, m - one
            l0 = d0 - one
            for i in range(m):
                v = tokens[s0 + i]
                dst[d0 + i] = v
                lab[l0 + i] = target_value(lab, v)
    if q + n == length + lead + 1:
        dst[at + n - 1] = eos
        if labelled and at + n >= 2:
            lab[at + n - 2] = target_value(lab, eos)


@njit(cache=True, nogil=True)
def gather_concat(  # noqa: ANN201, PLR0913
    out,
    labels,
    rows,
    o,
    files,
    doc_file,
    doc_start,
    doc_len,
    ends,
    rel,
    stop,
    lead,
    bos,
    eos,
    seg,
    nseg,
):  # noqa: ANN001
    """Hot loop: copy a shuffle group's stream positions [rel, stop) to flat position `o` of
    consecutive windows whose rows in `out` ([n, window]) are `rows` (and, shifted, to the same
    rows of `labels` unless it has no columns); document d's stream spans
    [ends[d] - (doc_len[d] + 1 + lead), ends[d]). Appends a segment per slice to seg (from nseg);
    returns (new flat position, new segment count)."""
    window = out.shape[1]
    d = np.searchsorted(ends, rel, side="right")  # the document holding position rel
    pos = rel
    while pos < stop:
        length, end = doc_len[d], ends[d]
        first = end - length - 1 - lead
        hi = (stop if stop < end else end) - first
        q = pos - first
        tokens = files[doc_file[d]]
        while q < hi:
            r = o // window
            c = o - r * window
            n = hi - q
            if n > window - c:
                n = window - c
            row = rows[r]
            lab = labels[row] if labels.shape[1] else labels[0]
            copy_piece(out[row], lab, c, tokens, doc_start[d], length, lead, bos, eos, q, n)
            seg[nseg, 0], seg[nseg, 1], seg[nseg, 2] = row, c, n
            seg[nseg, 3], seg[nseg, 4] = d, q
            nseg += 1
            q += n
            o += n
        pos = first + hi
        d += 1
    return o, nseg


@njit(cache=True, nogil=True)
def gather_bins(  # noqa: ANN201, PLR0913
    out,
    labels,
    rows,
    files,
    doc_file,
    doc_start,
    doc_len,
    bins,
    pieces,
    b0,
    b1,
    lead,
    bos,
    eos,
    pad,
    seg,
    nseg,
):  # noqa: ANN001
    """Hot loop: windows (bins) b0 .. b1-1 of a best-fit group layout into out[rows[b - b0]]
    (and shifted into labels, as gather_concat): each bin's pieces (document, offset in its
    stream, length: rows of `pieces`, bins[b] .. bins[b + 1]) one after another, then padding
    (labels IGNORE where it is the target). Returns the new segment count."""
    window = out.shape[1]
    for b in range(b0, b1):
        row = rows[b - b0]
        dst = out[row]
        lab = labels[row] if labels.shape[1] else labels[0]
        c = 0
        for p in range(bins[b], bins[b + 1]):
            d, q, n = pieces[p, 0], pieces[p, 1], pieces[p, 2]
            tokens = files[doc_file[d]]
            copy_piece(dst, lab, c, tokens, doc_start[d], doc_len[d], lead, bos, eos, q, n)
            seg[nseg, 0], seg[nseg, 1], seg[nseg, 2] = row, c, n
            seg[nseg, 3], seg[nseg, 4] = d, q
            nseg += 1
            c += n
        if c < window:
            c0 = numba.uint64(c)
            for i in range(numba.uint64(window - c)):  # unsigned: stores, not scatters
                dst[c0 + i] = pad
            if len(lab):  # labels whose target is padding (the first pad's included)
                l0 = numba.uint64(c - 1 if c > 0 else 0)
                for i in range(numba.uint64(window - 1) - l0):
                    lab[l0 + i] = ignore_value(lab)
            seg[nseg, 0], seg[nseg, 1], seg[nseg, 2] = row, c, window - c
            seg[nseg, 3], seg[nseg, 4] = -1, 0
            nseg += 1
    return nseg


@njit(cache=True, nogil=True)
def _first_at_least(tree, size, x):  # noqa: ANN001, ANN201
    """Smallest leaf index >= x with a non-zero count in a segment tree of `size` leaves (or -1)."""
    if x >= size:
        return -1
    i = x + size
    if tree[i] > 0:
        return x
    while True:  # climb until a right sibling subtree holds something
        if (i & 1) == 0 and tree[i + 1] > 0:
            i += 1
            break
        i >>= 1
        if i <= 1:
            return -1
    while i < size:  # descend to its leftmost non-empty leaf
        i = 2 * i if tree[2 * i] > 0 else 2 * i + 1
    return i - size


@njit(cache=True, nogil=True)
def _tree_add(tree, size, x, delta):  # noqa: ANN001, ANN201
    i = x + size
    while i >= 1:
        tree[i] += delta
        i >>= 1


@njit(cache=True, nogil=True)
def best_fit(lengths, window, buffer, keys):  # noqa: ANN001, ANN201
    """Hot loop: best-fit-decreasing packing of document streams (`lengths`: stream tokens of each
    document, in stream order) into windows of `window` tokens, one buffer of `buffer`
    consecutive documents at a time. A document longer than a window is cut into window-sized
    pieces (each its own bin) and its remainder; every other piece goes, largest first (ties: the
    earlier), into the open bin of the buffer with the least room that holds it (a segment tree
    over free room), or into a new bin. The bins of a buffer are then ordered by `keys` (random:
    a shuffle; at least as many as bins). Returns (bin starts [bins + 1], pieces [document,
    stream offset, length] in bin order)."""
    n = len(lengths)
    cap = n + 1
    for d in range(n):
        cap += lengths[d] // window
    pieces = np.empty((cap, 3), dtype=np.int64)
    bins = np.zeros(cap + 1, dtype=np.int64)
    size = 1
    while size < window + 1:
        size *= 2
    tree = np.zeros(2 * size, dtype=np.int64)  # count of open bins per free room
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
        for j in np.argsort(-sizes[: b1 - b0], kind="mergesort"):
            d, s = b0 + j, sizes[j]
            r = _first_at_least(tree, size, s)
            if r < 0:  # no open bin holds it: a new one
                b = nbins
                nbins += 1
                room[b] = window
            else:
                b = head[r]
                head[r] = nxt[b]
                _tree_add(tree, size, r, -1)
            placed[npieces, 0], placed[npieces, 1] = b, d
            placed[npieces, 2], placed[npieces, 3] = lengths[d] - s, s
            npieces += 1
            room[b] -= s
            if room[b] > 0:
                nxt[b] = head[room[b]]
                head[room[b]] = b
                _tree_add(tree, size, room[b], 1)
        for b in range(first_bin, nbins):  # the buffer's bins close
            if room[b] > 0:
                _tree_add(tree, size, room[b], -1)
                head[room[b]] = -1
        _order_bins(bins, pieces, placed, keys, first_bin, nbins, first_piece, npieces)
    return bins[: nbins + 1].copy(), pieces[:npieces].copy()


@njit(cache=True, nogil=True)
def _order_bins(bins, pieces, placed, keys, first_bin, nbins, first_piece, npieces):  # noqa: ANN001, ANN201, PLR0913
    """Write a buffer's bins (first_bin .. nbins-1) in the order of their keys, each bin's pieces
    in placement order, into `bins` (starts) and `pieces`."""
    m = nbins - first_bin
    newpos = np.empty(m, dtype=np.int64)
    newpos[np.argsort(keys[first_bin:nbins], kind="mergesort")] = np.arange(m)
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
def mask_labels(labels, seg, mask):  # noqa: ANN001, ANN201
    """IGNORE over the labels whose targets are in segments of mask 1 (skipped documents), and
    at the first target of segments of mask 2 (a document's first stream token: cross-document
    labels). Padding's labels are written by the readers."""
    for k in range(len(mask)):
        if mask[k] == 0:
            continue
        row, c, length = seg[k, 0], seg[k, 1], seg[k, 2]
        if mask[k] == 1:
            for j in range(c - 1 if c > 0 else 0, c + length - 1):
                labels[row, j] = ignore_value(labels)
        elif c > 0:
            labels[row, c - 1] = ignore_value(labels)


@njit(cache=True, nogil=True)
def mask_targets(labels, seg, masks, doc_file, mask_start, doc_len, lead):  # noqa: ANN001, ANN201, PLR0913
    """IGNORE over the labels whose target has loss mask 0, for the segments `seg` of documents
    whose shard has a `loss_mask` column (masks[doc_file[d]], from mask_start[d], one entry per
    token; mask_start -1: a null mask, every token trained). A BOS has mask 0; the EOS takes the
    mask of the document's last token (0 for a document without tokens); padding (document -1)
    is left to the readers."""
    for k in range(len(seg)):
        row, c, n, d, q = seg[k, 0], seg[k, 1], seg[k, 2], seg[k, 3], seg[k, 4]
        if d < 0:
            continue
        mask, length, base = masks[doc_file[d]], doc_len[d], mask_start[d]
        lab = labels[row]
        if q < lead and c > 0:  # the BOS at column c
            lab[c - 1] = ignore_value(lab)
        if base < 0:
            continue
        t0 = q - lead if q > lead else 0  # the segment's tokens t0 .. t1-1 ...
        t1 = q + n - lead if q + n - lead < length else length
        j0 = c + t0 + lead - q  # ... at columns j0 ..
        if j0 == 0:  # column 0 is no label's target
            t0, j0 = t0 + 1, 1
        if t1 > t0:
            m0, l0 = numba.uint64(base + t0), numba.uint64(j0 - 1)
            for i in range(numba.uint64(t1 - t0)):
                keep = mask[m0 + i] != 0
                lab[l0 + i] = lab[l0 + i] if keep else ignore_value(lab)
        e = c + n - 1  # the EOS column when the segment holds it
        if q + n == length + lead + 1 and e > 0 and (length == 0 or mask[base + length - 1] == 0):
            lab[e - 1] = ignore_value(lab)


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
        order = np.argsort(hashes, kind="mergesort")
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
    `total` appended: what varlen takes. A segment at the last column (seq_len) is a label only."""
    n = 0
    for k in range(len(seg)):
        n += seg[k, 1] < seq_len
    starts = np.empty(n + 1, dtype=np.int64)
    j = 0
    for k in range(len(seg)):
        if seg[k, 1] < seq_len:
            starts[j] = seg[k, 0] * seq_len + seg[k, 1]
            j += 1
    starts[:n].sort()
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


def warm_kernels(
    out_dtype: type, token_dtype: np.dtype, group_shards: int, best: bool, mask: bool
) -> None:
    """Compile (or load from numba's disk cache) the kernels a dataset will call, in this
    process, so that DataLoader workers forked from it start with them (a cold first call costs
    ~0.5 s each); `mask`: with bool labels rows too."""
    files = np.zeros(1, dtype=token_dtype)
    files.flags.writeable = False  # as the mapped shards are
    files = (files,) * group_shards
    one = np.ones(1, dtype=np.int64)
    out = np.zeros((1, 3), dtype=out_dtype)
    rows, seg = np.zeros(1, dtype=np.int64), np.zeros((4, SEG_FIELDS), dtype=np.int64)
    doc_file = np.zeros(1, np.int32)
    label_rows = [out[:, :0], out.copy()] + [np.zeros((1, 2), dtype=np.bool_)] * mask
    for labels in label_rows:
        gather_concat(
            out, labels, rows, 0, files, doc_file, 0 * one, one, 2 * one, 0, 2, 0, 0, 0, seg, 0
        )
        if best:
            bins, pieces = best_fit(2 * one, 3, 4, np.zeros(2, dtype=np.int64))
            gather_bins(
                out,
                labels,
                rows,
                files,
                doc_file,
                0 * one,
                one,
                bins,
                pieces,
                0,
                1,
                0,
                0,
                0,
                0,
                seg,
                0,
            )
    masks = np.zeros(1, dtype=np.uint8)
    masks.flags.writeable = False
    for labels in label_rows[1:]:
        mask_labels(labels, seg, np.zeros(1, dtype=np.int8))
        mask_targets(labels, seg[:0], (masks,) * group_shards, doc_file, 0 * one, one, 0)
    segment_ids(out, out.copy(), seg, np.zeros(1, np.int64), True, True)
    mixed_blocks(0, 0, np.array([[0, 0], [1, 1]], dtype=np.int64))
    varlen(input_starts(seg, 2, 4), np.ones(2, dtype=np.int64), 2)
