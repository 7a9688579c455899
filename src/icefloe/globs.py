"""Glob patterns matched in time linear in the key's length.

Anyone who can write to a landing bucket chooses the keys, so matching must not backtrack: a
regex translation of ``*_*_*_*_*_*.csv`` took seconds on one 241-character key. Here a pattern is
compiled to a Thompson NFA and simulated over the key one character at a time, keeping the set
of live states (at most the pattern's size), so a key costs O(len(key) x len(pattern)) at worst;
state sets seen before are cached as DFA transitions, so common keys cost one dict look-up per
character.

Syntax: ``*`` and ``?`` stay within one path segment, ``**`` crosses segments (``a/**/b`` also
matches ``a/b``, ``**/x`` matches ``x``), ``[a-z]``/``[!a-z]`` (or ``[^a-z]``) are character
classes, ``{x,y}`` alternatives (nestable); every other character is literal.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from icefloe.errors import ConfigurationError

# A character test: ("lit", c) · ("seg",) any but "/" · ("any",) · ("class", negated, ranges).
Test = tuple[object, ...]
_SEG: Test = ("seg",)
_ANY: Test = ("any",)
# A parsed piece: ("one", test) · ("loop", test) zero or more · ("dirs", None) · ("alt", branches).
_Piece = tuple[str, Any]
# DFA transitions cached per pattern, cleared past this many (bounds memory on hostile keys).
_MAX_CACHED_TRANSITIONS = 4096


@dataclass
class _State:
    test: Test | None = None  # None: an epsilon state (or the accepting one)
    next: int = -1
    eps: list[int] = field(default_factory=list)


def _passes(test: Test, c: str) -> bool:
    kind = test[0]
    if kind == "lit":
        return c == test[1]
    if kind == "seg":
        return c != "/"
    if kind == "any":
        return True
    negated, ranges = test[1], test[2]
    assert isinstance(ranges, tuple)
    inside = any(lo <= c <= hi for lo, hi in ranges)
    return inside != negated


class Glob:
    """A compiled glob; :meth:`match` tests a whole key (below the ingestion's prefix)."""

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        self._states: list[_State] = [_State()]  # state 0 accepts
        self._pos = 0
        start = self._compile(self._parse(top=True), 0)
        self._start = self._closure({start})
        self._transitions: dict[tuple[frozenset[int], str], frozenset[int]] = {}

    def match(self, key: str) -> bool:
        current = self._start
        transitions = self._transitions
        for c in key:
            step = transitions.get((current, c))
            if step is None:
                step = self._step(current, c)
                if len(transitions) >= _MAX_CACHED_TRANSITIONS:
                    transitions.clear()
                transitions[(current, c)] = step
            if not step:
                return False
            current = step
        return 0 in current

    def _representatives(self) -> set[str]:
        """Characters that between them take every truth value combination of this glob's tests."""
        points = {0, ord("/"), ord("a"), 0x10FFFF}
        for state in self._states:
            test = state.test
            if test is None or test[0] in ("seg", "any"):
                continue
            if test[0] == "lit":
                assert isinstance(test[1], str)
                points.add(ord(test[1]))
            else:
                assert isinstance(test[2], tuple)
                for lo, hi in test[2]:
                    points.update((ord(lo), ord(hi)))
        chars = {chr(p + d) for p in points for d in (-1, 0, 1) if 0 <= p + d <= 0x10FFFF}
        return {c for c in chars if not 0xD800 <= ord(c) <= 0xDFFF}

    # -- simulation --------------------------------------------------------------------------

    def _step(self, current: frozenset[int], c: str) -> frozenset[int]:
        targets = {s.next for s in (self._states[i] for i in current) if s.test is not None and _passes(s.test, c)}
        return self._closure(targets)

    def _closure(self, seeds: set[int]) -> frozenset[int]:
        seen: set[int] = set()
        stack = list(seeds)
        while stack:
            i = stack.pop()
            if i in seen:
                continue
            seen.add(i)
            stack.extend(self._states[i].eps)
        return frozenset(seen)

    # -- compilation ---------------------------------------------------------------------------

    def _new(self, test: Test | None = None, nxt: int = -1, eps: list[int] | None = None) -> int:
        self._states.append(_State(test, nxt, eps or []))
        return len(self._states) - 1

    def _compile(self, pieces: list[_Piece], then: int) -> int:
        """States for ``pieces`` followed by state ``then``, built back to front."""
        for kind, arg in reversed(pieces):
            if kind == "one":
                then = self._new(arg, then)
            elif kind == "loop":  # zero or more characters passing arg
                loop = self._new()
                self._states[loop].eps = [self._new(arg, loop), then]
                then = loop
            elif kind == "dirs":  # (any* "/")?: zero or more whole directories
                slash = self._new(("lit", "/"), then)
                then = self._new(eps=[self._compile([("loop", _ANY)], slash), then])
            else:
                then = self._new(eps=[self._compile(branch, then) for branch in arg])
        return then

    def _parse(self, *, top: bool) -> list[_Piece]:
        """Parse up to the end of this alternative (``,``/``}`` inside braces, else the end)."""
        pieces: list[_Piece] = []
        p, n = self.pattern, len(self.pattern)
        while self._pos < n:
            c = p[self._pos]
            if not top and c in ",}":
                break
            if c == "*":
                if p.startswith("**", self._pos):
                    at_segment_start = self._pos == 0 or p[self._pos - 1] == "/"
                    if at_segment_start and p.startswith("**/", self._pos):
                        pieces.append(("dirs", None))
                        self._pos += 3
                        continue
                    pieces.append(("loop", _ANY))
                    self._pos += 2
                    continue
                pieces.append(("loop", _SEG))
            elif c == "?":
                pieces.append(("one", _SEG))
            elif c == "[":
                pieces.append(("one", self._char_class()))
            elif c == "{":
                self._pos += 1
                pieces.append(("alt", self._alternatives()))
                continue
            else:
                pieces.append(("one", ("lit", c)))
            self._pos += 1
        return pieces

    def _alternatives(self) -> list[list[_Piece]]:
        """The branches of ``{a,b,...}``; leaves pos after the closing ``}``."""
        branches: list[list[_Piece]] = []
        while True:
            branches.append(self._parse(top=False))
            if self._pos >= len(self.pattern):
                raise ConfigurationError(f"malformed glob {self.pattern!r}: '{{' without '}}'")
            self._pos += 1
            if self.pattern[self._pos - 1] == "}":
                return branches

    def _char_class(self) -> Test:
        p, i = self.pattern, self._pos + 1
        negated = p.startswith(("!", "^"), i)
        if negated:
            i += 1
        end = p.find("]", i)
        if end == -1:
            raise ConfigurationError(f"malformed glob {p!r}: '[' without ']'")
        body = p[i:end]
        if not body:
            raise ConfigurationError(f"malformed glob {p!r}: empty character class")
        ranges: list[tuple[str, str]] = []
        j = 0
        while j < len(body):
            if j + 2 < len(body) and body[j + 1] == "-":
                lo, hi = body[j], body[j + 2]
                if lo > hi:
                    raise ConfigurationError(f"malformed glob {p!r}: bad range {lo}-{hi}")
                ranges.append((lo, hi))
                j += 3
            else:
                ranges.append((body[j], body[j]))
                j += 1
        self._pos = end
        return ("class", negated, tuple(ranges))


_MAX_PAIRS = 20_000  # product states explored before answering "may overlap" (the safe side)


def may_overlap(outer: str | None, inner: str | None, *, inner_below: str = "") -> bool:
    """Can one key match both globs? ``outer`` is matched against the key below a prefix P,
    ``inner`` against the key below the longer prefix P + ``inner_below``; None matches anything.

    Decided exactly on the NFAs' product: a character test is an interval set, so the characters
    at and around every interval bound and literal of the two patterns represent every character.
    """
    a, b = compile_glob(outer if outer is not None else "**"), compile_glob(inner if inner is not None else "**")
    start_a = a._start
    for c in inner_below:
        start_a = a._step(start_a, c)
        if not start_a:
            return False
    alphabet = a._representatives() | b._representatives()
    seen = {(start_a, b._start)}
    todo = [(start_a, b._start)]
    while todo:
        if len(seen) > _MAX_PAIRS:
            return True
        sa, sb = todo.pop()
        if 0 in sa and 0 in sb:
            return True
        for c in alphabet:
            na, nb = a._step(sa, c), b._step(sb, c)
            if na and nb and (na, nb) not in seen:
                seen.add((na, nb))
                todo.append((na, nb))
    return False


@lru_cache(maxsize=64)
def compile_glob(pattern: str) -> Glob:
    """Compile ``pattern`` (cached); :class:`ConfigurationError` if it is malformed."""
    return Glob(pattern)
