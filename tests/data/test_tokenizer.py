"""Byte-level BPE: training, encoding, special tokens, tokenizer.json, parity with `tokenizers`.

Parity with `tokenizers` is checked on text drawn from characters that Unicode 14 assigns:
the `regex` package and `tokenizers` (Oniguruma) are built on different Unicode versions,
and a code point assigned later can be a letter to one and unassigned to the other, which
changes where the text is split.
"""
from __future__ import annotations

import json
import unicodedata
from collections import Counter
from functools import lru_cache

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minitransformer.data import BPETokenizer, Encoding, bytes_to_unicode, default_corpus
from minitransformer.data.bpe_trainer import learn_merges
from minitransformer.data.tokenizer import PATTERNS

MULTILINGUAL = (
    "naïve café Straße Ωmega привет мир 日本語のテキスト 😀😀👍🏽 مرحبا עברית हिन्दी "
    "don't I'LL we've SHE'S they'd 12345 1,000,000 3.14159\r\n\r\n\t  indented\n"
)


@lru_cache(maxsize=None)
def trained(pattern: str = "gpt2", vocab_size: int = 2000) -> BPETokenizer:
    docs = default_corpus()[:3000] + [MULTILINGUAL] * 30
    return BPETokenizer.train(docs, vocab_size, pattern=pattern)


@lru_cache(maxsize=None)
def hf_twin(pattern: str, tmpdir: str):
    tokenizers = pytest.importorskip("tokenizers")
    path = trained(pattern).save(f"{tmpdir}/{pattern}.json")
    return tokenizers.Tokenizer.from_file(str(path))


