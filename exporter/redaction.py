"""The secret redactor: removes every secret the exporter knows from a text, in every form in which
the exporter itself sends it.

A secret reaches a provider written out (a header, a query), JSON-escaped (a JSON body),
percent-encoded (a URL, a form) or base64-encoded inside a Basic ``Authorization`` header; a
provider that echoes the request back in its error text echoes those forms. The redactor looks for
each of them. It knows the config's secrets (replaced on every load) and the secrets obtained at
run time (an OAuth access token, the credentials of an ``Authorization`` header), which each
provider client registers under its own name: the newest few per client are kept, and they go with
the client.

One instance is made by the service and handed to whatever writes text out: the provider clients
(error texts), the log processor and the status page.
"""

from __future__ import annotations

import json
import threading
import weakref
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, quote_plus

from yarl import URL

REDACTED = "<redacted>"
"""What every secret is replaced with."""
MIN_SECRET_LENGTH = 4
"""Shorter secrets are not looked for: they would mangle ordinary words."""
SECRETS_PER_OWNER = 4
"""Run-time secrets kept per owner (a provider client), the newest first: a renewed token
replaces the oldest."""


def encoded_forms(secret: str) -> frozenset[str]:
    """``secret`` as the exporter may send it: as it is, JSON-escaped (ASCII-only, as aiohttp's
    ``json=`` writes it, and UTF-8), percent-encoded by ``urllib.parse.quote`` (with and without
    ``/`` kept), ``quote_plus``, and yarl as a query value and as a path segment."""
    forms = {
        secret,
        json.dumps(secret)[1:-1],
        json.dumps(secret, ensure_ascii=False)[1:-1],
        quote(secret, safe=""),
        quote(secret),
        quote_plus(secret),
    }
    try:
        forms.add(URL.build(query={"k": secret}).raw_query_string[2:])
        forms.add(URL.build(path="/" + secret, encoded=False).raw_path[1:])
    except ValueError:
        pass
    return frozenset(form for form in forms if len(form) >= MIN_SECRET_LENGTH)


class _Matcher:
    """An immutable snapshot of the forms to look for, longest first."""

    def __init__(self, forms: Iterable[str]) -> None:
        self.forms = tuple(sorted(set(forms), key=lambda form: (-len(form), form)))
        self.longest = len(self.forms[0]) if self.forms else 0
        heads: dict[str, list[str]] = {}
        for form in self.forms:
            heads.setdefault(form[:MIN_SECRET_LENGTH], []).append(form)
        self.heads = {head: tuple(forms) for head, forms in heads.items()}

    def spans(self, text: str) -> list[tuple[int, int]]:
        """Where the forms occur in ``text``, overlapping occurrences merged, in order."""
        found: list[tuple[int, int]] = []
        if len(text) < len(self.forms):
            # Fewer positions than forms: look up each position's first characters.
            heads = self.heads
            for start in range(len(text) - MIN_SECRET_LENGTH + 1):
                candidates = heads.get(text[start : start + MIN_SECRET_LENGTH])
                if candidates is None:
                    continue
                for form in candidates:
                    if text.startswith(form, start):
                        found.append((start, start + len(form)))
                        break
        else:
            for form in self.forms:
                start = text.find(form)
                while start >= 0:
                    found.append((start, start + len(form)))
                    start = text.find(form, start + 1)
            found.sort()
        merged: list[tuple[int, int]] = []
        for start, end in found:
            if merged and start <= merged[-1][1]:
                if end > merged[-1][1]:
                    merged[-1] = (merged[-1][0], end)
            else:
                merged.append((start, end))
        return merged


class Redactor:
    """Replaces every known secret, in each of its :func:`encoded_forms`, with :data:`REDACTED`.

    Safe to use from any thread; the lookup structure is rebuilt on the first use after a change.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        self._configured: dict[str, frozenset[str]] = {}
        self._runtime: weakref.WeakKeyDictionary[object, dict[str, frozenset[str]]] = (
            weakref.WeakKeyDictionary()
        )
        self._matcher: _Matcher | None = None
        self.set_secrets(secrets)

    def set_secrets(self, secrets: Iterable[str]) -> None:
        """The config's secrets, replacing those of the previous config."""
        with self._lock:
            known = self._configured
            self._configured = {
                secret: known.get(secret) or encoded_forms(secret)
                for secret in secrets
                if len(secret) >= MIN_SECRET_LENGTH
            }
            self._matcher = None

    def add_secret(self, secret: str, *, owner: object) -> None:
        """A secret obtained at run time by ``owner`` (held weakly: its secrets go with it);
        the newest :data:`SECRETS_PER_OWNER` of each owner are kept."""
        if len(secret) < MIN_SECRET_LENGTH or secret in self._configured:
            return
        with self._lock:
            held = self._runtime.get(owner)
            if held is None:
                held = self._runtime[owner] = {}
            elif secret in held:
                return
            held[secret] = encoded_forms(secret)
            while len(held) > SECRETS_PER_OWNER:
                del held[next(iter(held))]
            self._matcher = None

    def _current(self) -> _Matcher:
        matcher = self._matcher
        if matcher is None:
            with self._lock:
                matcher = self._matcher
                if matcher is None:
                    forms: set[str] = set()
                    for known in self._configured.values():
                        forms.update(known)
                    for held in self._runtime.values():
                        for known in held.values():
                            forms.update(known)
                    matcher = self._matcher = _Matcher(forms)
        return matcher

    def redact(self, text: str, limit: int | None = None) -> str:
        """``text`` with every secret replaced; with ``limit``, cut to its first ``limit``
        characters first, a secret that the cut would split replaced whole."""
        matcher = self._current()
        if limit is not None and len(text) > limit:
            # A secret that starts before the cut ends within the longest form's length of it.
            text = text[: limit + max(matcher.longest - 1, 0)]
        else:
            limit = None
        if not matcher.forms:
            return text if limit is None else text[:limit]
        spans = matcher.spans(text)
        if limit is not None:
            spans = [span for span in spans if span[0] < limit]
            end = max(limit, spans[-1][1]) if spans else limit
            text = text[:end]
        if not spans:
            return text
        parts = []
        at = 0
        for start, end in spans:
            parts.append(text[at:start])
            parts.append(REDACTED)
            at = end
        parts.append(text[at:])
        return "".join(parts)

    def scrub(self, value: Any) -> Any:
        """``value`` with every string in it redacted: strings, and the strings in dicts, lists
        and tuples; bytes and exceptions become their redacted ``repr``. Other values are kept."""
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, dict):
            return {key: self.scrub(item) for key, item in value.items()}
        if isinstance(value, list | tuple):
            return type(value)(self.scrub(item) for item in value)
        if isinstance(value, bytes | bytearray | BaseException):
            return self.redact(repr(value))
        return value
