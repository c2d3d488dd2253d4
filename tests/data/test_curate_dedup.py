"""Exact and MinHash deduplication: hashing, the Jaccard estimate, clusters, survivors."""
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minitransformer.data.curate import (CurateConfig, Document, ExactDeduplicator, MinHashConfig,
                                         MinHasher, Pipeline, UnionFind, cluster_representatives,
                                         estimate_jaccard, minhash_words)
from minitransformer.data.curate.hashing import (min_hashes, min_hashes_reference, ngram_hashes,
                                                 word_hashes)
from minitransformer.data.curate.synthetic import Prose

PROSE = Prose(seed=7)
P31 = (1 << 31) - 1


def shingle_set(text: str, n: int = 5) -> set[tuple[str, ...]]:
    words = minhash_words(text)
    return set(zip(*(words[i:] for i in range(min(n, len(words))))))


def jaccard(a: str, b: str) -> float:
    sa, sb = shingle_set(a), shingle_set(b)
    return len(sa & sb) / len(sa | sb)


# --------------------------------------------------------------------------------------
# Hashing
# --------------------------------------------------------------------------------------

def test_word_hashes_are_fnv1a_of_the_utf8_bytes():
    def fnv1a(word: str) -> int:
        h = 0xCBF29CE484222325
        for byte in word.encode("utf-8"):
            h = ((h ^ byte) * 0x100000001B3) % (1 << 64)
        return h

    words = ["a", "the", "naïve", "日本語", "x" * 100]
    assert word_hashes(words).tolist() == [fnv1a(w) for w in words]
    assert fnv1a("a") == 0xAF63DC4C8601EC8C  # the published FNV-1a 64 test vector
    assert word_hashes([]).shape == (0,)


def test_ngram_hashes_depend_on_order_and_content_only():
    h = word_hashes("a b c a b c b a c".split())
    g = ngram_hashes(h, 3)
    assert g.shape == (7,)
    assert g[0] == g[3]                       # "a b c" twice
    assert len(set(g.tolist())) == 6          # "b c a", "c a b", "b c b", "c b a", "b a c" differ
    assert ngram_hashes(h, 10).shape == (0,)


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 300), st.integers(1, 40), st.integers(0, 2**32 - 1))
def test_min_hash_kernel_matches_its_numpy_reference(n_shingles, k, seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, P31, n_shingles, dtype=np.uint64)
    x[: n_shingles // 3] = rng.choice([0, 1, P31 - 1], n_shingles // 3)  # the edges of the field
    a = rng.integers(1, P31, k, dtype=np.uint64)
    b = rng.integers(0, P31, k, dtype=np.uint64)
    np.testing.assert_array_equal(min_hashes(x, a, b), min_hashes_reference(x, a, b))


def test_min_hash_kernel_reduces_modulo_p_at_the_edges():
    edges = [0, 1, 2, P31 - 2, P31 - 1]
    for x in edges:
        for a in edges[1:]:
            got = min_hashes(np.array([x], np.uint64), np.full(5, a, np.uint64),
                             np.array(edges, np.uint64))
            assert got.tolist() == [(a * x + b) % P31 for b in edges]


def test_signatures_do_not_depend_on_the_process():
    # Python's own str hash is salted per process; the signature must not be.
    text = PROSE.document(np.random.default_rng(0), 120)
    code = ("import sys; from minitransformer.data.curate import MinHasher; "
            "print(MinHasher().signature(sys.stdin.read()).tolist())")
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], input=text, capture_output=True,
                         text=True, env=env, check=True).stdout
    assert eval(out) == MinHasher().signature(text).tolist()


# --------------------------------------------------------------------------------------
# MinHash estimates
# --------------------------------------------------------------------------------------

def test_minhash_words_simplify_text():
    assert minhash_words("The Cat's 3.14 hats, in 2024!  Yes—no") == ["the", "cats", "0", "hats", "in", "0", "yesno"]


def test_signature_of_equal_texts_agree_and_empty_text_has_none():
    m = MinHasher()
    text = PROSE.document(np.random.default_rng(1), 80)
    assert estimate_jaccard(m.signature(text), m.signature(text.upper() + " ")) == 1.0
    assert m.signature(" ... !!! ") is None
    assert m.signature("only three words").shape == (112,)   # fewer than 5 words: one shingle


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), edits=st.integers(0, 120), n_words=st.integers(60, 400))
def test_jaccard_estimate_is_within_its_standard_error(seed, edits, n_words):
    rng = np.random.default_rng(seed)
    a = PROSE.document(rng, n_words)
    b = PROSE.edit(rng, a, edits / n_words) if edits else a
    m = MinHasher()
    k = m.a.size
    true = jaccard(a, b)
    estimate = estimate_jaccard(m.signature(a), m.signature(b))
    sigma = np.sqrt(true * (1 - true) / k)
    # 4.5 standard errors (one failure in ~150,000 draws), plus one entry of slack for
    # J near 0 or 1, where the normal approximation is poor.
    assert abs(estimate - true) <= 4.5 * sigma + 1 / k


def test_band_keys_agree_exactly_when_their_rows_agree():
    m = MinHasher()
    sig = m.signature(PROSE.document(np.random.default_rng(2), 100))
    other = sig.copy()
    other[8 * 3 + 5] += 1                              # one row of band 3 differs
    ka, kb = m.band_keys(sig), m.band_keys(other)
    assert ka.shape == (14,)
    assert (ka == kb).tolist() == [i != 3 for i in range(14)]


