"""The loader's compiled copy and label kernels (numba, cached on disk once per machine; the
layout kernels, best_fit packing, the mixture's order, ids and cu_seqlens, are in plankernels.py
and importable from here).

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
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic, overload

from pipeline.loader.plankernels import (  # noqa: F401 (importable from here as before)
    best_fit,
    input_starts,
    mixed_blocks,
    segment_ids,
    varlen,
)

IGNORE = -100  # torch's cross_entropy ignore_index
SEG_FIELDS = 5  # row, column, length, document (-1: padding), offset in the document's stream
AHEAD = 4096  # tokens of a piece prefetched ahead at most (8 KB of uint16: a 2048 window whole)
LINE = 64  # bytes of a cache line


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


@intrinsic
def prefetch(typingctx, array, index):  # noqa: ANN001, ANN201, ARG001
    """A hint (llvm.prefetch: read, locality 2, i.e. prefetcht1: into L2, not L1, whose few
    outstanding misses a whole window's lines would fill) that array[index] is read soon; never
    faults, whatever the index."""

    def codegen(context, builder, signature, args):  # noqa: ANN001, ANN202, ARG001
        data = context.make_array(signature.args[0])(context, builder, args[0]).data
        byte = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        hint = cgutils.get_or_insert_function(
            builder.module,
            ir.FunctionType(ir.VoidType(), [byte, i32, i32, i32]),
            "llvm.prefetch.p0i8",
        )
        at = builder.bitcast(builder.gep(data, [args[1]]), byte)
        builder.call(hint, [at, i32(0), i32(2), i32(1)])
        return context.get_dummy_value()

    return types.void(array, index), codegen


@njit(cache=True, nogil=True, inline="always")
def prefetch_start(files, doc_file, doc_start, doc_len, d, q, n):  # noqa: ANN001, ANN201, PLR0913
    """Prefetch the n stream positions of document d from q (the first AHEAD tokens): pieces lie
    at random places of the shards, and the hardware prefetcher, which starts anew at each, keeps
    too few lines in flight to hide the memory's latency on pieces of a few KB (one window
    ahead, the best-fit copy runs ~0.6 -> ~0.44 ns a token in int64, see docs/loader.md)."""
    tokens = files[doc_file[d]]
    start = doc_start[d] + q
    stop = min(start + min(n, AHEAD), doc_start[d] + doc_len[d])
    for t in range(start, stop, LINE // tokens.itemsize):
        prefetch(tokens, numba.uint64(t))


@njit(cache=True, nogil=True, inline="always")
def prefetch_bin(files, doc_file, doc_start, doc_len, bins, pieces, b):  # noqa: ANN001, ANN201, PLR0913
    """prefetch_start of each piece of best-fit bin b."""
    for p in range(bins[b], bins[b + 1]):
        d, q, n = pieces[p, 0], pieces[p, 1], pieces[p, 2]
        prefetch_start(files, doc_file, doc_start, doc_len, d, q, n)


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
    [ends[d] - (doc_len[d] + 1 + lead), ends[d]). The next document (its first AHEAD tokens) is
    prefetched while one is copied. Appends a segment per slice to seg (from nseg); returns (new
    flat position, new segment count)."""
    window = out.shape[1]
    d = np.searchsorted(ends, rel, side="right")  # the document holding position rel
    pos = rel
    while pos < stop:
        length, end = doc_len[d], ends[d]
        first = end - length - 1 - lead
        hi = (stop if stop < end else end) - first
        q = pos - first
        tokens = files[doc_file[d]]
        if end < stop and d + 1 < len(ends):  # the next document's start
            prefetch_start(files, doc_file, doc_start, doc_len, d + 1, 0, doc_len[d + 1])
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
    (labels IGNORE where it is the target); the next bin's pieces are prefetched while one is
    copied. Returns the new segment count."""
    window = out.shape[1]
    if b0 < b1:
        prefetch_bin(files, doc_file, doc_start, doc_len, bins, pieces, b0)
    for b in range(b0, b1):
        if b + 1 < b1:
            prefetch_bin(files, doc_file, doc_start, doc_len, bins, pieces, b + 1)
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
def mask_labels(labels, seg, mask):  # noqa: ANN001, ANN201
    """IGNORE over the labels whose targets are in segments of mask 1 (skipped documents), and
    at the first target of segments of mask 2 (a segment's first token after another one in its
    row: cross-document labels). Padding's labels are written by the readers."""
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
