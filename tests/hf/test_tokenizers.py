"""Tokenizers of real checkpoints: WordPiece (BERT) and Unigram (T5) tokenizer.json files,
built in memory with ``tokenizers`` from the same component types the published files
use, give the same ids and the same decoded text here as there, on random text.

Random text is drawn from characters both Unicode tables know (Latin, Greek, Cyrillic, CJK,
fullwidth forms, combining accents, assorted spaces and controls), with the special tokens'
strings mixed in.
"""
import json
import unicodedata
from re import escape as regex_escape

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minitransformer.data import BPETokenizer
from minitransformer.data import Tokenizer as BaseTokenizer
from minitransformer.hf.tokenizer_json import UnigramTokenizer, WordPieceTokenizer, load_tokenizer_json
from minitransformer.hf.tokenizer_steps import DECODERS, NORMALIZERS, PRE_TOKENIZERS
from tests.hf.charsmap import precompiled_spec

tokenizers = pytest.importorskip("tokenizers")
from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors  # noqa: E402

WORDS = ["the", "cat", "sat", "on", "mat", "un", "##able", "##s", "##ing", "run", "runs", "play", "##ed",
         "é", "naïve", "café", "über", "straße", "σ", "мир", "日", "本", "don", "'", "t", "n", "##'"]
SPACES = " \t\n\r\u00a0\u3000\u2009\x0b\x85"
CHARS = ("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,!?'\"-()[]<>#$%^&*_"
         "éèêëàâäçñöüßÉÀÇÑÖÜ" "αβγσςΣΑΩ" "абвгмирМИР" "日本語中文字" "ａｂｃＡＢＣ１２３！？"
         "\u0301\u0308\u0302" "ﬁﬂ½①" "\x00\x07\ufffd\u200b\ue000")


def texts(specials):
    piece = st.one_of(st.sampled_from(WORDS), st.text(alphabet=CHARS + SPACES, max_size=6),
                      st.sampled_from(specials), st.sampled_from(list(SPACES)))
    return st.lists(piece, max_size=12).map("".join)


# ---------------------------------------------------------------------------------------
# BERT: WordPiece, BertNormalizer, BertPreTokenizer, [CLS] $A [SEP], WordPiece decoder
# ---------------------------------------------------------------------------------------

BERT_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def bert_tokenizer(lowercase: bool) -> Tokenizer:
    vocab = list(BERT_SPECIALS)
    letters = sorted({unicodedata.normalize("NFD", c)[0].lower() if lowercase else c for c in CHARS if c.isprintable()})
    for w in WORDS + letters + ["##" + c for c in letters]:
        if w not in vocab:
            vocab.append(w)
    tok = Tokenizer(tokenizers.models.WordPiece({w: i for i, w in enumerate(vocab)}, unk_token="[UNK]",
                                                max_input_chars_per_word=10))
    tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=None,
                                                lowercase=lowercase)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.add_special_tokens(BERT_SPECIALS)
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab.index("[CLS]")), ("[SEP]", vocab.index("[SEP]"))])
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    return tok


# ---------------------------------------------------------------------------------------
# T5: Unigram, Precompiled (an NFKC table), WhitespaceSplit + Metaspace, $A </s>, Metaspace decoder
# ---------------------------------------------------------------------------------------

T5_SENTINELS = [f"<extra_id_{k}>" for k in range(4)]
NFKC_SOURCES = "ａｂｃＡＢＣ１２３！？ﬁﬂ½①\u3000\u00a0\u2009"


def nfkc_table() -> dict:
    table = {c: unicodedata.normalize("NFKC", c) for c in NFKC_SOURCES}
    table.update({"e\u0301": "é", "a\u0308": "ä", "\t": " ", "\u200b": ""})   # compositions, deletions
    return table