@pytest.fixture(scope="module")
def tmpdir_str(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tokenizers"))


# ---------------------------------------------------------------------------------------
# Characters assigned by Unicode 14. Python's unicodedata knows which code points its own
# Unicode version assigns; for Python 3.12 and 3.13 (Unicode 15.0, 15.1) we subtract the
# ranges those versions added.
# ---------------------------------------------------------------------------------------

ADDED_IN_15 = [
    (0x0CF3, 0x0CF3), (0x0ECE, 0x0ECE), (0x2FFC, 0x2FFF), (0x31EF, 0x31EF), (0x10EFD, 0x10EFF),
    (0x1123F, 0x11241), (0x11B00, 0x11B09), (0x11F00, 0x11F10), (0x11F12, 0x11F3A),
    (0x11F3E, 0x11F59), (0x1342F, 0x1342F), (0x13439, 0x13455), (0x1B132, 0x1B132),
    (0x1B155, 0x1B155), (0x1D2C0, 0x1D2D3), (0x1DF25, 0x1DF2A), (0x1E030, 0x1E06D),
    (0x1E08F, 0x1E08F), (0x1E4D0, 0x1E4F9), (0x1F6DC, 0x1F6DC), (0x1F774, 0x1F776),
    (0x1F77B, 0x1F77F), (0x1F7D9, 0x1F7D9), (0x1FA75, 0x1FA77), (0x1FA87, 0x1FA88),
    (0x1FAAD, 0x1FAAF), (0x1FABB, 0x1FABD), (0x1FABF, 0x1FABF), (0x1FACE, 0x1FACF),
    (0x1FADA, 0x1FADB), (0x1FAE8, 0x1FAE8), (0x1FAF7, 0x1FAF8), (0x2B739, 0x2B739),
    (0x2EBF0, 0x2EE5D), (0x31350, 0x323AF),
]
UNICODE_VERSION = tuple(int(x) for x in unicodedata.unidata_version.split("."))


def unicode_14_characters():
    if UNICODE_VERSION > (15, 1, 0):
        pytest.skip(f"this Python's Unicode {unicodedata.unidata_version} is newer than 15.1: the "
                    "test cannot tell which of its characters Unicode 14 assigned")
    chars = st.characters(exclude_categories=("Cs", "Cn"))
    if UNICODE_VERSION >= (15, 0, 0):
        chars = chars.filter(lambda c: not any(a <= ord(c) <= b for a, b in ADDED_IN_15))
    return chars


# Text that exercises the split rules: words, contractions, digits, every kind of whitespace.
TRICKY = " \n\r\t\x0b\x0c\x85\xa0\u2028\u3000\x1c'sdtmlrevSDTLMVE0123456789.,!?-_é日😀<>"


def texts_u14():
    chars = unicode_14_characters()
    return st.one_of(st.text(chars, max_size=40), st.text(TRICKY, max_size=40),
                     st.lists(st.one_of(st.text(chars, max_size=4), st.text(TRICKY, max_size=6)),
                              max_size=8).map("".join))


# ---------------------------------------------------------------------------------------
# Vocabulary layout
# ---------------------------------------------------------------------------------------

def test_byte_to_unicode_table():
    table = bytes_to_unicode()
    assert len(set(table)) == 256
    assert table[ord(" ")] == "\u0120" and table[ord("\n")] == "\u010a"
    for b in [*range(33, 127), *range(161, 173), *range(174, 256)]:
        assert table[b] == chr(b)
    remapped = [b for b in range(256) if table[b] != chr(b)]
    assert len(remapped) == 68
    assert [table[b] for b in remapped] == [chr(256 + i) for i in range(68)]


def test_default_layout_special_ids_and_sentinels():
    tok = trained()
    assert tok.vocab_size == 2000
    assert (tok.pad_id, tok.eos_id, tok.mask_id, tok.cls_id, tok.sep_id) == (0, 1, 2, 3, 4)
    assert tok.num_sentinels == 100
    assert tok.sentinel_id(0) == 1999 and tok.sentinel_id(99) == 1900
    assert tok.token_to_id("<extra_id_0>") == 1999 and tok.token_to_id("<extra_id_7>") == 1992
    assert tok.special_ids == tuple(range(5)) + tuple(range(1900, 2000))
    assert tok.decode([5 + ord("A")]) == "A"       # bytes follow the named specials
    with pytest.raises(ValueError, match="sentinel 100 does not exist"):
        tok.sentinel_id(100)


def test_missing_role_names_what_to_add():
    tok = BPETokenizer.train(["hello world"], 300, special_tokens=["<|endoftext|>"], num_sentinels=2)
    assert tok.eos_id == 0
    with pytest.raises(ValueError, match="no pad token.*'<pad>'"):
        tok.pad_id


# ---------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------

def test_training_on_the_classic_example():
    # "aaabdaaabac": aa (4 times) first; then ab and (aa, a) tie at 2 and the smaller pair
    # (a, b) wins; then (aa, ab) -> "aaab". Every pair left occurs once: below min_frequency.
    tok = BPETokenizer.train(["aaabdaaabac"], 1000, special_tokens=[], num_sentinels=0)
    names = [tok.id_to_token(i) for i in range(256, tok.vocab_size)]
    assert names == ["aa", "ab", "aaab"]
    assert [tok.decode([i]) for i in tok.encode("aaabdaaabac")] == ["aaab", "d", "aaab", "a", "c"]


def naive_merges(chunk_counts, num_merges, min_frequency):
    """BPE by rescanning every word for every merge: slow and obviously right."""
    words = [(list(c), n) for c, n in chunk_counts.items()]
    merges, new = [], 256
    while len(merges) < num_merges:
        counts = Counter()
        for w, n in words:
            for p in zip(w, w[1:]):
                counts[p] += n
        if not counts:
            break
        pair, count = min(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        if count < min_frequency:
            break
        merges.append(pair)
        for k, (w, n) in enumerate(words):
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and (w[i], w[i + 1]) == pair:
                    out.append(new)
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            words[k] = (out, n)
        new += 1
    return merges


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.binary(min_size=1, max_size=8).map(lambda b: bytes(x % 4 + 97 for x in b)),
                       st.integers(1, 6), max_size=12),
       st.integers(0, 30), st.integers(1, 3))
