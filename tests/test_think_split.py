"""Inline <think>...</think> (a model on llama.cpp, where no reasoning parser runs) is
split from the answer, however the stream cuts the tags."""

from __future__ import annotations

import pytest

from workers.backends.think_split import ThinkSplitter

TEXT = "<think>\nCount: one, two.\n</think>\n\nTwo items."


def split(pieces: list[str]) -> tuple[str, str]:
    s = ThinkSplitter()
    reasoning, content = "", ""
    for piece in pieces:
        r, c = s.feed(piece)
        reasoning, content = reasoning + r, content + c
    r, c = s.flush()
    return reasoning + r, content + c


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 100])
def test_reasoning_and_answer_are_split_at_any_piece_size(size: int) -> None:
    pieces = [TEXT[i:i + size] for i in range(0, len(TEXT), size)]
    assert split(pieces) == ("\nCount: one, two.\n", "Two items.")


def test_an_answer_without_a_think_block_is_all_content() -> None:
    assert split(["Paris", " is the capital. <think> is a tag."]) == ("", "Paris is the capital. <think> is a tag.")


def test_an_unfinished_think_block_stays_reasoning() -> None:
    assert split(["<thi", "nk>still thinking </thi"]) == ("still thinking </thi", "")


def test_a_short_answer_that_looks_like_a_tag_start_is_not_lost() -> None:
    assert split(["<"]) == ("", "<")
