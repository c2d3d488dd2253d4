"""Worked examples pinning each curation rule just inside and just outside its threshold.

Each test builds a text whose measured quantity sits exactly on a rule's threshold (which
must pass, except where the rule fails *at* its threshold) and one step beyond it (which must
fail with that rule's reason). Where other rules would fire first on such a text, the test
switches them off in the config so that the rule under test is the one observed.
"""
import dataclasses
import itertools
import string

import pytest

from minitransformer.data.curate import (Blocklist, C4Config, FineWebConfig, GopherQualityConfig,
                                         GopherRepetitionConfig, c4_clean, fineweb_quality,
                                         gopher_quality, gopher_repetition, normalize_text)
from minitransformer.data.curate.normalize import NormalizeConfig

_LETTERS = itertools.product(string.ascii_lowercase, repeat=4)


def fresh(n: int, length: int = 5) -> list[str]:
    """``n`` words never produced before in this test session, of ``length`` (>= 5) letters.

    Fresh words make n-gram and line repetition impossible unless a test adds it on purpose;
    they end in "q", so none is a stop word.
    """
    assert length >= 5
    return ["".join(next(_LETTERS)).ljust(length, "q") for _ in range(n)]


def prose_words(n: int) -> list[str]:
    """``n`` fresh 5-letter words with the stop words "the" and "and" in front."""
    return ["the", "and"] + fresh(n - 2)


# --------------------------------------------------------------------------------------
# Unicode normalisation
# --------------------------------------------------------------------------------------

def test_normalize_composes_unifies_line_ends_and_removes_invisible_characters():
    text = "  Cafe\u0301 menu\r\nline two\rthree\u2028four\u200b here \t\n\n"
    assert normalize_text(text) == "Café menu\nline two\nthree\nfour here"
    assert normalize_text("ﬁne ²") == "ﬁne ²"               # NFC keeps compatibility forms
    assert normalize_text("ﬁne ²", "NFKC") == "fine 2"


def test_normalize_config_rejects_unknown_forms():
    with pytest.raises(ValueError, match="NFC, NFKC"):
        NormalizeConfig(form="nfc")


# --------------------------------------------------------------------------------------
# Gopher quality
# --------------------------------------------------------------------------------------

def test_gopher_word_count_bounds():
    assert gopher_quality(" ".join(prose_words(50))) is None
    assert gopher_quality(" ".join(prose_words(49))) == "too_few_words"
    # Tokens made only of punctuation are not words.
    assert gopher_quality(" ".join(prose_words(49) + ["-", "|"])) == "too_few_words"
    words = prose_words(100_000)
    assert gopher_quality(" ".join(words)) is None
    assert gopher_quality(" ".join(words + ["extra"])) == "too_many_words"


def test_gopher_mean_word_length_bounds():
    three = ["the", "and"] + ["cat"] * 48                       # mean exactly 3.0
    assert gopher_quality(" ".join(three)) is None
    assert gopher_quality(" ".join(three[:-1] + ["ox"])) == "short_mean_word_length"
    # 2 stop words (6 chars) + 14 words of 11 + 34 of 10 = 500 chars over 50 words: 10.0.
    ten = ["the", "and"] + fresh(14, 11) + fresh(34, 10)
    assert gopher_quality(" ".join(ten)) is None
    assert gopher_quality(" ".join(ten[:-1] + fresh(1, 11))) == "long_mean_word_length"


def test_gopher_hash_and_ellipsis_ratios():
    words = prose_words(100)
    tagged = ["#" + w for w in words[2:12]] + words[12:]        # 10 '#' per 100 words
    assert gopher_quality(" ".join(words[:2] + tagged)) is None
    assert gopher_quality(" ".join(words[:2] + ["#" + words[12]] + tagged)) == "hash_ratio"
    dotted = [w + "..." for w in words[2:12]] + words[12:]      # 10 ellipses per 100 words
    assert gopher_quality(" ".join(words[:2] + dotted) + " end.") is None
    dotted[10] += "…"
    assert gopher_quality(" ".join(words[:2] + dotted) + " end.") == "ellipsis_ratio"


def _lines(n: int, prefix: str = "", suffix: str = ".") -> list[str]:
    return [prefix + " ".join(prose_words(6)) + suffix for _ in range(n)]


