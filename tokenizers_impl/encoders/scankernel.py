"""The compiled loop of `unassigned.risky_texts` (numba, cached on disk; imported only for big
scans: importing numba costs about a second)."""

from __future__ import annotations

from numba import njit


@njit(cache=True, nogil=True)
def any_marked(units, marks):  # noqa: ANN001, ANN201
    """Whether marks[u] is non-zero for any code unit u (stops at the first). (Hot loop.)"""
    for i in range(units.shape[0]):  # noqa: SIM110 (numba: no generator in any())
        if marks[units[i]]:
            return True
    return False
