"""Pre-training data curation: from scraped text to a corpus worth training on.

``curate(inputs, out_dir)`` streams .txt/.jsonl documents through Unicode normalisation,
exact deduplication, Gopher's repetition and quality rules, FineWeb's and C4's rules, an
optional word blocklist, PII scrubbing and MinHash near-deduplication, writes the survivors
as .jsonl and reports what each stage removed and why. ``pipeline`` explains the stages; each
rule lives in its own module with its thresholds and their sources.
"""
from .blocklist import Blocklist, BlocklistConfig
from .c4 import C4Config, c4_clean
from .dedup import (ExactDedupConfig, ExactDeduplicator, MinHashConfig, MinHasher, UnionFind,
                    cluster_representatives, estimate_jaccard, minhash_words)
from .fineweb import FineWebConfig, fineweb_quality
from .normalize import NormalizeConfig, normalize_text
from .pii import PIIConfig, scrub_pii
from .pipeline import (GPT2_PRESPLIT, OUTPUT_NAME, CurateConfig, Pipeline, TokenCounter, curate,
                       load_config)
from .quality import GopherQualityConfig, GopherRepetitionConfig, gopher_quality, gopher_repetition
from .records import Document, InputIssue, RecordReader
from .report import Report, StageReport

__all__ = [
    "curate", "Pipeline", "CurateConfig", "load_config", "TokenCounter", "GPT2_PRESPLIT", "OUTPUT_NAME",
    "Report", "StageReport", "Document", "InputIssue", "RecordReader",
    "NormalizeConfig", "normalize_text",
    "ExactDedupConfig", "ExactDeduplicator",
    "GopherRepetitionConfig", "gopher_repetition", "GopherQualityConfig", "gopher_quality",
    "FineWebConfig", "fineweb_quality", "C4Config", "c4_clean",
    "BlocklistConfig", "Blocklist", "PIIConfig", "scrub_pii",
    "MinHashConfig", "MinHasher", "minhash_words", "estimate_jaccard", "UnionFind",
    "cluster_representatives",
]
