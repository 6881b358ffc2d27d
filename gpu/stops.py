"""Stop strings over streamed text: text that could still become a stop string is held back, and the
stop string itself (with anything after it) is never emitted."""

from __future__ import annotations

from collections.abc import Sequence


class StopMatcher:
    """Feed text deltas with ``push``; it returns what is safe to emit and whether a stop string matched.

    The stop string that completes first in the text (earliest end; among those, earliest start) ends
    generation, however the text was cut into deltas; the text before it is emitted. Without a match,
    the longest tail of the text that is a proper prefix of some stop string is held until later text
    settles it, or until ``flush`` (generation ended for another reason).
    """

    def __init__(self, stops: Sequence[str]) -> None:
        if any(not s for s in stops):
            raise ValueError("stop strings must be non-empty")
        self.stops = tuple(dict.fromkeys(stops))
        self._longest = max((len(s) for s in self.stops), default=0)
        self._held = ""
        self.matched: str | None = None

    @property
    def held(self) -> str:
        return self._held

    def push(self, text: str) -> tuple[str, bool]:
        """``(emit, stopped)`` after appending ``text`` to what is held."""
        if self.matched is not None:
            raise RuntimeError(f"stop string {self.matched!r} already matched")
        buf = self._held + text
        hits = [(pos + len(s), pos, s) for s in self.stops if (pos := buf.find(s)) >= 0]
        if hits:
            _, pos, self.matched = min(hits)
            self._held = ""
            return buf[:pos], True
        keep = self._partial_tail(buf)
        self._held = buf[len(buf) - keep:] if keep else ""
        return buf[: len(buf) - keep], False

    def flush(self) -> str:
        """Release the held text: generation ended without completing a stop string."""
        text, self._held = self._held, ""
        return text

    def _partial_tail(self, buf: str) -> int:
        """Length of the longest suffix of ``buf`` that is a proper prefix of a stop string."""
        for k in range(min(len(buf), self._longest - 1), 0, -1):
            tail = buf[len(buf) - k:]
            if any(s.startswith(tail) for s in self.stops):
                return k
        return 0