def test_gopher_bullet_lines():
    inside = _lines(18, prefix="• ") + _lines(2)               # 18 of 20 lines: 0.9
    assert gopher_quality("\n".join(inside)) is None
    outside = _lines(19, prefix="- ") + _lines(1)               # 19 of 20: 0.95
    assert gopher_quality("\n".join(outside)) == "bullet_lines"


def test_gopher_lines_ending_in_ellipsis():
    inside = _lines(3, suffix="...") + _lines(7)                 # 3 of 10 lines: 0.3
    assert gopher_quality("\n".join(inside)) is None
    outside = _lines(3, suffix="...") + _lines(1, suffix=" …") + _lines(6)
    assert gopher_quality("\n".join(outside)) == "ellipsis_lines"


def test_gopher_words_with_letters():
    words = prose_words(80) + [str(1000 + i) for i in range(20)]  # 80 of 100 have a letter
    assert gopher_quality(" ".join(words)) is None
    assert gopher_quality(" ".join(words[1:] + ["2025"])) == "alpha_words"


def test_gopher_stop_words_are_counted_distinct():
    words = fresh(60)
    assert gopher_quality(" ".join(["The", "with"] + words)) is None
    assert gopher_quality(" ".join(["the"] * 10 + words)) == "stop_words"
    assert gopher_quality(" ".join(["then", "others"] + words)) == "stop_words"  # whole words only


# --------------------------------------------------------------------------------------
# Gopher repetition
# --------------------------------------------------------------------------------------

def test_repeated_paragraphs_by_count():
    long = [" ".join(fresh(40)) for _ in range(6)]
    short = "Short one."
    inside = [long[0], short, long[1], short, long[2], short, long[3], short, long[4], long[5]]
    assert gopher_repetition("\n\n".join(inside)) is None        # 3 repeats of 10: 0.3
    outside = inside[:-1] + [short, inside[-1]]                  # 4 repeats of 11
    assert gopher_repetition("\n\n".join(outside)) == "dup_paragraphs"


_NGRAMS_OFF = GopherRepetitionConfig(**{f"max_top_{n}gram": 1.0 for n in (2, 3, 4)},
                                     **{f"max_dup_{n}gram": 1.0 for n in range(5, 11)})


def _exact_share_text(sep: str, dup: str, denominator: int) -> str:
    """Three unique parts and ``dup`` twice, joined by ``sep``, padded (a long first word) so
    that len(dup) / len(text) is exactly 1 / ``denominator``."""
    parts = [" ".join(fresh(2)) for _ in range(3)] + [dup, dup]
    missing = denominator * len(dup) - len(sep.join(parts))
    assert missing > 0
    parts[0] = "x" * missing + parts[0]
    return sep.join(parts)


def test_repeated_paragraph_characters():
    # The repeated paragraph is also 20 repeated 5-grams; the n-gram rules are off here.
    dup = " ".join(fresh(20))
    inside = _exact_share_text("\n\n", dup, 5)                # exactly 20% in the repeat
    assert len(dup) / len(inside) == 0.2
    assert gopher_repetition(inside, _NGRAMS_OFF) is None
    assert gopher_repetition(inside[1:], _NGRAMS_OFF) == "dup_paragraph_chars"


def test_repeated_lines_by_count_and_characters():
    long = [" ".join(fresh(40)) for _ in range(6)]
    short = "Short one."
    inside = [long[0], short, long[1], short, long[2], short, long[3], short, long[4], long[5]]
    assert gopher_repetition("\n".join(inside)) is None          # one paragraph; 0.3 of lines
    outside = inside[:-1] + [short, inside[-1]]
    assert gopher_repetition("\n".join(outside)) == "dup_lines"
    dup = " ".join(fresh(20))
    chars = _exact_share_text("\n", dup, 5)
    assert gopher_repetition(chars, _NGRAMS_OFF) is None
    assert gopher_repetition(chars[1:], _NGRAMS_OFF) == "dup_line_chars"