def t5_tokenizer(legacy_normalizer: bool) -> Tokenizer:
    rng = np.random.default_rng(0)
    pieces = ["<pad>", "</s>", "<unk>", "\u2581"]
    for w in WORDS + list(CHARS.lower()):
        for p in ("\u2581" + w.lstrip("#"), w.lstrip("#")):
            if p not in pieces and p.strip():
                pieces.append(p)
    vocab = [(p, 0.0 if i < 3 else float(-rng.uniform(1, 12))) for i, p in enumerate(pieces)]
    vocab += [(s, 0.0) for s in reversed(T5_SENTINELS)]          # T5 puts <extra_id_0> last
    tok = Tokenizer(tokenizers.models.Unigram(vocab, unk_id=2, byte_fallback=False))
    tok.add_special_tokens(["<pad>", "</s>", "<unk>", *reversed(T5_SENTINELS)])
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")])
    tok.post_processor = processors.TemplateProcessing(single=["$A", "</s>"], pair=["$A", "</s>", "$B", "</s>"],
                                                       special_tokens=[("</s>", 1)])
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
    data = json.loads(tok.to_str())
    charsmap = precompiled_spec(nfkc_table())
    if legacy_normalizer:
        data["normalizer"] = charsmap
    else:   # what transformers' SentencePiece converter writes today
        data["normalizer"] = {"type": "Sequence", "normalizers": [
            charsmap, {"type": "Strip", "strip_left": False, "strip_right": True},
            {"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": "\u2581"}]}
    return Tokenizer.from_str(json.dumps(data))


TOKENIZERS = {
    "bert-uncased": (lambda: bert_tokenizer(True), WordPieceTokenizer, BERT_SPECIALS),
    "bert-cased": (lambda: bert_tokenizer(False), WordPieceTokenizer, BERT_SPECIALS),
    "t5": (lambda: t5_tokenizer(True), UnigramTokenizer, ["<pad>", "</s>", "<unk>", *T5_SENTINELS]),
    "t5-sequence-normalizer": (lambda: t5_tokenizer(False), UnigramTokenizer, ["</s>", *T5_SENTINELS]),
}


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    """name -> (the tokenizers reference, ours loaded from the file it saved)."""
    out = {}
    for name, (build, cls, _) in TOKENIZERS.items():
        ref = build()
        path = tmp_path_factory.mktemp(name) / "tokenizer.json"
        ref.save(str(path))
        ours = load_tokenizer_json(path)
        assert type(ours) is cls
        out[name] = (ref, ours)
    return out


@pytest.mark.parametrize("name", list(TOKENIZERS))
def test_ids_and_decoded_text_match_tokenizers_on_random_text(pairs, name):
    ref, ours = pairs[name]

    @settings(max_examples=150, deadline=None)
    @given(text=texts(TOKENIZERS[name][2]), skip=st.booleans())
    def check(text, skip):
        for add in (False, True):
            want = ref.encode(text, add_special_tokens=add).ids
            assert ours.encode(text, allowed_special="all", add_special_tokens=add) == want, (text, add)
        assert ours.decode(want, skip_special_tokens=skip) == ref.decode(want, skip_special_tokens=skip)

    check()


@pytest.mark.parametrize("name", list(TOKENIZERS))
def test_decoding_random_ids_matches_tokenizers(pairs, name):
    ref, ours = pairs[name]
    assert ours.vocab_size == ref.get_vocab_size()
    rng = np.random.default_rng(1)
    for _ in range(200):
        ids = rng.integers(0, ours.vocab_size, rng.integers(0, 8)).tolist()
        for skip in (False, True):
            assert ours.decode(ids, skip_special_tokens=skip) == ref.decode(ids, skip_special_tokens=skip), ids


def test_special_ids_roles_and_sentinels(pairs):
    _, bert = pairs["bert-uncased"]
    assert [bert.pad_id, bert.unk_id, bert.cls_id, bert.sep_id, bert.mask_id] == [0, 1, 2, 3, 4]
    assert bert.special_ids == (0, 1, 2, 3, 4) and bert.id_to_token(bert.mask_id) == "[MASK]"
    with pytest.raises(ValueError, match="no eos token"):
        bert.eos_id
    assert bert.encode("the [MASK] sat", disallowed_special=()) != bert.encode("the [MASK] sat", allowed_special="all")
    starts = bert.word_start_mask()
    assert not starts[bert.token_to_id("##ing")] and starts[bert.token_to_id("run")]

    _, t5 = pairs["t5"]
    assert (t5.pad_id, t5.eos_id, t5.unk_id) == (0, 1, 2)
    assert t5.num_sentinels == 4 and t5.sentinel_id(0) == t5.vocab_size - 1 and t5.sentinel_id(3) == t5.vocab_size - 4
    assert t5.encode("the <extra_id_1> cat", allowed_special={"<extra_id_1>"})[1] == t5.sentinel_id(1)


