"""Chunk windows end at a sentence end when one is near: a full stop, or a line break
(list items, headings and paragraphs often have no final punctuation)."""

from __future__ import annotations

from rag.chunking import chunk_sections
from rag.parsers import Section


def windows(text: str, size: int) -> list[str]:
    return [c.text for c in chunk_sections([Section(heading_path="", text=text)], size=size, overlap=0)]


def test_a_window_ends_at_a_line_break_near_its_end() -> None:
    text = "w1 w2 w3 w4 w5 w6 w7\nw8 w9 w10 w11 w12"
    # 12 tokens, windows of 8: the line break after w7 lies in the window's last quarter.
    assert windows(text, 8) == ["w1 w2 w3 w4 w5 w6 w7", "w8 w9 w10 w11 w12"]


def test_a_list_is_cut_between_items_not_inside_one() -> None:
    items = [f"item{i} alpha beta gamma" for i in range(6)]
    for piece in windows("\n".join(items), 10):
        assert piece.split()[-1] == "gamma", piece   # every window ends with a whole item


def test_a_full_stop_still_ends_a_window_and_a_far_break_does_not() -> None:
    assert windows("a b c d e f. g h i j k", 8) == ["a b c d e f.", "g h i j k"]
    # A break early in the window is too far back: the window is filled instead.
    assert windows("a\nb c d e f g h i j k l", 8)[0] == "a\nb c d e f g h"