def _with_repeated_ngram(n: int, copies: int, word_chars: int) -> list[str]:
    """Fresh 5-letter words with one n-gram of fresh words placed ``copies`` times, apart."""
    gram = fresh(n)
    words = []
    for _ in range(copies):
        words += gram + fresh(1)
    rest = word_chars - sum(map(len, words))
    assert rest >= 0 and rest % 5 == 0
    return words + fresh(rest // 5)


@pytest.mark.parametrize("n, copies, limit", [(2, 4, 0.20), (3, 6, 0.18), (4, 4, 0.16)])
def test_top_ngram_character_share(n, copies, limit):
    total = round(copies * 5 * n / limit)                       # word characters at the limit
    words = _with_repeated_ngram(n, copies, total)
    assert gopher_repetition(" ".join(words)) is None
    words[-1] = words[-1][:-1]                                  # one character fewer in all
    assert gopher_repetition(" ".join(words)) == f"top_{n}gram"


def test_top_ngram_share_uses_its_own_characters_and_the_longest_of_ties():
    gram, other = fresh(2), fresh(2, 6)                        # bigrams of 10 and 12 letters
    repeats = []
    for _ in range(4):                                         # fresh words keep them apart
        repeats += gram + fresh(1) + other + fresh(1)          # 32 characters
    # With a 200-letter word elsewhere: 4 * 12 / 388 = 0.124, although the longest window
    # of two words has 205 characters.
    words = repeats + fresh(1, 200) + fresh(12)
    assert sum(map(len, words)) == 388
    assert gopher_repetition(" ".join(words)) is None
    # Both bigrams occur 4 times; the longer one counts: 48 / 240 = 0.2 passes, 48 / 239 fails.
    words = repeats + fresh(20) + fresh(1, 12)
    assert sum(map(len, words)) == 240
    assert gopher_repetition(" ".join(words)) is None
    assert gopher_repetition(" ".join(words[:-1] + [words[-1][:-1]])) == "top_2gram"


def test_top_ngram_needs_two_occurrences():
    # A ten-word text: its most frequent bigram covers 20% of the characters, but once only.
    text = " ".join(fresh(3, 10) + fresh(7, 5))
    assert gopher_repetition(text) is None


def _only(rule: str, limit: float) -> GopherRepetitionConfig:
    return dataclasses.replace(_NGRAMS_OFF, **{rule: limit})


@pytest.mark.parametrize("n", range(5, 11))
def test_duplicated_ngram_character_share(n):
    limit = getattr(GopherRepetitionConfig(), f"max_dup_{n}gram")
    covered = round(1000 * limit)              # characters of the n repeated words
    gram = [fresh(1, covered // n + (i < covered % n))[0] for i in range(n)]
    rest = 1000 - 2 * covered - 5              # fill to 1000 word characters with 5-letter words
    words = gram + fresh(1) + gram + fresh(rest // 5)
    assert sum(map(len, words)) == 1000 and rest % 5 == 0
    cfg = _only(f"max_dup_{n}gram", limit)
    assert gopher_repetition(" ".join(words), cfg) is None
    words[-1] = words[-1][:-1]                 # 999 characters: the share exceeds the limit
    assert gopher_repetition(" ".join(words), cfg) == f"dup_{n}gram"


def test_duplicated_ngrams_skip_first_occurrence_and_count_overlaps_once():
    # Three copies of a 5-word sequence of 1-letter words: the 2nd and 3rd copies (10 of 15
    # characters) are repeats; their overlapping 5-grams must not count a word twice.
    text = " ".join(list("abcde") * 3)
    assert gopher_repetition(text, _only("max_dup_5gram", 0.67)) is None
    assert gopher_repetition(text, _only("max_dup_5gram", 0.66)) == "dup_5gram"


# --------------------------------------------------------------------------------------
# C4
# --------------------------------------------------------------------------------------

def _sentences(n: int) -> list[str]:
    return [" ".join(fresh(6)).capitalize() + "." for _ in range(n)]


def test_c4_keeps_lines_with_terminal_punctuation_and_three_words():
    good = _sentences(5)
    text = "\n".join(good[:2] + ["Home", "Read more...", "Two words.", 'He said "yes"',
                                 "Menu item without a stop"] + good[2:])
    cleaned, reason = c4_clean(text)
    assert reason is None
    assert cleaned.split("\n") == good[:2] + ['He said "yes"'] + good[2:]


def test_c4_sentence_count_threshold():
    four = " ".join(_sentences(4))
    assert c4_clean(four) == ("", "too_few_sentences")
    five = four + " And one more here!"
    assert c4_clean(five) == (five, None)


def test_c4_word_length_limit():
    good = "\n".join(_sentences(5))
    at_limit = "A " + "x" * 1000 + " word."
    assert c4_clean(good + "\n" + at_limit)[0].endswith(at_limit)
    over = "A " + "x" * 1001 + " word."
    assert c4_clean(good + "\n" + over) == (good, None)


def test_c4_document_rules_only_see_kept_lines():
    good = "\n".join(_sentences(5))
    assert c4_clean(good + "\nLorem ipsum dolor sit amet.")[1] == "lorem_ipsum"
    assert c4_clean(good + "\nif (x) { return y; }.")[1] == "curly_brace"
    # The same words on a line that is dropped anyway (no terminal punctuation) do not count.
    assert c4_clean(good + "\nLorem ipsum dolor sit amet")[1] is None
    assert c4_clean(good + "\n{ menu }")[1] is None


def test_c4_boilerplate_lines_and_citations():
    good = _sentences(5)
    text = "\n".join(good + ["Please enable JavaScript to view this page.",
                             "Read our Privacy Policy for more.", "This site uses cookies today.",
                             "The river is long.[1] It floods often.[citation needed]"])
    cleaned, reason = c4_clean(text)
    assert reason is None
    assert cleaned.split("\n") == good + ["The river is long. It floods often."]


def test_c4_switches():
    lines = _sentences(5) + ["Home", "No stop here at all", "Lorem ipsum dolor sit amet."]
    cfg = C4Config(require_terminal_punctuation=False, drop_lorem_ipsum=False)
    kept = lines[:5] + lines[6:]               # "Home" is still too short
    assert c4_clean("\n".join(lines), cfg) == ("\n".join(kept), None)


def test_c4_keeps_paragraph_breaks():
    a, b = " ".join(_sentences(3)), " ".join(_sentences(2))
    assert c4_clean(f"{a}\n\nMenu\n\n{b}") == (f"{a}\n\n{b}", None)


# --------------------------------------------------------------------------------------
# FineWeb
# --------------------------------------------------------------------------------------

def _long_line(end: str = ".") -> str:
    return " ".join(fresh(8)) + end                              # 47 characters and the end


def test_fineweb_lines_ending_in_punctuation_fail_at_the_threshold():
    at = [_long_line() for _ in range(3)] + [_long_line("") for _ in range(22)]  # 3/25 = 0.12
    assert fineweb_quality("\n".join(at)) == "punct_lines"
    above = [_long_line("!") for _ in range(4)] + [_long_line("") for _ in range(21)]
    assert fineweb_quality("\n".join(above)) is None
    # Any sentence terminal counts, closing quotes or brackets may follow it; ":" does not.
    plain = [_long_line("") for _ in range(21)]
    counted = [_long_line(e) for e in ("。", "?)", '…"', "!")]
    assert fineweb_quality("\n".join(counted + plain)) is None          # 4/25
    assert fineweb_quality("\n".join(counted[:3] + [_long_line(":")] + plain)) == "punct_lines"


def test_fineweb_short_lines_fail_at_the_threshold():
    def short():
        return " ".join(fresh(5)) + "."                     # 30 characters: short
    assert len(short()) == 30
    at = [short() for _ in range(67)] + [_long_line() for _ in range(33)]
    assert fineweb_quality("\n".join(at)) == "short_lines"
    below = [short() for _ in range(66)] + [_long_line() for _ in range(34)]
    assert fineweb_quality("\n".join(below)) is None
    not_short = [" ".join(fresh(5)) + "!." for _ in range(67)] + [_long_line() for _ in range(33)]
    assert fineweb_quality("\n".join(not_short)) is None          # 31 characters each


def test_fineweb_repeated_line_characters_fail_at_the_threshold():
    repeat = "Share this."                                         # 11 characters
    lines = [_long_line() for _ in range(20)] + [repeat, repeat]
    text = "\n".join(lines)
    pad = 100 * len(repeat) - (len(text) - text.count("\n"))      # make the share exactly 1%
    assert pad > 0
    lines[0] = "x" * pad + lines[0]
    assert fineweb_quality("\n".join(lines)) == "dup_line_chars"
    lines[0] = "x" + lines[0]
    assert fineweb_quality("\n".join(lines)) is None


def test_fineweb_newlines_per_word():
    cfg = FineWebConfig(min_punct_lines=-1.0, max_short_lines=2.0, max_dup_line_chars=2.0)
    words = fresh(10)
    at = " ".join(words[:7]) + "\n" + "\n".join(words[7:])   # 3 newlines, 10 words
    assert fineweb_quality(at, cfg) is None
    assert fineweb_quality(at + "\n", cfg) == "list_like"


# --------------------------------------------------------------------------------------
# Blocklist
# --------------------------------------------------------------------------------------

def test_blocklist_matches_whole_words_and_phrases_ignoring_case(tmp_path):
    path = tmp_path / "words.txt"
    path.write_text("# my list\n\nBadword\nvery bad phrase\ne-mail\n", encoding="utf-8")
    blocklist = Blocklist.from_file(path)
    assert len(blocklist) == 3
    assert blocklist.matches("A BADWORD here, a badwords there, notbadword.") == ["badword"]
    assert blocklist.matches("It was Very  bad\nphrase indeed; very bad.") == ["very bad phrase"]
    assert blocklist.matches("Send an E-mail or an email.") == ["e-mail"]


def test_blocklist_threshold_in_the_pipeline(tmp_path):
    from minitransformer.data.curate import CurateConfig, Document, Pipeline

    path = tmp_path / "words.txt"
    path.write_text("zonk\n", encoding="utf-8")
    off = {s: {"enabled": False} for s in ("gopher_repetition", "gopher_quality", "fineweb", "c4",
                                           "pii", "minhash")}
    cfg = CurateConfig.from_dict({**off, "blocklist": {"path": str(path), "max_hits": 1}})
    docs = [Document({"id": i}, text, "mem", i) for i, text in
            enumerate(["zonk once", "zonk and zonk", "clean"])]
    pipe = Pipeline(cfg)
    assert [d.record["id"] for d in pipe.run(docs)] == [0, 2]
    assert pipe.report.stage("blocklist").dropped == {"blocklisted": 1}
    assert "2 matches" in pipe.report.stage("blocklist").examples["blocklisted"][0]["detail"]


def test_blocklist_file_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.txt"):
        Blocklist.from_file(tmp_path / "nothere.txt")
    empty = tmp_path / "empty.txt"
    empty.write_text("# only a comment\n\n", encoding="utf-8")
    with pytest.raises(ValueError, match="empty.txt holds no words"):
        Blocklist.from_file(empty)


def test_stage_configs_are_frozen_and_default_to_the_reference():
    q = GopherQualityConfig()
    assert (q.min_words, q.max_words, q.min_mean_word_length, q.max_mean_word_length) == (50, 100_000, 3, 10)
    assert (q.max_hash_ratio, q.max_ellipsis_ratio, q.max_bullet_lines, q.max_ellipsis_lines,
            q.min_alpha_words, q.min_stop_words) == (0.1, 0.1, 0.9, 0.3, 0.8, 2)
    r = GopherRepetitionConfig()
    assert (r.max_dup_lines, r.max_dup_paragraphs, r.max_dup_line_chars,
            r.max_dup_paragraph_chars) == (0.3, 0.3, 0.2, 0.2)
    assert [getattr(r, f"max_top_{n}gram") for n in (2, 3, 4)] == [0.2, 0.18, 0.16]
    assert [getattr(r, f"max_dup_{n}gram") for n in range(5, 11)] == [0.15, 0.14, 0.13, 0.12, 0.11, 0.10]
    f = FineWebConfig()
    assert (f.min_punct_lines, f.max_short_lines, f.short_line_length, f.max_dup_line_chars,
            f.max_newlines_per_word) == (0.12, 0.67, 30, 0.01, 0.3)
    c = C4Config()
    assert (c.min_words_per_line, c.min_sentences, c.max_word_length) == (3, 5, 1000)
    with pytest.raises(dataclasses.FrozenInstanceError):
        q.min_words = 3
