"""Order statistics for the LiB rank order: an implicit treap (a randomised balanced binary tree
keyed by position, not by value) in one int32 array, operated on by numba kernels.

Layout of `tree` (shape (5, capacity + 1)); node 0 is the null node (size 0):
    tree[LEFT, x], tree[RIGHT, x], tree[PARENT, x]  child / parent node ids (0 = none)
    tree[SIZE, x]                                    nodes in x's subtree
    tree[FLAGS, x]                                   ALIVE | SINGLE (a one-character unit)
    tree[PARENT, 0]                                  the root

Every node's in-order position is its rank. Heap priorities come from a hash of the node id, so
the tree's shape is random (expected depth O(log n)) but deterministic. Costs, all expected
O(log n): rank(x) walks up from x, select(r) walks down, remove rotates x down to a leaf and
detaches it, insert_at(x, r) descends by subtree sizes and rotates x up. A move = remove +
insert_at, independent of the distance moved.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

LEFT, RIGHT, PARENT, SIZE, FLAGS = 0, 1, 2, 3, 4
ALIVE, SINGLE = 2, 1


@njit(cache=True, nogil=True)
def _priority(x):
    z = (np.uint64(x) + np.uint64(0x9E3779B97F4A7C15)) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(31))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(29))


@njit(cache=True, nogil=True)
def _pull(tree, x):
    tree[SIZE, x] = 1 + tree[SIZE, tree[LEFT, x]] + tree[SIZE, tree[RIGHT, x]]


@njit(cache=True, nogil=True)
def _rotate_up(tree, x):
    """Rotate x above its parent p (sizes of p and x recomputed; the rest unchanged)."""
    p = tree[PARENT, x]
    g = tree[PARENT, p]
    if tree[LEFT, p] == x:
        b = tree[RIGHT, x]
        tree[LEFT, p] = b
        tree[RIGHT, x] = p
    else:
        b = tree[LEFT, x]
        tree[RIGHT, p] = b
        tree[LEFT, x] = p
    if b != 0:
        tree[PARENT, b] = p
    tree[PARENT, p] = x
    tree[PARENT, x] = g
    if g == 0:
        tree[PARENT, 0] = x  # new root
    elif tree[LEFT, g] == p:
        tree[LEFT, g] = x
    else:
        tree[RIGHT, g] = x
    _pull(tree, p)
    _pull(tree, x)


@njit(cache=True, nogil=True)
def insert_at(tree, x, r):
    """Insert node x (not in the tree) so that its rank is r (0 <= r <= size)."""
    tree[LEFT, x] = 0
    tree[RIGHT, x] = 0
    tree[SIZE, x] = 1
    cur = tree[PARENT, 0]
    if cur == 0:
        tree[PARENT, x] = 0
        tree[PARENT, 0] = x
        return
    while True:
        tree[SIZE, cur] += 1
        left_size = tree[SIZE, tree[LEFT, cur]]
        if r <= left_size:
            if tree[LEFT, cur] == 0:
                tree[LEFT, cur] = x
                break
            cur = tree[LEFT, cur]
        else:
            r -= left_size + 1
            if tree[RIGHT, cur] == 0:
                tree[RIGHT, cur] = x
                break
            cur = tree[RIGHT, cur]
    tree[PARENT, x] = cur
    prio = _priority(x)
    while tree[PARENT, x] != 0 and prio > _priority(tree[PARENT, x]):
        _rotate_up(tree, x)


@njit(cache=True, nogil=True)
def remove(tree, x):
    """Detach node x from the tree."""
    while True:
        left = tree[LEFT, x]
        right = tree[RIGHT, x]
        if left == 0 and right == 0:
            break
        if left == 0 or (right != 0 and _priority(right) > _priority(left)):
            _rotate_up(tree, right)
        else:
            _rotate_up(tree, left)
    p = tree[PARENT, x]
    if p == 0:
        tree[PARENT, 0] = 0
    else:
        if tree[LEFT, p] == x:
            tree[LEFT, p] = 0
        else:
            tree[RIGHT, p] = 0
        while p != 0:
            tree[SIZE, p] -= 1
            p = tree[PARENT, p]
    tree[PARENT, x] = 0
    tree[SIZE, x] = 0


@njit(cache=True, nogil=True)
def rank(tree, x):
    r = tree[SIZE, tree[LEFT, x]]
    while tree[PARENT, x] != 0:
        p = tree[PARENT, x]
        if tree[RIGHT, p] == x:
            r += tree[SIZE, tree[LEFT, p]] + 1
        x = p
    return r


@njit(cache=True, nogil=True)
def select(tree, r):
    """The node at rank r (0 <= r < size)."""
    cur = tree[PARENT, 0]
    while True:
        left_size = tree[SIZE, tree[LEFT, cur]]
        if r < left_size:
            cur = tree[LEFT, cur]
        elif r == left_size:
            return cur
        else:
            r -= left_size + 1
            cur = tree[RIGHT, cur]


@njit(cache=True, nogil=True)
def from_tail(tree, skip, count):
    """Up to `count` nodes by rank from the tail, after skipping the last `skip`."""
    n = tree[SIZE, tree[PARENT, 0]]
    count = max(0, min(count, n - skip))
    out = np.empty(count, dtype=np.int32)
    if count == 0:
        return out
    x = select(tree, n - 1 - skip)
    for i in range(count):
        out[i] = x
        if tree[LEFT, x] != 0:  # predecessor: rightmost node of the left subtree
            x = tree[LEFT, x]
            while tree[RIGHT, x] != 0:
                x = tree[RIGHT, x]
        else:  # or the first ancestor we reach from its right side
            while tree[PARENT, x] != 0 and tree[LEFT, tree[PARENT, x]] == x:
                x = tree[PARENT, x]
            x = tree[PARENT, x]
    return out


@njit(cache=True, nogil=True)
def move(tree, x, r):
    remove(tree, x)
    insert_at(tree, x, r)


@njit(cache=True, nogil=True)
def in_order(tree):
    """Node ids by rank."""
    root = tree[PARENT, 0]
    out = np.empty(tree[SIZE, root], dtype=np.int32)
    stack = np.empty(max(1, tree.shape[1]), dtype=np.int32)
    top = 0
    m = 0
    cur = root
    while cur != 0 or top > 0:
        while cur != 0:
            stack[top] = cur
            top += 1
            cur = tree[LEFT, cur]
        top -= 1
        cur = stack[top]
        out[m] = cur
        m += 1
        cur = tree[RIGHT, cur]
    return out


@njit(cache=True, nogil=True)
def depth(tree):
    """The depth of the deepest node (0 for an empty tree)."""
    deepest = 0
    for x in range(1, tree.shape[1]):
        if tree[FLAGS, x] & ALIVE:
            d = 1
            y = x
            while tree[PARENT, y] != 0:
                y = tree[PARENT, y]
                d += 1
            deepest = max(deepest, d)
    return deepest


@njit(cache=True, nogil=True)
def rerank_all(tree, nodes, rewards, delta):
    """Apply rewards (True) / punishments (False) to `nodes` in order (0 = not in the lexicon,
    skipped), docs/algorithms.md section 2 ("LiB") step 6: a node at rank r > 0 moves
    floor(r * delta) + 1 places; pushed past the tail it is deleted (cleared ALIVE, returned in
    order), unless it is a single character, which stays at the tail. Nodes deleted earlier in the
    list are skipped."""
    deleted = np.empty(len(nodes), dtype=np.int32)
    n_deleted = 0
    for i in range(len(nodes)):
        x = nodes[i]
        if x == 0 or not tree[FLAGS, x] & ALIVE:
            continue
        r = rank(tree, x)
        if r == 0:
            continue
        step = np.int64(math.floor(r * delta)) + 1
        n = tree[SIZE, tree[PARENT, 0]]
        if rewards[i]:
            move(tree, x, max(0, r - step))
        elif r + step < n:
            move(tree, x, r + step)
        elif tree[FLAGS, x] & SINGLE:
            move(tree, x, n - 1)
        else:
            remove(tree, x)
            tree[FLAGS, x] = 0
            deleted[n_deleted] = x
            n_deleted += 1
    return deleted[:n_deleted]
