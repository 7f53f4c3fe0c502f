"""Masking secret values: every form a value may take in output replaced
by ``***``.

The forms of a value: as it is, JSON-escaped (with and without ``\\u``
escapes), base64 (standard and URL-safe alphabets, at each of the three
alignments the value may have inside longer base64 text), URL-encoded
(``%XX`` upper and lower case, ``+`` for spaces) and hex (lower and upper
case). Derived forms shorter than :data:`MIN_FORM_LENGTH` are left out: they
would mask ordinary text.

:class:`Masker` masks whole texts (a stage's reason, an error message);
:class:`StreamMasker` masks a stream that arrives in chunks (a stage's
output), holding back, between chunks, only the bytes that could begin a
value (at most the longest form minus one byte).
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable, Mapping
from urllib.parse import quote, quote_plus

MASK = b"***"
#: Shortest derived form kept (a value itself is always masked).
MIN_FORM_LENGTH = 4

_ESCAPE = re.compile(r"%[0-9A-F]{2}")
#: Base64 characters to drop at the start for a value preceded by 0, 1 or 2
#: bytes of its 3-byte group (they also encode the bytes before it), and
#: kept of the last group for a value ending 0, 1 or 2 bytes into one.
_B64_HEAD = (0, 2, 3)
_B64_TAIL = (0, 1, 2)


def _base64_forms(raw: bytes) -> set[bytes]:
    """The base64 text that ``raw`` always encodes to, whatever bytes come
    before and after it: one form per alignment and alphabet."""
    forms: set[bytes] = set()
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        for lead in range(3):
            encoded = encode(b"\0" * lead + raw)
            total = lead + len(raw)
            end = total // 3 * 4 + _B64_TAIL[total % 3]
            forms.add(encoded[_B64_HEAD[lead] : end])
    return forms


def _lower_escapes(text: str) -> str:
    return _ESCAPE.sub(lambda m: m.group(0).lower(), text)


def value_forms(value: str) -> set[bytes]:
    """Every form of ``value`` that is masked (UTF-8 bytes); empty for ""."""
    if not value:
        return set()
    raw = value.encode()
    forms = {raw}
    for ascii_only in (True, False):
        forms.add(json.dumps(value, ensure_ascii=ascii_only)[1:-1].encode())
    forms |= _base64_forms(raw)
    for quoted in (quote(value, safe=""), quote_plus(value, safe="")):
        forms.add(quoted.encode())
        forms.add(_lower_escapes(quoted).encode())
    forms.add(raw.hex().encode())
    forms.add(raw.hex().upper().encode())
    return {form for form in forms if form == raw or len(form) >= MIN_FORM_LENGTH}


class Masker:
    """Masks the values of some secrets, in every form (:func:`value_forms`).

    ``secrets`` maps names to values. Immutable, so one masker may be used
    by several threads at once.
    """

    def __init__(self, secrets: Mapping[str, str]) -> None:
        owners: dict[bytes, str] = {}
        for name, value in sorted(secrets.items()):
            for form in value_forms(value):
                owners.setdefault(form, name)
        self._owners = owners
        #: Longest first: where two forms start at one place, the longer wins.
        self.patterns: tuple[bytes, ...] = tuple(sorted(owners, key=len, reverse=True))
        self.longest = len(self.patterns[0]) if self.patterns else 0
        starts: dict[int, list[bytes]] = {}
        for pattern in self.patterns:
            starts.setdefault(pattern[0], []).append(pattern)
        self._starts = starts

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def spans(self, data: bytes, start: int = 0) -> list[tuple[int, int]]:
        """Where forms occur in ``data`` and reach past ``start``: sorted,
        overlapping and touching ones merged, each cut to begin at
        ``start`` at the earliest."""
        found: list[tuple[int, int]] = []
        for pattern in self.patterns:
            size = len(pattern)
            at = data.find(pattern, max(0, start - size + 1))
            while at >= 0:
                found.append((max(at, start), at + size))
                at = data.find(pattern, at + 1)
        if len(found) < 2:
            return found
        found.sort()
        merged = [found[0]]
        for begin, end in found[1:]:
            last_begin, last_end = merged[-1]
            if begin <= last_end:
                merged[-1] = (last_begin, max(last_end, end))
            else:
                merged.append((begin, end))
        return merged

    def owner(self, text: str) -> str | None:
        """The name of a secret whose value, in some form, is in ``text``."""
        data = text.encode(errors="surrogatepass")
        for pattern in self.patterns:
            if pattern in data:
                return self._owners[pattern]
        return None

    def mask(self, data: bytes) -> bytes:
        """``data`` with every form replaced by ``***``."""
        if not self.patterns:
            return data
        return _render(data, 0, len(data), self.spans(data))

    def mask_text(self, text: str) -> str:
        """``text`` with every form replaced by ``***``."""
        if not self.patterns or not text:
            return text
        data = text.encode(errors="surrogatepass")
        masked = self.mask(data)
        return text if masked is data else masked.decode(errors="replace")

    def partial_start(self, data: bytes, start: int) -> int:
        """Where the longest end of ``data`` that could begin a form (and is
        not one yet) starts, at ``start`` or later; ``len(data)`` if none."""
        first = max(start, len(data) - self.longest + 1)
        for at in range(first, len(data)):
            candidates = self._starts.get(data[at])
            if candidates is None:
                continue
            rest = data[at:]
            if any(len(p) > len(rest) and p.startswith(rest) for p in candidates):
                return at
        return len(data)

    def stream(self) -> StreamMasker:
        return StreamMasker(self)


def _render(data: bytes, begin: int, end: int, spans: Iterable[tuple[int, int]]) -> bytes:
    """``data[begin:end]`` with the spans (inside it) replaced by ``***``."""
    pieces: list[bytes] = []
    at = begin
    for span_begin, span_end in spans:
        if span_begin >= end:
            break
        pieces.append(data[at:span_begin])
        pieces.append(MASK)
        at = span_end
    if not pieces:
        return data if (begin, end) == (0, len(data)) else data[begin:end]
    pieces.append(data[at:end])
    return b"".join(pieces)


class StreamMasker:
    """Masks one stream fed in chunks of any size.

    :meth:`feed` returns what can be written now; the bytes that could
    begin a form are held until the next chunk shows whether they do
    (never more than the longest form minus one byte); :meth:`flush`
    returns them at the end. A form split across chunks is masked as one.
    Not thread-safe: one stream, one thread.
    """

    def __init__(self, masker: Masker) -> None:
        self._masker = masker
        self._keep = max(masker.longest - 1, 0)
        #: The last bytes already written (unmasked), for forms that began
        #: in them; and the bytes held back.
        self._context = b""
        self._pending = b""

    @property
    def held(self) -> int:
        """Bytes fed but not returned yet."""
        return len(self._pending)

    def feed(self, data: bytes | memoryview) -> bytes:
        masker = self._masker
        if not masker:
            return bytes(data)
        context = self._context
        buffer = b"".join((context, self._pending, data))
        base = len(context)
        spans = masker.spans(buffer, base)
        hold = masker.partial_start(buffer, base)
        for span_begin, span_end in spans:
            if span_begin < hold < span_end:
                # the bytes held would end a form already masked: write it
                # whole, and hold only what may begin another one
                hold = masker.partial_start(buffer, span_end)
        out = _render(buffer, base, hold, spans)
        self._pending = buffer[hold:]
        self._context = buffer[max(0, hold - self._keep) : hold]
        return out

    def flush(self) -> bytes:
        """What is held back, masked; the stream starts over afterwards."""
        buffer = self._context + self._pending
        base = len(self._context)
        out = _render(buffer, base, len(buffer), self._masker.spans(buffer, base))
        self._context = self._pending = b""
        return out