def test_save_writes_the_file_back_and_reloads_identically(pairs, tmp_path):
    for name, (_, ours) in pairs.items():
        again = load_tokenizer_json(ours.save(tmp_path / name))
        assert again.fingerprint == ours.fingerprint
        text = "The café's naïve cat <extra_id_0> [MASK] runs!"
        assert again.encode(text, allowed_special="all") == ours.encode(text, allowed_special="all")


@pytest.mark.parametrize("name", list(TOKENIZERS))
def test_special_token_text_raises_unless_allowed_as_for_bpe(pairs, name):
    """The one rule of every tokenizer here: a special token's string in the text raises
    unless allowed; disallowed_special=() reads it as plain text, which is what tokenizers
    does with encode_special_tokens set."""
    ref, ours = pairs[name]
    assert isinstance(ours, BaseTokenizer)        # the base that BPETokenizer shares
    special = TOKENIZERS[name][2][-1]
    text = f"the cat {special} sat"
    with pytest.raises(ValueError, match=rf"special token '{regex_escape(special)}' at character 8"):
        ours.encode(text)
    with pytest.raises(ValueError, match="special token"):
        ours.encode_batch(["the cat", text], add_special_tokens=True)
    allowed = ours.encode(text, allowed_special={special})
    assert allowed == ref.encode(text, add_special_tokens=False).ids
    plain = ours.encode(text, disallowed_special=())
    assert plain != allowed         # (T5's Unigram may still spell the text with the sentinel's piece)
    assert plain == ours.encode_ordinary(text)
    ref.encode_special_tokens = True
    try:
        assert plain == ref.encode(text, add_special_tokens=False).ids
    finally:
        ref.encode_special_tokens = False


@settings(max_examples=60, deadline=None)
@given(text=st.text(alphabet="ab 1２,.!-_\u00a0\u3000\u2581\u00b2", max_size=20),
       behavior=st.sampled_from(["removed", "isolated", "merged_with_previous", "merged_with_next", "contiguous"]))
def test_split_family_pre_tokenizers_match_tokenizers(text, behavior):
    cases = [
        (pre_tokenizers.Split(" ", behavior), {"type": "Split", "pattern": {"String": " "}, "behavior": behavior,
                                               "invert": False}),
        (pre_tokenizers.Split(tokenizers.Regex(r"\d+|,"), behavior, invert=True),
         {"type": "Split", "pattern": {"Regex": r"\d+|,"}, "behavior": behavior, "invert": True}),
        (pre_tokenizers.Punctuation(behavior), {"type": "Punctuation", "behavior": behavior}),
        (pre_tokenizers.Digits(individual_digits=True), {"type": "Digits", "individual_digits": True}),
        (pre_tokenizers.Digits(individual_digits=False), {"type": "Digits", "individual_digits": False}),
        (pre_tokenizers.Whitespace(), {"type": "Whitespace"}),
        (pre_tokenizers.Metaspace(prepend_scheme="first", split=True), {"type": "Metaspace", "replacement": "\u2581",
                                                                         "prepend_scheme": "first", "split": True}),
        (pre_tokenizers.Metaspace(prepend_scheme="never", split=False), {"type": "Metaspace", "replacement": "\u2581",
                                                                          "prepend_scheme": "never", "split": False}),
    ]
    for ref, spec in cases:
        ours = PRE_TOKENIZERS[spec["type"]](spec)
        assert [p for p, _ in ours([(text, 0)])] == [p for p, _ in ref.pre_tokenize_str(text)], spec


