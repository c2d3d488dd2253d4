"""Text in, integer arrays out: the tokenizer, corpora, and the token files training reads.

Reading order: ``tokenizer_base`` (what every tokenizer shares: special tokens, roles,
sentinels, the file), ``tokenizer_patterns`` (split patterns from files, compiled with care and
run with a time limit), ``bpe_trainer`` (how merges are learned), ``tokenizer`` (byte-level BPE
and tokenizer.json), ``corpus`` (documents from files and the built-in corpus),
``token_file`` (a tokenized corpus on disk, memory-mapped). Nothing here imports the
autograd, layers or models.
"""
from minitransformer.data.corpus import (
    cache_dir,
    corpus_files,
    default_corpus,
    docstrings,
    is_validation,
    read_documents,
    split_documents,
)
from minitransformer.data.token_file import (
    TokenFileInfo,
    corpus_key,
    load_tokens,
    token_dtype,
    token_file_info,
    tokenize_to_file,
)
from minitransformer.data.tokenizer import (
    DEFAULT_NUM_SENTINELS,
    DEFAULT_SPECIAL_TOKENS,
    PATTERNS,
    BPETokenizer,
    Encoding,
    bytes_to_unicode,
)
from minitransformer.data.tokenizer_base import Tokenizer, sentinel_token
from minitransformer.data.tokenizer_patterns import PatternTimeout, pattern_time_limit, set_pattern_time_limit

__all__ = [
    "Tokenizer", "BPETokenizer", "Encoding", "PATTERNS", "DEFAULT_SPECIAL_TOKENS", "DEFAULT_NUM_SENTINELS",
    "bytes_to_unicode", "sentinel_token", "PatternTimeout", "pattern_time_limit", "set_pattern_time_limit",
    "read_documents", "corpus_files", "default_corpus", "docstrings", "split_documents",
    "is_validation", "cache_dir",
    "tokenize_to_file", "load_tokens", "token_file_info", "corpus_key", "token_dtype",
    "TokenFileInfo",
]
