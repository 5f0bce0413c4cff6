"""Recount-per-merge batch merging, the plain O(m N) reading of docs/algorithms.md section 3
("Dynamic batch-level merging").

Kept as the oracle for `merging.merge_batch_ids` (tests) and as the speed baseline (bench).
It shares nothing with the incremental code but the `BaseBatch` input: validity is checked here
directly on byte spans against each document's pre-token segments.
"""

from __future__ import annotations

import numpy as np

from tokenizers_impl.dynamic_merge.merging import BaseBatch, MergeResult


def recount_merges(batch: BaseBatch, first_new_id: int, max_merges: int | None) -> MergeResult:
    """Each step: count every valid adjacent pair of the batch (overlapping occurrences count), take
    the most frequent (ties: first seen scanning documents in order), replace its non-overlapping
    occurrences left to right."""
    docs = []  # per document: [ids, first-byte segment, last-byte segment, mergeable]
    for d, ids in enumerate(batch.doc_ids()):
        s, e = batch.offsets[d], batch.offsets[d + 1]
        lengths = batch.byte_lengths[s:e]
        ends = np.cumsum(lengths)
        segment_of = np.zeros(int(ends[-1]) if len(ends) else 0, dtype=np.int64)
        segment_of[batch.boundaries[d][1:]] = 1
        segment_of = np.cumsum(segment_of)
        starts = ends - lengths
        ok = batch.mergeable[s:e]
        first_seg = [int(segment_of[a]) if m else -1 for a, m in zip(starts, ok, strict=True)]
        last_seg = [int(segment_of[b - 1]) if m else -2 for b, m in zip(ends, ok, strict=True)]
        docs.append([ids.astype(np.int64).tolist(), first_seg, last_seg])

    l0 = sum(len(doc[0]) for doc in docs)
    vocab: dict[int, tuple[int, ...]] = {}
    merges: list[tuple[int, int]] = []
    replaced_counts: list[int] = []
    new_id = first_new_id
    while max_merges is None or len(merges) < max_merges:
        counts: dict[tuple[int, int], int] = {}
        for ids, first_seg, last_seg in docs:
            for k in range(len(ids) - 1):
                if first_seg[k] == last_seg[k + 1]:
                    pair = (ids[k], ids[k + 1])
                    counts[pair] = counts.get(pair, 0) + 1
        if not counts:
            break
        best = max(counts, key=counts.__getitem__)  # the first inserted among equal counts
        replaced = 0
        for doc in docs:
            ids, first_seg, last_seg = doc
            out_ids, out_first, out_last = [], [], []
            k = 0
            while k < len(ids):
                if (
                    k + 1 < len(ids)
                    and (ids[k], ids[k + 1]) == best
                    and first_seg[k] == last_seg[k + 1]
                ):
                    out_ids.append(new_id)
                    out_first.append(first_seg[k])
                    out_last.append(last_seg[k + 1])
                    replaced += 1
                    k += 2
                else:
                    out_ids.append(ids[k])
                    out_first.append(first_seg[k])
                    out_last.append(last_seg[k])
                    k += 1
            doc[:] = [out_ids, out_first, out_last]
        vocab[new_id] = vocab.get(best[0], (best[0],)) + vocab.get(best[1], (best[1],))
        merges.append(best)
        replaced_counts.append(replaced)
        new_id += 1

    lengths = [len(doc[0]) for doc in docs]
    offsets = np.zeros(len(docs) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    flat = np.array([i for doc in docs for i in doc[0]], dtype=np.uint32)
    return MergeResult(
        flat=flat,
        offsets=offsets,
        vocab=vocab,
        merges=merges,
        replaced=replaced_counts,
        l0=l0,
        lm=int(offsets[-1]),
        lword=batch.word_length(),
    )
