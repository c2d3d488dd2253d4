"""Tokenizer files from elsewhere: a tokenizer.json with missing fields, wrong types, odd sizes
or patterns that backtrack without end gets a correct load and encode, or one clear error from
the library (a ValueError naming what is wrong; ``PatternTimeout``, itself a ValueError, for a
pattern that runs past its time limit), never another exception, a hang or a crash.

The time limit is set small here (a few hundredths of a second of processor time per text),
so that a pathological pattern costs the test little.
"""
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minitransformer.data import PATTERNS, BPETokenizer, PatternTimeout, pattern_time_limit
from minitransformer.data.tokenizer_patterns import unrolled_size
from minitransformer.hf.tokenizer_json import load_tokenizer_json

LIMIT = 0.03                    # seconds of processor time per pattern and text

# Patterns that nest quantifiers. The regex package defuses the classic ones, (a+)+$ and
# (a|aa)*b among them, which therefore encode; bounded repeats and lazy groups it does not.
EXPONENTIAL = [r"(a{1,5}){1,20}b", r"(.*?,){11}P", r"(?:(?:a{1,5}){1,20}){1,3}c"]
NESTED = [r"(a+)+$", r"(a|aa)*b", r"(a*)*b", r"((a+)+)+c", r"(\w+\s?)+$", r"(.*a){12}", *EXPONENTIAL]
# ... and patterns that do not compile, or whose nested counted repeats would take minutes to.
BROKEN = ["(a", "[", "a{2,1}", r"\p{NoSuchProperty}", "(?P<x>a)(?P=y)", "\\", "a{4294967296}",
          r"((a{100}){100}){1000}"]
DEEP = "(" * 400 + "a" + ")" * 400          # compiles, or is refused, as the recursion limit allows
# Texts on which those patterns backtrack: long runs of what they repeat, then a mismatch.
TEXTS = ["hello world, the cat sat on the mat", "a" * 300 + "!", "1," * 120, "aaaa bbbb " * 30, "",
         "\u2581\u3000\x00 mixed ünïcode 日本 ４２", "[CLS] x [MASK] </s> <extra_id_0>"]

VALUES = st.one_of(
    st.integers(-3, 3), st.integers(10**5, 10**15), st.sampled_from([2**31, 2**63, -(2**63)]),
    st.floats(allow_nan=True, allow_infinity=True), st.booleans(), st.none(), st.text(max_size=5),
    st.lists(st.integers(-2, 5), max_size=3), st.lists(st.text(max_size=3), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(-2, 5), max_size=2),
    st.sampled_from(NESTED + BROKEN).map(lambda p: {"Regex": p}),
)


def bpe_file() -> dict:
    tok = BPETokenizer.train(["the cat sat on the mat, hello world 123"] * 10, 300, num_sentinels=2)
    return tok.to_json_dict()


def wordpiece_file() -> dict:
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sat", "on", "mat", "a", "##a", "hello",
             "world", ",", "!", "1", "##1"]
    return {"version": "1.0",
            "added_tokens": [{"id": i, "content": w, "special": True} for i, w in enumerate(words[:5])],
            "normalizer": {"type": "BertNormalizer", "lowercase": True},
            "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": r"\d+"}, "behavior": "Isolated", "invert": False},
                {"type": "BertPreTokenizer"}]},
            "post_processor": {"type": "TemplateProcessing",
                               "single": [{"SpecialToken": {"id": "[CLS]"}}, {"Sequence": {"id": "A"}},
                                          {"SpecialToken": {"id": "[SEP]"}}],
                               "special_tokens": {"[CLS]": {"ids": [2]}, "[SEP]": {"ids": [3]}}},
            "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": True},
            "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                      "max_input_chars_per_word": 100, "vocab": {w: i for i, w in enumerate(words)}}}


