"""The terminal model turns raw PTY bytes into the text a person reads."""

from __future__ import annotations

import pytest

from remotecli.providers.terminal import MAX_TRANSCRIPT, Transcript


def _read(data: bytes | str, columns: int = 80) -> Transcript:
    t = Transcript(columns=columns)
    t.feed(data)
    return t


def test_colours_and_erases_vanish_without_gluing_words() -> None:
    t = _read(b"\x1b[1;32mDone\x1b[0m \x1b[2Kok\r\n")
    assert t.text == "Done ok\n"


def test_cursor_moves_become_spaces_not_nothing() -> None:
    # Ink draws "Enter the code:" with absolute column moves between words.
    t = _read(b"Enter\x1b[7Gthe\x1b[11Gcode:")
    assert t.text == "Enter the code:"
    assert _read(b"a\x1b[3Cb").text == "a   b"


def test_vertical_moves_and_positioning_start_new_lines() -> None:
    t = _read(b"first\x1b[2;1Hsecond\x1b[Bthird")
    assert t.text.split("\n") == ["first", "second", "third"]


def test_osc8_hyperlink_target_is_kept_and_text_stays_visible() -> None:
    url = "https://example.test/authorize?state=abc"
    t = _read(f"\x1b]8;;{url}\x07short link\x1b]8;;\x07\n".encode())
    assert (t.text, t.links) == ("short link\n", [url])
    # ST-terminated form too.
    t = _read(f"\x1b]8;id=1;{url}\x1b\\x\x1b]8;;\x1b\\".encode())
    assert t.links == [url]


def test_sequences_cut_by_reads_are_completed_by_the_next_read() -> None:
    raw = "\x1b[31mhello\x1b]8;;https://a.test/x\x07link\x1b]8;;\x07 w\u00f6rld\r\n".encode()
    for size in (1, 2, 3, 5, 7):
        t = Transcript()
        for i in range(0, len(raw), size):
            t.feed(raw[i : i + size])
        assert (t.text, t.links) == ("hellolink w\u00f6rld\n", ["https://a.test/x"]), size


def test_a_line_the_terminal_wrapped_is_read_as_one_line() -> None:
    url = "https://example.test/" + "a" * 150
    t = _read(url + "\n", columns=80)
    assert t.text == url + "\n"


def test_lone_carriage_returns_of_spinners_become_separate_lines() -> None:
    t = _read(b"\xe2\xa0\x8b Waiting\r\xe2\xa0\x99 Waiting\rDone\n")
    assert t.text.split("\n") == ["\u280b Waiting", "\u2819 Waiting", "Done", ""]


def test_alternate_screen_starts_a_new_page() -> None:
    t = _read(b"before\x1b[?1049hafter")
    assert t.text == "before\nafter"


@pytest.mark.parametrize("junk", [b"\x1b[", b"\x1b]8;;http", b"\xe2\xa0"])
def test_incomplete_tail_is_held_not_printed(junk: bytes) -> None:
    t = _read(b"ok" + junk)
    assert t.text == "ok"


def test_transcript_stays_bounded() -> None:
    t = Transcript()
    line = b"x" * 79 + b"\n"
    for _ in range((MAX_TRANSCRIPT // len(line)) * 2):
        t.feed(line)
    assert len(t.text) <= MAX_TRANSCRIPT
    assert t.text.endswith("x" * 79 + "\n")