def test_incremental_trainer_matches_rescanning(chunk_counts, num_merges, min_frequency):
    assert learn_merges(chunk_counts, num_merges, min_frequency) == naive_merges(
        chunk_counts, num_merges, min_frequency)


def test_training_is_deterministic_and_fills_the_vocabulary():
    a, b = trained("gpt4"), BPETokenizer.train(default_corpus()[:3000] + [MULTILINGUAL] * 30, 2000,
                                              pattern="gpt4")
    assert a.fingerprint == b.fingerprint
    assert a.vocab_size == 2000 and a.num_merges == 2000 - 256 - 105


def test_merges_never_spell_a_special_token():
    tok = BPETokenizer.train(["ab ab ab ab abc abc"], 400, special_tokens=["ab", "<pad>"],
                             num_sentinels=0)
    names = {tok.id_to_token(i) for i in range(tok.vocab_size) if not tok.is_special(i)}
    assert "ab" not in names and any(len(n) > 1 for n in names)
    assert tok.encode("abc", disallowed_special=()) != [tok.token_to_id("ab")]


def test_small_corpus_gives_a_smaller_vocabulary_with_sentinels_on_top():
    tok = BPETokenizer.train(["hello hello"], 5000, num_sentinels=3)
    assert tok.vocab_size < 5000
    assert tok.sentinel_id(0) == tok.vocab_size - 1 and tok.sentinel_id(2) == tok.vocab_size - 3


@pytest.mark.parametrize("texts, vocab_size, match", [
    ([], 1000, "corpus is empty"),
    (["", ""], 1000, "corpus is empty"),
    (["some text"], 300, "vocab_size 300 is smaller than 256 byte tokens \\+ 5 special tokens "
                         "\\+ 100 sentinels = 361"),
])
def test_training_bad_input(texts, vocab_size, match):
    with pytest.raises(ValueError, match=match):
        BPETokenizer.train(texts, vocab_size)


def test_training_rejects_a_single_string_and_duplicate_specials():
    with pytest.raises(TypeError, match="wrap it in a list"):
        BPETokenizer.train("some text", 1000)
    with pytest.raises(ValueError, match="unique"):
        BPETokenizer.train(["x"], 1000, special_tokens=["<pad>", "<pad>"])


# ---------------------------------------------------------------------------------------
# Encoding and decoding
# ---------------------------------------------------------------------------------------

@settings(max_examples=150, deadline=None)
@given(st.text())
def test_decode_inverts_encode_for_any_string(s):
    tok = trained()
    assert tok.decode(tok.encode(s, allowed_special="all")) == s
    assert tok.decode(tok.encode(s, disallowed_special=())) == s


def test_split_patterns():
    import regex
    gpt2 = regex.compile(PATTERNS["gpt2"])
    gpt4 = regex.compile(PATTERNS["gpt4"])
    # The last space joins the next word: backtracking in \s+(?!\S).
    assert gpt2.findall("a   b") == ["a", "  ", " b"]
    assert gpt2.findall("I'll don't 12345") == ["I", "'ll", " don", "'t", " 12345"]
    assert gpt4.findall("I'LL 12345") == ["I", "'LL", " ", "123", "45"]
    assert gpt4.findall("x\n\n  y") == ["x", "\n\n", " ", " y"]


