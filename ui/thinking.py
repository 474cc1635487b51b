"""The collapsible "Thinking" section of an answer: the model's reasoning (think
profile), shown apart from the answer and never part of it.

It streams in while the model thinks (`ThinkingSection.add`), stays collapsed by
default, and is redrawn from the session's history after a rerun. The API does not
store reasoning, so a conversation loaded later shows answers only.
"""

from __future__ import annotations

import streamlit as st

LABEL = "Thinking"


class ThinkingSection:
    """Created empty inside an assistant message; appears with the first reasoning piece."""

    def __init__(self) -> None:
        self._slot = st.empty()
        self.text = ""

    def add(self, piece: str) -> None:
        self.text += piece
        with self._slot.container():
            show_thinking(self.text, expanded=False)


def show_thinking(text: str | None, expanded: bool = False) -> None:
    if text:
        with st.expander(LABEL, expanded=expanded):
            st.markdown(text)
