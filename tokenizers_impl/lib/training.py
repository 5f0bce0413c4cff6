"""LiB training: the per-sentence walk (proposal, two-branch evaluation) and the end-of-document
updates (probation, re-ranking with deletion past the tail, tail marking), docs/algorithms.md
section 2 ("LiB")."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass

from tokenizers_impl.lib.lexicon import Lexicon


@dataclass(frozen=True)
class LiBParams:
    """Hyperparameters with the reference defaults (Yang et al.)."""

    alpha: float = 0.25  # chance to propose previous_chunk + c1 as a new unit
    omega: float = 1e-4  # tail fraction put on probation per document
    tau0: int = 10  # probation life, in documents
    delta: float = 0.2  # re-rank rate: a move is floor(rank * delta) + 1 places
    max_unit_len: int = 12  # longest unit, in characters
    seed: int = 0
    # a proposal becomes a unit the admit_after-th time it is proposed within one document
    # (1 = at once, as docs/algorithms.md; 2 = the authors' 2023 code, `memorize()`)
    admit_after: int = 1
    # an admitted unit starts on probation (life tau0) as docs/algorithms.md; False = the 2023 code:
    # it waits at the tail, where only tail marking (omega) puts it on probation
    new_on_probation: bool = True

    def __post_init__(self) -> None:
        checks = {
            "alpha": 0.0 <= self.alpha <= 1.0,
            "omega": 0.0 <= self.omega <= 1.0,
            "tau0": isinstance(self.tau0, int) and self.tau0 >= 1,
            "delta": 0.0 <= self.delta <= 1.0,
            "max_unit_len": isinstance(self.max_unit_len, int) and self.max_unit_len >= 1,
            "seed": isinstance(self.seed, int),
            "admit_after": isinstance(self.admit_after, int) and self.admit_after >= 1,
            "new_on_probation": isinstance(self.new_on_probation, bool),
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"invalid LiB hyperparameter(s): {', '.join(bad)} ({asdict(self)})")

    def to_dict(self) -> dict:
        return asdict(self)


def race(
    matches: Callable, text: str, pos: int, c1: str, c2: str, max_len: int
) -> tuple[list[str], list[str], int]:
    """Roll a greedy branch starting with c1 and one starting with c2 from `pos` until both end
    at the same position; return both chunk lists and that position. Unknown chars are 1-char chunks."""
    a, b = [c1], [c2]
    end_a, end_b = pos + len(c1), pos + len(c2)
    while end_a != end_b:
        if end_a < end_b:
            unit = matches(text, end_a, max_len)[0] or text[end_a]
            a.append(unit)
            end_a += len(unit)
        else:
            unit = matches(text, end_b, max_len)[0] or text[end_b]
            b.append(unit)
            end_b += len(unit)
    return a, b, end_a


def first_loses(lexicon: Lexicon, a: list[str], b: list[str]) -> bool:
    """Branch a loses if it has more chunks, or as many and a larger sum of ranks (unknown = |L|)."""
    if len(a) != len(b):
        return len(a) > len(b)
    unknown = len(lexicon)

    def rank(unit: str) -> int:
        return lexicon.rank(unit) if unit in lexicon else unknown

    return sum(map(rank, a)) > sum(map(rank, b))


def segment(lexicon: Lexicon, text: str, max_len: int) -> list[str]:
    """Reference segmentation with a live lexicon: greedy longest match, two-branch comparison,
    the better branch emitted whole. Unknown characters come out as 1-char chunks."""
    out: list[str] = []
    matches = lexicon.matches
    pos, n = 0, len(text)
    while pos < n:
        c1, c2 = matches(text, pos, max_len)
        if c1 is None:
            out.append(text[pos])
            pos += 1
        elif c2 is None:
            out.append(c1)
            pos += len(c1)
        else:
            a, b, pos = race(matches, text, pos, c1, c2, max_len)
            out.extend(b if first_loses(lexicon, a, b) else a)
    return out


class LiBTrainer:
    """Online lexicon learner: feed documents (lists of sentences) one at a time."""

    def __init__(
        self, params: LiBParams, max_units: int | None = None, lexicon: Lexicon | None = None
    ):
        self.params = params
        self.max_units = max_units
        self.lexicon = lexicon if lexicon is not None else Lexicon()
        self.rng = random.Random(params.seed)
        self.probation: dict[str, int] = {}  # unit -> documents of life left
        self.pending: list[tuple[str, bool]] = []  # (unit, True = reward / False = punishment)
        self.proposed: dict[str, int] = {}  # proposals not yet admitted, this document: times seen
        self.documents = 0
        self.sentences = 0

    def train_document(self, sentences: list[str]) -> None:
        for sentence in sentences:
            self.walk(sentence)
        self.end_document()

    def walk(self, sentence: str) -> None:
        """Steps 1-4 over one sentence: match, propose, evaluate, advance."""
        lex, params, probation, pending = self.lexicon, self.params, self.probation, self.pending
        max_len, alpha, rand = params.max_unit_len, params.alpha, self.rng.random
        admit_after, proposed = params.admit_after, self.proposed
        on_probation = params.new_on_probation
        lexicon_matches = lex.matches
        found: dict[int, tuple[str | None, str | None]] = {}  # matches by position

        def matches(text: str, at: int, longest: int) -> tuple[str | None, str | None]:
            hit = found.get(at)
            if hit is None:
                hit = found[at] = lexicon_matches(text, at, longest)
            return hit

        pos, n, previous = 0, len(sentence), None
        while pos < n:
            c1, c2 = matches(sentence, pos, max_len)
            if c1 is None:  # an unknown character joins the lexicon when first seen
                c1 = sentence[pos]
                lex.append(c1)
                found.clear()
            if previous is not None and rand() < alpha:
                proposal = previous + c1
                if len(proposal) <= max_len and proposal not in lex:
                    seen = proposed.get(proposal, 0) + 1
                    if seen < admit_after:
                        proposed[proposal] = seen
                    else:
                        proposed.pop(proposal, None)
                        lex.append(proposal)
                        if on_probation:
                            probation[proposal] = params.tau0
                        if sentence.find(proposal, pos) >= 0:  # later matches may now differ
                            found.clear()
            if c2 is not None:
                a, b, _ = race(matches, sentence, pos, c1, c2, max_len)
                if first_loses(lex, a, b):
                    pending.append((c1, False))
                    pending.append((b[0], True))
                    probation.pop(b[0], None)
                else:
                    pending.append((c1, True))
                    probation.pop(c1, None)
            previous = c1
            pos += len(c1)
        self.sentences += 1

    def end_document(self) -> None:
        """Steps 5-7: probation countdown, re-ranking in order, tail marking; then the hard cap."""
        lex = self.lexicon
        self.proposed.clear()  # admit_after counts proposals within one document
        for unit, life in list(self.probation.items()):
            if life <= 1:
                del self.probation[unit]
                if unit in lex:
                    lex.delete(unit)
            else:
                self.probation[unit] = life - 1
        for unit in lex.rerank_all(self.pending, self.params.delta):  # step 6 in one kernel call
            self.probation.pop(unit, None)
        self.pending.clear()
        self.mark_tail()
        if self.max_units is not None:
            self.enforce_cap(self.max_units)
        self.documents += 1

    def mark_tail(self) -> None:
        """Put the bottom max(1, ceil(omega * |L|)) units not on probation on probation."""
        lex, probation = self.lexicon, self.probation
        wanted = max(1, math.ceil(self.params.omega * len(lex)))
        marked = []
        for unit in lex.iter_from_tail():
            if len(unit) > 1 and unit not in probation:
                marked.append(unit)
                if len(marked) == wanted:
                    break
        for unit in marked:
            probation[unit] = self.params.tau0

    def enforce_cap(self, max_units: int, protect_chars: bool = True) -> None:
        """Delete units from the tail until at most `max_units` remain."""
        lex = self.lexicon
        excess = len(lex) - max_units
        if excess <= 0:
            return
        doomed = []
        for unit in lex.iter_from_tail():
            if len(unit) > 1 or not protect_chars:
                doomed.append(unit)
                if len(doomed) == excess:
                    break
        for unit in doomed:
            lex.delete(unit)
            self.probation.pop(unit, None)
