"""What a run hands its workers, in order: the planned units still to do, then the ranges of each
big compressed file (a stream) as its reader cuts them, skipping ranges already committed. The
feed is lazy, so at most the in-flight ranges of a stream are held in memory."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from pipeline.errors import local_unit_error
from pipeline.tokenize.inputs import ReadOptions, WorkUnit, is_stream, iter_ranges


def todo_bytes(units: list[WorkUnit]) -> int:
    """Input bytes the units cover (a whole file counts its stored size, a Parquet unit its row
    groups')."""
    return sum(_unit_bytes(u) for u in units)


def _unit_bytes(unit: WorkUnit) -> int:
    if unit.fmt == "parquet":
        from pipeline.tokenize.inputs.parquet import unit_bytes

        return unit_bytes(unit)
    return unit.end - unit.start if unit.end >= 0 else unit.size


def skipped_note(feed: WorkFeed) -> str:
    """What a summary's bytes to do held that was already committed: a compressed stream's
    ranges found committed as its reader cut them (the file is read again to find them)."""
    if not feed.skipped_bytes:
        return ""
    return f" ({feed.skipped_bytes} of them in ranges found already committed, not tokenized)"


@dataclass(frozen=True)
class Work:
    """One unit to process, with its bytes when a stream's reader cut it."""

    unit: WorkUnit
    data: bytes | None = None
    # the planned input bytes it stands for, when not its unit's range: a stream's range counts
    # the compressed bytes read for it, as the stream counts in the run's bytes to do
    planned_bytes: int | None = None


class WorkFeed:
    """Iterates the Work of a run; afterwards `planned` holds the ids of every unit the run
    planned (streams' ranges included) and `skipped` the ranges found already committed
    (`skipped_bytes`: the compressed bytes they stand for, so far)."""

    def __init__(
        self,
        todo: list[WorkUnit],
        committed: set[str],
        opts: ReadOptions,
        storage_options: dict | None,
    ):
        self.todo = todo
        self.committed = committed
        self.opts = opts
        self.storage_options = storage_options
        self.planned: list[str] = []
        self.skipped = 0
        self.skipped_bytes = 0  # planned input bytes of the skipped ranges

    @property
    def has_streams(self) -> bool:
        return any(is_stream(u) for u in self.todo)

    def __len__(self) -> int:
        """Units known before reading (a stream's ranges are not)."""
        return sum(not is_stream(u) for u in self.todo)

    def __iter__(self) -> Iterator[Work]:
        for unit in self.todo:
            if not is_stream(unit):
                self.planned.append(unit.unit_id)
                yield Work(unit)
                continue
            cut = [0, 0]  # compressed position at the previous range's cut, and now

            def on_cut(position: int | None, cut: list[int] = cut, size: int = unit.size) -> None:
                cut[1] = min(position, size) if position is not None else cut[1]

            try:
                for piece, data in iter_ranges(unit, self.opts, self.storage_options, on_cut):
                    self.planned.append(piece.unit_id)
                    share, cut[0] = max(cut[1] - cut[0], 0), cut[1]
                    if piece.unit_id in self.committed:
                        self.skipped += 1
                        self.skipped_bytes += share
                        continue
                    yield Work(piece, data, share)
            except OSError as exc:  # the file removed (or unreadable) while it is cut
                raise local_unit_error(unit, exc) from exc