def test_one_equal_band_makes_a_pair_candidates_and_none_does_not():
    m = MinHasher()
    sig = m.signature(PROSE.document(np.random.default_rng(5), 100))
    one_band = sig + 1
    one_band[16:24] = sig[16:24]                      # equal in band 2 only: 8 of 112 rows
    every_band = sig.copy()
    every_band[::8] += 1                              # 98 of 112 rows equal, no band whole
    keys = np.stack([m.band_keys(s) for s in (sig, one_band, every_band)])
    assert cluster_representatives(keys).tolist() == [0, 0, 2]


def test_minhash_threshold_is_about_0_72():
    assert MinHashConfig().threshold == pytest.approx((1 / 14) ** (1 / 8))
    assert 0.71 < MinHashConfig().threshold < 0.73
    with pytest.raises(ValueError, match="minhash.rows"):
        MinHashConfig(rows=0)


# --------------------------------------------------------------------------------------
# Union-find and clusters
# --------------------------------------------------------------------------------------

def test_union_find_roots_are_the_smallest_member():
    uf = UnionFind(6)
    uf.union(4, 5)
    uf.union(5, 2)
    uf.union(1, 0)
    assert [uf.find(i) for i in range(6)] == [0, 0, 2, 3, 2, 2]
    uf.union(5, 1)
    assert [uf.find(i) for i in range(6)] == [0, 0, 0, 3, 0, 0]


def test_clusters_are_transitive_across_bands():
    keys = np.arange(5 * 3, dtype=np.uint64).reshape(5, 3) + 100   # nothing collides...
    keys[3, 0] = keys[1, 0]                                           # ...but 1~3 in band 0
    keys[4, 2] = keys[3, 2]                                           # and 3~4 in band 2
    assert cluster_representatives(keys).tolist() == [0, 1, 2, 1, 1]


# --------------------------------------------------------------------------------------
# Deduplication in the pipeline
# --------------------------------------------------------------------------------------

ONLY_DEDUP = CurateConfig.from_dict({s: {"enabled": False} for s in (
    "gopher_repetition", "gopher_quality", "fineweb", "c4", "pii")})


def run(texts, config=ONLY_DEDUP):
    docs = [Document({"id": i}, t, "mem", i + 1) for i, t in enumerate(texts)]
    pipe = Pipeline(config)
    kept = [d.record["id"] for d in pipe.run(docs)]
    return kept, pipe.report


def test_exact_duplicates_keep_the_first_copy():
    dedup = ExactDeduplicator()
    assert [dedup.seen_before(t) for t in ["a", "b", "a", "a ", "b"]] == [False, False, True, False, True]
    # In the pipeline, normalisation runs first: a trailing space or CRLF is no difference.
    exact_only = ONLY_DEDUP.updated({"minhash": {"enabled": False}})
    kept, report = run(["one two", "one two  ", "three", "one two\r\n"], exact_only)
    assert kept == [0, 2]
    assert report.stage("exact_dedup").dropped == {"exact_duplicate": 2}


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), sizes=st.lists(st.integers(1, 4), min_size=1, max_size=6))
def test_one_document_survives_per_near_duplicate_cluster(seed, sizes):
    """Clusters of small edits (1-2 changed words in 400, chained: each member edits an earlier
    one) and unrelated documents, shuffled: the first member of each cluster in input order
    survives, every other member goes, every unrelated document stays."""
    rng = np.random.default_rng(seed)
    texts, cluster_of = [], []
    for c, size in enumerate(sizes):
        members = [PROSE.document(rng, 400)]
        for _ in range(size - 1):
            base = members[int(rng.integers(len(members)))]
            members.append(PROSE.edit(rng, base, float(rng.uniform(0.5, 2.0)) / 400))
        texts += members
        cluster_of += [c] * size
    order = rng.permutation(len(texts))
    texts = [texts[i] for i in order]
    cluster_of = [cluster_of[i] for i in order]

    kept, report = run(texts)
    first_of = {}
    for i, c in enumerate(cluster_of):
        first_of.setdefault(c, i)
    assert kept == sorted(first_of.values())
    assert report.stage("minhash").dropped.get("near_duplicate", 0) == len(texts) - len(sizes)


def test_near_duplicate_examples_name_the_survivor():
    rng = np.random.default_rng(3)
    a = PROSE.document(rng, 300)
    kept, report = run([a, PROSE.document(rng, 300), PROSE.edit(rng, a, 0.005)])
    assert kept == [0, 1]
    (example,) = report.stage("minhash").examples["near_duplicate"]
    assert example["location"] == "mem:3" and example["detail"] == "near duplicate of mem:1"


def test_dissimilar_documents_are_all_kept():
    rng = np.random.default_rng(4)
    texts = [PROSE.document(rng, int(rng.integers(50, 300))) for _ in range(60)]
    kept, report = run(texts)
    assert kept == list(range(60))
    # A pair of heavily edited documents (J ~ 0.3) is far below the threshold too.
    a = texts[0]
    b = PROSE.edit(rng, a, 0.15)
    assert jaccard(a, b) < 0.45
    assert run([a, b])[0] == [0, 1]