def test_special_tokens_raise_unless_allowed():
    tok = trained()
    with pytest.raises(ValueError, match="special token '<eos>' at character 5"):
        tok.encode("hello<eos>world")
    ids = tok.encode("hello<eos>world", allowed_special={"<eos>"})
    assert tok.eos_id in ids and tok.decode(ids) == "hello<eos>world"
    plain = tok.encode("hello<eos>world", disallowed_special=())
    assert tok.eos_id not in plain and tok.decode(plain) == "hello<eos>world"
    with pytest.raises(ValueError, match="'<pad>'"):
        tok.encode("<eos><pad>", allowed_special={"<eos>"})
    assert tok.encode("<extra_id_10><extra_id_1>", allowed_special="all") == [
        tok.sentinel_id(10), tok.sentinel_id(1)]
    with pytest.raises(ValueError, match="not special tokens"):
        tok.encode("x", allowed_special={"<nope>"})
    with pytest.raises(ValueError, match="must be 'all' or an iterable"):
        tok.encode("x", allowed_special="<eos>")


def test_encode_batch_cache_and_decode_skip_specials():
    tok = trained()
    texts = ["The quick brown fox.", "", "jumps over\n\nthe lazy dog"]
    first = tok.encode_batch(texts)
    assert first == [tok.encode(t) for t in texts] == tok.encode_batch(texts)
    ids = [tok.cls_id] + first[0] + [tok.sep_id]
    assert tok.decode(ids, skip_special_tokens=True) == texts[0]
    assert tok.decode(np.array(ids)) == "<cls>" + texts[0] + "<sep>"
    with pytest.raises(ValueError, match="id 99999 is outside the vocabulary"):
        tok.decode([5, 99999])
    with pytest.raises(ValueError, match="id -1 is outside the vocabulary"):
        tok.decode(iter([5, -1]))


def test_offsets_and_word_ids():
    tok = trained()
    text = "Hello wörld<eos>  ok"
    enc = tok.encode(text, allowed_special="all", return_offsets=True)
    assert isinstance(enc, Encoding) and enc.ids == tok.encode(text, allowed_special="all")
    # Words are the pre-split chunks and special tokens: 'Hello', ' wörld', '<eos>', ' ', ' ok'.
    extent = {}
    for w, (a, b) in zip(enc.word_ids, enc.offsets):
        lo, hi = extent.get(w, (a, b))
        extent[w] = (min(lo, a), max(hi, b))
    assert extent == {0: (0, 5), 1: (5, 11), 2: (11, 16), 3: (16, 17), 4: (17, 20)}
    assert enc.word_ids == sorted(enc.word_ids)
    for i, (a, b) in zip(enc.ids, enc.offsets):
        piece = tok.decode([i], errors="ignore")
        assert piece in text[a:b]       # a token holding part of 'ö' covers the whole 'ö'


def test_word_start_mask():
    tok = trained()
    starts = tok.word_start_mask()
    assert starts.shape == (tok.vocab_size,) and starts.dtype == bool
    assert all(starts[list(tok.special_ids)])
    assert starts[tok.encode(" the")[0]] and starts[tok.encode(",")[0]]
    assert not starts[tok.encode("e")[0]] and not starts[tok.encode("7")[0]]


# ---------------------------------------------------------------------------------------
# tokenizer.json
# ---------------------------------------------------------------------------------------

def test_save_and_load_round_trip(tmp_path):
    tok = trained("gpt4")
    path = tok.save(tmp_path)
    assert path.name == "tokenizer.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["version"] == "1.0" and data["model"]["type"] == "BPE"
    assert data["added_tokens"][0] == {"id": 0, "content": "<pad>", "single_word": False,
                                       "lstrip": False, "rstrip": False, "normalized": False,
                                       "special": True}
    first_merge = data["model"]["merges"][0]
    assert data["model"]["vocab"]["".join(first_merge)] == 5 + 256   # after specials and bytes
    loaded = BPETokenizer.load(path)
    assert loaded.fingerprint == tok.fingerprint and loaded.pattern_name == "gpt4"
    text = MULTILINGUAL + "<eos>"
    assert loaded.encode(text, allowed_special="all") == tok.encode(text, allowed_special="all")


