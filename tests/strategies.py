"""Hypothesis strategies shared by the renderer tests: legal metric and label names, and texts
with what an exposition must escape (quotes, backslashes, newlines) and unicode."""

from __future__ import annotations

from hypothesis import strategies as st

legacy_names = st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_]{0,20}", fullmatch=True)


def texts(max_size: int) -> st.SearchStrategy[str]:
    return st.text(
        st.characters(codec="utf-8", exclude_categories=("Cs",)) | st.sampled_from('\\"\n{}=,# '),
        max_size=max_size,
    )