def unigram_file() -> dict:
    pieces = ["<pad>", "</s>", "<unk>", "\u2581", "\u2581the", "\u2581cat", "a", "t", "h", "e", "c", "s", "\u2581a"]
    return {"version": "1.0",
            "added_tokens": [{"id": i, "content": p, "special": True} for i, p in enumerate(pieces[:3])],
            "normalizer": {"type": "Sequence", "normalizers": [
                {"type": "NFKC"}, {"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": " "}]},
            "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
                {"type": "WhitespaceSplit"},
                {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always"}]},
            "post_processor": {"type": "TemplateProcessing", "single": [{"Sequence": {"id": "A"}},
                                                                        {"SpecialToken": {"id": "</s>"}}],
                               "special_tokens": {"</s>": {"ids": [1]}}},
            "decoder": {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always"},
            "model": {"type": "Unigram", "unk_id": 2,
                      "vocab": [[p, 0.0 if i < 3 else -1.0 - i / 4] for i, p in enumerate(pieces)]}}


FILES = {"bpe": bpe_file(), "wordpiece": wordpiece_file(), "unigram": unigram_file()}


def paths(node, prefix=()):
    """Every place in the JSON tree a mutation can hit: (path of keys/indices) for each node."""
    yield prefix
    if isinstance(node, dict):
        for k in node:
            yield from paths(node[k], prefix + (k,))
    elif isinstance(node, list):
        for i in range(min(len(node), 3)):          # the first few items stand for the rest
            yield from paths(node[i], prefix + (i,))


def load_and_encode(tmp_path, data):
    """Load the file and encode every text; the ids it returns, or the library's ValueError."""
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(data))
    tok = load_tokenizer_json(path)
    out = []
    for text in TEXTS:
        ids = tok.encode(text, disallowed_special=())
        assert all(isinstance(i, int) and 0 <= i < tok.vocab_size for i in ids), ids
        tok.decode(ids)
        out.append(ids)
    return out


def with_pattern(kind: str, pattern: str) -> dict:
    """The ``kind`` file with its regex (the BPE pre-split, the Split, the Replace) set to ``pattern``."""
    doc = json.loads(json.dumps(FILES[kind]))
    if kind == "bpe":
        doc["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = pattern
    elif kind == "wordpiece":
        doc["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = pattern
    else:
        doc["normalizer"]["normalizers"][1]["pattern"]["Regex"] = pattern
    return doc


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kind=st.sampled_from(sorted(FILES)), data=st.data())
def test_a_mutated_tokenizer_file_loads_and_encodes_or_is_refused_in_one_clear_error(tmp_path, kind, data):
    pattern = data.draw(st.one_of(st.none(), st.sampled_from(NESTED + BROKEN + [DEEP])), label="pattern")
    doc = with_pattern(kind, pattern) if pattern is not None else json.loads(json.dumps(FILES[kind]))
    for _ in range(data.draw(st.integers(1, 3), label="mutations")):
        where = data.draw(st.sampled_from(list(paths(doc))[1:]), label="path")
        parent = doc
        for key in where[:-1]:
            parent = parent[key]
        if data.draw(st.booleans(), label="delete"):
            del parent[where[-1]]
        else:
            parent[where[-1]] = data.draw(VALUES, label=f"value at {where}")
    try:
        text = json.dumps(doc)
    except ValueError:
        return
    with pattern_time_limit(LIMIT, 0.0):
        try:
            load_and_encode(tmp_path, json.loads(text))
        except ValueError as e:                 # the library's refusals, PatternTimeout among them
            assert str(e).strip() and "Traceback" not in str(e), e


@pytest.mark.parametrize("kind", sorted(FILES))
@pytest.mark.parametrize("pattern", EXPONENTIAL)
def test_a_pattern_past_its_time_limit_is_named_with_the_texts_length(tmp_path, kind, pattern):
    bait = {"(a{1,5}){1,20}b": "a" * 60, "(.*?,){11}P": "1," * 40}.get(pattern, "a" * 60)
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(with_pattern(kind, pattern)))
    tok = load_tokenizer_json(path)
    with pattern_time_limit(LIMIT, 0.0):
        tok.encode("hello world")                               # ordinary text is no trouble
        with pytest.raises(PatternTimeout) as e:
            tok.encode(bait)
    message = str(e.value)
    assert repr(pattern) in message and f"text of {len(bait):,} characters" in message, message
    assert isinstance(e.value, ValueError) and "set_pattern_time_limit" in message


def test_the_time_limit_scales_with_the_length_of_the_text(tmp_path):
    """A limit of 0 s plus a per-character allowance: enough for a long ordinary text (here
    100 us per character, about a thousand times what the split takes), too little for none."""
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(with_pattern("bpe", r" ?\p{L}+| ?\p{N}+|\s+|[^\s\p{L}\p{N}]+")))
    tok = load_tokenizer_json(path)
    long = "the cat sat on the mat " * 2000
    with pattern_time_limit(0.0, 1e-4):
        assert tok.decode(tok.encode(long)) == long
    with pattern_time_limit(0.0, 0.0), pytest.raises(PatternTimeout, match=f"text of {len(long):,} characters"):
        tok.encode(long)


@pytest.mark.parametrize("kind", sorted(FILES))
@pytest.mark.parametrize("pattern", BROKEN + [42, None])
def test_a_pattern_that_does_not_compile_is_refused_at_load_naming_it(tmp_path, kind, pattern):
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(with_pattern(kind, pattern)))
    with pytest.raises(ValueError) as e:
        load_tokenizer_json(path)
    message = str(e.value)
    assert not isinstance(e.value, PatternTimeout)
    assert (repr(pattern[:60]) if isinstance(pattern, str) else "must be a regex string") in message, message
    assert "pattern" in message and str(path) in message, message


def test_the_unrolled_size_of_a_pattern_is_estimated_from_above():
    assert unrolled_size(PATTERNS["gpt2"]) < 100 and unrolled_size(PATTERNS["gpt4"]) < 100
    assert unrolled_size(r"\p{L}{1,3}") == 3 and unrolled_size(r"[a{]{5}") == 5 and unrolled_size("(ab|c){10}") == 30
    assert unrolled_size(r"((a{1000}){1000}){1000}") == 10**9 and unrolled_size(r"(?:x{10}|y){5,}") >= 50
    assert unrolled_size("a{" + "9" * 5000 + "}") > 10**11 and unrolled_size("\\") == 1
