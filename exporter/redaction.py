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


class Redactor:
    """Replaces every known secret, in each of its :func:`encoded_forms`, with :data:`REDACTED`.

    The lookup is kept up to date as secrets come and go, so a token obtained while thousands of
    others are known costs no rebuild. Safe to use from any thread.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        self._configured: dict[str, frozenset[str]] = {}
        self._owned: weakref.WeakKeyDictionary[object, dict[str, frozenset[str]]] = (
            weakref.WeakKeyDictionary()
        )
        self._gone: list[dict[str, frozenset[str]]] = []
        """The run-time secrets of owners that no longer exist, to forget at the next change."""
        self._count: dict[str, int] = {}
        """Every form looked for → how many secrets have it."""
        self._heads: dict[str, tuple[str, ...]] = {}
        """The first :data:`MIN_SECRET_LENGTH` characters of each form → the forms, longest
        first."""
        self._longest = 0
        """At least the length of the longest form."""
        self.set_secrets(secrets)

    def set_secrets(self, secrets: Iterable[str]) -> None:
        """The config's secrets, replacing those of the previous config."""
        wanted = {secret for secret in secrets if len(secret) >= MIN_SECRET_LENGTH}
        with self._lock:
            self._forget_gone()
            for secret in self._configured.keys() - wanted:
                self._remove(self._configured.pop(secret))
            for secret in wanted - self._configured.keys():
                self._configured[secret] = forms = encoded_forms(secret)
                self._add(forms)
            self._longest = max(map(len, self._count), default=0)

    def add_secret(self, secret: str, *, owner: object) -> None:
        """A secret obtained at run time by ``owner`` (held weakly: its secrets go with it);
        the newest :data:`SECRETS_PER_OWNER` of each owner are kept."""
        if len(secret) < MIN_SECRET_LENGTH:
            return
        held = self._owned.get(owner)
        if held is not None and secret in held:
            return
        with self._lock:
            self._forget_gone()
            if held is None:
                held = self._owned[owner] = {}
                weakref.finalize(owner, self._gone.append, held)
            held[secret] = forms = encoded_forms(secret)
            self._add(forms)
            while len(held) > SECRETS_PER_OWNER:
                self._remove(held.pop(next(iter(held))))

    def _forget_gone(self) -> None:
        while self._gone:
            for forms in self._gone.pop().values():
                self._remove(forms)

    def _add(self, forms: Iterable[str]) -> None:
        for form in forms:
            known = self._count.get(form, 0)
            self._count[form] = known + 1
            if not known:
                head = form[:MIN_SECRET_LENGTH]
                self._heads[head] = tuple(
                    sorted((*self._heads.get(head, ()), form), key=len, reverse=True)
                )
                self._longest = max(self._longest, len(form))

    def _remove(self, forms: Iterable[str]) -> None:
        for form in forms:
            left = self._count[form] - 1
            if left:
                self._count[form] = left
                continue
            del self._count[form]
            head = form[:MIN_SECRET_LENGTH]
            rest = tuple(other for other in self._heads[head] if other != form)
            if rest:
                self._heads[head] = rest
            else:
                del self._heads[head]

    def _spans(self, text: str) -> list[tuple[int, int]]:
        """Where the forms occur in ``text``, overlapping occurrences merged, in order."""
        found: list[tuple[int, int]] = []
        size = len(text)
        if size * 200 < len(self._count) * (80 + size):
            # Many forms for a short text: look up each position's first characters, rather than
            # search the text for each form (a look-up costs about as much as two searches of a
            # short text, or of 200 characters of a long one).
            heads = self._heads
            for start in range(len(text) - MIN_SECRET_LENGTH + 1):
                candidates = heads.get(text[start : start + MIN_SECRET_LENGTH])
                if candidates is None:
                    continue
                for form in candidates:
                    if text.startswith(form, start):
                        found.append((start, start + len(form)))
                        break
        else:
            for form in tuple(self._count):
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

    def redact(self, text: str, limit: int | None = None) -> str:
        """``text`` with every secret replaced; with ``limit``, cut to its first ``limit``
        characters first, a secret that the cut would split replaced whole."""
        if limit is not None and len(text) > limit:
            # A secret that starts before the cut ends within the longest form's length of it.
            text = text[: limit + max(self._longest - 1, 0)]
        else:
            limit = None
        spans = self._spans(text) if self._count else []
        if limit is not None:
            spans = [span for span in spans if span[0] < limit]
            text = text[: max(limit, spans[-1][1]) if spans else limit]
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