NORMALIZER_SPECS = [
    {"type": "BertNormalizer", "clean_text": True, "handle_chinese_chars": True, "strip_accents": True,
     "lowercase": False},
    {"type": "Sequence", "normalizers": [{"type": "NFD"}, {"type": "StripAccents"}, {"type": "Lowercase"}]},
    {"type": "Sequence", "normalizers": [{"type": "NFKC"}, {"type": "Strip", "strip_left": True, "strip_right": False},
                                         {"type": "Prepend", "prepend": "\u2581"}]},
    {"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": "\u2581"},
    {"type": "Replace", "pattern": {"String": "a"}, "content": "xy"},
    {"type": "NFKD"}, {"type": "NFC"},
]
DECODER_SPECS = [
    {"type": "Sequence", "decoders": [{"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
                                      {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
    {"type": "WordPiece", "prefix": "##", "cleanup": False},
    {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "never", "split": True},
]


def _reference(kind: str, spec: dict):
    """tokenizers' own normalizer or decoder of ``spec``, read from a minimal tokenizer.json."""
    model = {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
             "max_input_chars_per_word": 100, "vocab": {"[UNK]": 0}}
    return getattr(Tokenizer.from_str(json.dumps({"version": "1.0", kind: spec, "model": model})), kind)


NORMALIZER_PAIRS = [(NORMALIZERS[s["type"]](s), _reference("normalizer", s), s) for s in NORMALIZER_SPECS]
DECODER_PAIRS = [(DECODERS[s["type"]](s), _reference("decoder", s), s) for s in DECODER_SPECS]


@settings(max_examples=80, deadline=None)
@given(text=st.text(alphabet=CHARS + SPACES + "\u0903\u20dd\u0488", max_size=16),
       tokens=st.lists(st.sampled_from(["\u2581", "a", "##", "##c", " ", "\u2581\u2581", " .", "n't", "x\u2581y"]),
                       max_size=6))
def test_other_normalizers_and_decoders_match_tokenizers(text, tokens):
    for ours, ref, spec in NORMALIZER_PAIRS:
        assert ours(text) == ref.normalize_str(text), spec
    for ours, ref, spec in DECODER_PAIRS:
        assert "".join(ours(tokens)) == ref.decode(tokens), spec


def test_byte_level_bpe_files_load_as_our_bpe_tokenizer(tmp_path):
    tok = BPETokenizer.train(["the cat sat on the mat"] * 20, 300, num_sentinels=2)
    loaded = load_tokenizer_json(tok.save(tmp_path / "tokenizer.json"))
    assert isinstance(loaded, BPETokenizer) and loaded.encode("the cat") == tok.encode("the cat")


@pytest.mark.parametrize("edit, fragment", [
    (lambda d: d["model"].update(type="WordLevel"), "model type 'WordLevel'"),
    (lambda d: d.update(normalizer={"type": "ByteLevel"}), "normalizer type 'ByteLevel'"),
    (lambda d: d.update(pre_tokenizer={"type": "UnicodeScripts"}), "pre_tokenizer type 'UnicodeScripts'"),
    (lambda d: d.update(model="oops"), "no model section"),
])
def test_unsupported_files_are_refused_naming_what(pairs, tmp_path, edit, fragment):
    data = json.loads(pairs["bert-uncased"][0].to_str())
    edit(data)
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=fragment):
        load_tokenizer_json(path)


@pytest.mark.parametrize("pattern", [r"""(')(?:s|t)| ?(\p{L})+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""",
                                     r"""(?i:'s|'t)| ?\p{L}{1,4}|(\p{N})|[^\p{L}\p{N}]"""])
def test_a_byte_level_file_with_its_own_split_pattern_encodes_as_tokenizers_does(tmp_path, pattern):
    """Whole matches cut the text, whatever groups the pattern has, as in tokenizers (the
    pattern runs under the time limit of tokenizer_patterns, which must not change a split)."""
    data = BPETokenizer.train(["the cat's 12 mats, don't they? " * 3] * 10, 320, num_sentinels=0).to_json_dict()
    data["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = pattern
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(data))
    ours, ref = load_tokenizer_json(path), Tokenizer.from_file(str(path))
    for text in ["the cat's 12 mats, don't they?", "Iñtërnâtiônàlizætiøn 2024!!  x", "a" * 50 + " 1234567"]:
        assert ours.encode(text) == ref.encode(text, add_special_tokens=False).ids, text


@settings(max_examples=40, deadline=None)
@given(text=st.text(alphabet="ab 12,.!", max_size=20),
       behavior=st.sampled_from(["removed", "isolated", "merged_with_previous", "contiguous"]))
def test_a_split_pattern_with_groups_cuts_at_whole_matches_as_tokenizers_does(text, behavior):
    pattern = r"(\d)+|(,)|(?:\.|!)+"
    ref = pre_tokenizers.Split(tokenizers.Regex(pattern), behavior)
    ours = PRE_TOKENIZERS["Split"]({"type": "Split", "pattern": {"Regex": pattern}, "behavior": behavior})
    assert [p for p, _ in ours([(text, 0)])] == [p for p, _ in ref.pre_tokenize_str(text)]
    replace = {"type": "Replace", "pattern": {"Regex": r"(a)+|(\d)"}, "content": "<\u2581>"}
    assert NORMALIZERS["Replace"](replace)(text) == _reference("normalizer", replace).normalize_str(text)