def test_load_gpt2_style_file(tmp_path):
    data = trained("gpt2").to_json_dict()
    data["pre_tokenizer"] = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                             "use_regex": True}
    data["model"]["merges"] = [" ".join(m) for m in data["model"]["merges"]]
    (tmp_path / "tokenizer.json").write_text(json.dumps(data), encoding="utf-8")
    loaded = BPETokenizer.load(tmp_path)
    assert loaded.pattern_name == "gpt2"
    assert loaded.encode(MULTILINGUAL) == trained("gpt2").encode(MULTILINGUAL)


def test_load_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        BPETokenizer.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match="not valid JSON"):
        BPETokenizer.load(tmp_path / "bad.json")
    data = trained().to_json_dict()
    data["normalizer"] = {"type": "NFC"}
    (tmp_path / "nfc.json").write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(ValueError, match="normalizer"):
        BPETokenizer.load(tmp_path / "nfc.json")


# ---------------------------------------------------------------------------------------
# Parity with Hugging Face tokenizers (dev extra)
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("pattern", ["gpt2", "gpt4"])
def test_tokenizers_parity_on_the_corpus(pattern, tmpdir_str):
    hf = hf_twin(pattern, tmpdir_str)
    tok = trained(pattern)
    docs = default_corpus()[3000:3300] + [MULTILINGUAL]
    for doc in docs:
        enc = hf.encode(doc)
        ours = tok.encode(doc, allowed_special="all", return_offsets=True)
        assert ours.ids == enc.ids
        assert ours.offsets == enc.offsets and ours.word_ids == enc.word_ids


@pytest.mark.parametrize("pattern", ["gpt2", "gpt4"])
def test_tokenizers_parity_on_unicode_14_text(pattern, tmpdir_str):
    hf = hf_twin(pattern, tmpdir_str)
    tok = trained(pattern)

    @settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(texts_u14(), st.lists(st.sampled_from(["<eos>", "<pad>", "<extra_id_0>", "<mask>"]),
                                 max_size=2))
    def check(text, specials):
        text = "".join(specials[:1]) + text + "".join(specials[1:])
        enc = hf.encode(text)
        ours = tok.encode(text, allowed_special="all", return_offsets=True)
        assert ours.ids == enc.ids
        assert ours.offsets == enc.offsets
        assert ours.word_ids == enc.word_ids

    check()


def test_transformers_loads_the_file(tmp_path):
    transformers = pytest.importorskip("transformers")
    tok = trained()
    path = tok.save(tmp_path / "tokenizer.json")
    fast = transformers.PreTrainedTokenizerFast(tokenizer_file=str(path))
    assert fast(MULTILINGUAL)["input_ids"] == tok.encode(MULTILINGUAL)
    assert fast.convert_tokens_to_ids("<extra_id_0>") == tok.sentinel_id(0)


# ---------------------------------------------------------------------------------------
# The command line
# ---------------------------------------------------------------------------------------

def test_cli_train_and_encode(tmp_path, capsys):
    from minitransformer.cli import main

    (tmp_path / "a.txt").write_text("the cat sat on the mat\n" * 50, encoding="utf-8")
    out = tmp_path / "tok" / "tokenizer.json"
    assert main(["tokenizer", "train", "--data", str(tmp_path / "a.txt"), "--vocab-size", "400",
                 "--num-sentinels", "4", "--out", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    tok = BPETokenizer.load(out)
    assert tok.num_sentinels == 4 and tok.decode(tok.encode("the cat")) == "the cat"
    assert main(["tokenizer", "encode", "--tokenizer", str(out), "the mat<eos>"]) == 0
    assert "<eos>=1" in capsys.readouterr().out

    assert main(["tokenizer", "train", "--data", str(tmp_path / "none.txt"), "--out", str(out)]) == 2
    assert "none.txt' does not exist" in capsys.readouterr().err
    assert main(["tokenizer", "train", "--data", str(tmp_path / "a.txt"), "--vocab-size", "300",
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "vocab_size 300 is smaller" in err and "Traceback" not in err
