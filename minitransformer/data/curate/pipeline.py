"""The curation pipeline: stages in order, their configuration, and the run that reports them.

Raw web text is mostly not worth training on: menus, cookie banners, spam, copies of the same
page, lists of numbers. Web pipelines (Gopher's MassiveText, C4, FineWeb, Dolma, DCLM) keep
roughly 1-3% of the tokens they crawl. This module chains the rules of those pipelines; each
stage either passes a document on (possibly edited) or drops it with a reason:

=================  ============================================================  ============
stage              what it does                                                  edits text?
=================  ============================================================  ============
normalize          one Unicode form, "\\n" line ends, no invisible characters      yes
exact_dedup        drop a document whose normalised text was seen before         no
gopher_repetition  drop documents made of repeated lines, paragraphs, n-grams    no
gopher_quality     drop documents that do not look like prose                    no
fineweb            FineWeb's extra line-based rules                              no
c4                 drop boilerplate lines; drop pages with code or filler        yes
blocklist          drop documents with words from the user's list                no
pii                scrub e-mail, phone and IPv4; drop documents full of them     yes
minhash            keep one document per cluster of near-duplicates              no
=================  ============================================================  ============

Cheap stages that drop much go first, so the expensive ones see less text; the repetition
and line rules see the page before C4 rewrites it; near-duplicate detection runs last, on the
text that will actually be kept, so every cluster keeps exactly one document.

Every stage streams one document at a time except ``minhash``, which must see all documents
before it knows which to drop: survivors of the other stages go to a temporary spool file while
their band keys (14 x 8 bytes each) stay in memory; after the clusters are formed, the spool
is read back in order. Memory therefore grows with the number of documents (by about 200
bytes each: band keys, an index, an exact-duplicate digest), never with their text.
"""
from __future__ import annotations

import dataclasses
import json
import tempfile
import time
from array import array
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import regex
from tqdm.auto import tqdm

from minitransformer.atomic import atomic_file

from ..tokenizer import PATTERNS
from .blocklist import Blocklist, BlocklistConfig
from .c4 import C4Config, c4_clean
from .dedup import ExactDedupConfig, ExactDeduplicator, MinHashConfig, MinHasher, cluster_representatives
from .fineweb import FineWebConfig, fineweb_quality
from .normalize import NormalizeConfig, normalize_text
from .pii import PIIConfig, scrub_pii
from .quality import GopherQualityConfig, GopherRepetitionConfig, gopher_quality, gopher_repetition
from .records import Document, RecordReader
from .report import Report, StageReport


@dataclasses.dataclass(frozen=True)
class CurateConfig:
    """Every stage's settings; the field order is the order the stages run in."""
    normalize: NormalizeConfig = dataclasses.field(default_factory=NormalizeConfig)
    exact_dedup: ExactDedupConfig = dataclasses.field(default_factory=ExactDedupConfig)
    gopher_repetition: GopherRepetitionConfig = dataclasses.field(default_factory=GopherRepetitionConfig)
    gopher_quality: GopherQualityConfig = dataclasses.field(default_factory=GopherQualityConfig)
    fineweb: FineWebConfig = dataclasses.field(default_factory=FineWebConfig)
    c4: C4Config = dataclasses.field(default_factory=C4Config)
    blocklist: BlocklistConfig = dataclasses.field(default_factory=BlocklistConfig)
    pii: PIIConfig = dataclasses.field(default_factory=PIIConfig)
    minhash: MinHashConfig = dataclasses.field(default_factory=MinHashConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def updated(self, changes: dict, where: str = "config") -> "CurateConfig":
        """A copy with ``{stage: {field: value}}`` applied; names and types are checked."""
        stages = {f.name: f for f in dataclasses.fields(self)}
        if not isinstance(changes, dict):
            raise ValueError(f"{where}: expected a JSON object of stages, got {type(changes).__name__}")
        new = {}
        for stage, values in changes.items():
            if stage not in stages:
                raise ValueError(f"{where}: unknown stage {stage!r}; the stages are "
                                 f"{', '.join(stages)}")
            if not isinstance(values, dict):
                raise ValueError(f"{where}: {stage} must be an object of settings, "
                                 f"got {type(values).__name__}")
            current = getattr(self, stage)
            fields = {f.name: f for f in dataclasses.fields(current)}
            checked = {}
            for name, value in values.items():
                if name not in fields:
                    raise ValueError(f"{where}: {stage} has no setting {name!r}; its settings are "
                                     f"{', '.join(fields)}")
                checked[name] = _checked(value, fields[name].type, f"{where}: {stage}.{name}")
            new[stage] = dataclasses.replace(current, **checked)
        return dataclasses.replace(self, **new)

    @classmethod
    def from_dict(cls, data: dict, where: str = "config") -> "CurateConfig":
        """Defaults overridden by ``data``, which may name only the settings it changes."""
        return cls().updated(data, where)


def _checked(value, annotation: str, what: str):
    """``value`` if it fits a field annotated ``annotation`` (ints pass as floats), else raise."""
    kinds = {"bool": (bool,), "int": (int,), "float": (int, float), "str": (str,),
             "str | None": (str, type(None))}[annotation]
    if isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds):
        return float(value) if annotation == "float" else value
    raise ValueError(f"{what} must be {annotation.replace(' | None', ' or null')}, got "
                     f"{json.dumps(value)}; see 'minitransformer curate --print-config' for all settings")


def load_config(path: str | Path) -> CurateConfig:
    """The configuration in a JSON file of ``{stage: {setting: value}}`` (defaults elsewhere)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"no config file {path}; write one with "
                                "'minitransformer curate --print-config > FILE.json'") from None
    except ValueError as e:
        raise ValueError(f"config {path} is not valid JSON ({e}); fix it or write a fresh "
                         "one with 'minitransformer curate --print-config'") from None
    return CurateConfig.from_dict(data, where=f"config {path}")


# GPT-2's pre-tokenizer: each match is a "word" the BPE merges work inside. Counting matches
# gives a token count that needs no trained vocabulary (BPE tokens are 1-1.5x as many).
GPT2_PRESPLIT = regex.compile(PATTERNS["gpt2"])


class TokenCounter:
    """Counts tokens with a tokenizer, else GPT-2 pre-split words.

    The tokenizer is a ``BPETokenizer`` or anything with ``encode(text)``. A special token's
    string inside scraped text ("<|endoftext|>" in a page about language models) is counted
    as the plain text it is (``encode_ordinary``), not refused.
    """

    def __init__(self, tokenizer=None, name: str = "a tokenizer"):
        self.unit = (f"BPE tokens ({name})" if tokenizer is not None
                     else "GPT-2 pre-split words (no tokenizer given)")
        self._encode = (None if tokenizer is None
                        else getattr(tokenizer, "encode_ordinary", None) or tokenizer.encode)

    def __call__(self, text: str) -> int:
        if self._encode is None:
            return len(GPT2_PRESPLIT.findall(text))
        return len(self._encode(text))


# A stage step: text -> (text to pass on, or to quote when dropping; drop reason; detail).
Step = Callable[[str], "tuple[str, str | None, str | None]"]


class Pipeline:
    """Runs the stages of a ``CurateConfig`` over documents, filling ``self.report``.

    A pipeline remembers what it has seen (for deduplication) and counts into one report, so
    it is meant for one run; make a new one for an unrelated corpus::

        pipe = Pipeline(CurateConfig())
        kept = list(pipe.run(documents))   # the report is complete once run() is exhausted
        print(pipe.report.table())
    """

    def __init__(self, config: CurateConfig = CurateConfig(), *, count_tokens: TokenCounter | None = None,
                 examples_per_reason: int = 3, spool_dir: str | Path | None = None):
        self.config = config
        self.count_tokens = count_tokens or TokenCounter()
        self.examples_per_reason = examples_per_reason
        self.spool_dir = spool_dir
        c = config
        self._exact = ExactDeduplicator()
        self._minhasher = MinHasher(c.minhash)
        self._blocklist = Blocklist.from_file(c.blocklist.path) if c.blocklist.path else None
        steps: dict[str, Step] = {
            "normalize": self._normalize_step,
            "exact_dedup": lambda t: (t, "exact_duplicate" if self._exact.seen_before(t) else None, None),
            "gopher_repetition": lambda t: (t, gopher_repetition(t, c.gopher_repetition), None),
            "gopher_quality": lambda t: (t, gopher_quality(t, c.gopher_quality), None),
            "fineweb": lambda t: (t, fineweb_quality(t, c.fineweb), None),
            "c4": lambda t: c4_clean(t, c.c4) + (None,),
            "blocklist": self._blocklist_step,
            "pii": self._pii_step,
        }
        stages = []
        self._steps: list[tuple[StageReport, Step | None]] = []
        for field in dataclasses.fields(config):
            enabled = getattr(config, field.name).enabled
            stage = StageReport(field.name, enabled=enabled)
            if field.name == "blocklist" and enabled and self._blocklist is None:
                stage.enabled, stage.note = False, "no word list given"
            stages.append(stage)
            if field.name != "minhash":
                self._steps.append((stage, steps[field.name] if stage.enabled else None))
        self.report = Report(stages, self.count_tokens.unit, config=config.to_dict())

    def _normalize_step(self, text: str):
        text = normalize_text(text, self.config.normalize.form)
        return text, None if text else "empty", None

    def _blocklist_step(self, text: str):
        hits = self._blocklist.matches(text)
        if len(hits) > self.config.blocklist.max_hits:
            return text, "blocklisted", f"{len(hits)} matches, the first {hits[0]!r}"
        return text, None, None

    def _pii_step(self, text: str):
        scrubbed, hits = scrub_pii(text, self.config.pii)
        counts = self.report.stage("pii").counts
        for kind, n in hits.items():
            counts[kind] = counts.get(kind, 0) + n
        total = sum(hits.values())
        if total > self.config.pii.max_hits:
            detail = ", ".join(f"{n} {kind}" for kind, n in hits.items())
            return scrubbed, "too_much_pii", f"{total} matches ({detail})"
        return scrubbed, None, None

    def _filter(self, doc: Document) -> int | None:
        """Run the per-document stages on ``doc``: its token count if it survives, else None."""
        tokens = self.count_tokens(doc.text)
        for stage, step in self._steps:
            stage.docs_in += 1
            stage.tokens_in += tokens
            if step is not None:
                text, reason, detail = step(doc.text)
                if reason is not None:
                    # Quote what the stage saw, or its scrubbed form (never raw PII).
                    stage.drop(reason, doc, text or doc.text, detail, self.examples_per_reason)
                    return None
                if text is not doc.text and text != doc.text:
                    stage.modified += 1
                    doc.text = text
                    tokens = self.count_tokens(text)
            stage.docs_out += 1
            stage.tokens_out += tokens
        return tokens

    def run(self, documents: Iterable[Document]) -> Iterator[Document]:
        """Yield the documents that survive every stage, in input order."""
        start = time.perf_counter()
        stage = self.report.stage("minhash")
        if not stage.enabled:
            for doc in documents:
                tokens = self._filter(doc)
                if tokens is not None:
                    stage.docs_in += 1
                    stage.docs_out += 1
                    stage.tokens_in += tokens
                    stage.tokens_out += tokens
                    yield doc
        else:
            yield from self._run_with_minhash(documents, stage)
        self.report.seconds = time.perf_counter() - start

    def _run_with_minhash(self, documents: Iterable[Document], stage: StageReport) -> Iterator[Document]:
        bands = self.config.minhash.bands
        with tempfile.TemporaryFile("w+", encoding="utf-8", dir=self.spool_dir,
                                    prefix="curate-spool-") as spool:
            keys = bytearray()     # band keys of the spooled documents that have words: (M * bands * 8,)
            signed = array("q")    # which spooled documents those are: (M,)
            n = 0
            for doc in documents:
                tokens = self._filter(doc)
                if tokens is None:
                    continue
                stage.docs_in += 1
                stage.tokens_in += tokens
                sig = self._minhasher.signature(doc.text)
                if sig is not None:
                    keys += self._minhasher.band_keys(sig).tobytes()
                    signed.append(n)
                spool.write(json.dumps([doc.source, doc.line, tokens, doc.text, doc.record],
                                       ensure_ascii=False) + "\n")
                n += 1

            first = np.arange(n)   # first[i]: the first document of i's cluster
            if signed:
                idx = np.frombuffer(signed, np.int64)
                reps = cluster_representatives(np.frombuffer(keys, np.uint64).reshape(-1, bands))
                first[idx] = idx[reps]
            heads = set(first[first != np.arange(n)].tolist())  # clusters with duplicates
            where: dict[int, str] = {}                          # their first document's location

            spool.seek(0)
            for i, line in enumerate(spool):
                source, number, tokens, text, record = json.loads(line)
                doc = Document(record, text, source, number)
                if first[i] == i:
                    if i in heads:
                        where[i] = doc.location
                    stage.docs_out += 1
                    stage.tokens_out += tokens
                    yield doc
                else:
                    stage.drop("near_duplicate", doc, text, f"near duplicate of {where[first[i]]}",
                               self.examples_per_reason)


OUTPUT_NAME = "curated.jsonl"


def curate(inputs, out_dir: str | Path, config: CurateConfig = CurateConfig(), *,
           tokenizer=None, tokenizer_name: str = "a tokenizer", text_field: str = "text",
           txt_split: str = "file", strict: bool = False, progress: bool = False,
           examples_per_reason: int = 3) -> Report:
    """Curate the documents of ``inputs`` (files or folders) into ``out_dir``.

    Writes ``out_dir/curated.jsonl`` (every input field kept, the text field, named "text",
    holding the cleaned text), ``out_dir/report.json`` and, with matplotlib, ``out_dir/funnel.png``.
    Returns the report.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"output {out_dir} is a file; pass a folder to write into")
    reader = RecordReader(inputs, text_field=text_field, txt_split=txt_split, strict=strict,
                          exclude=out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pipeline = Pipeline(config, count_tokens=TokenCounter(tokenizer, tokenizer_name),
                        examples_per_reason=examples_per_reason, spool_dir=out_dir)
    output = out_dir / OUTPUT_NAME
    bar = tqdm(total=reader.total_bytes, unit="B", unit_scale=True, desc="curate", disable=not progress)

    def tracked(documents):
        for doc in documents:
            yield doc
            bar.update(reader.bytes_read - bar.n)

    with atomic_file(output, "w", encoding="utf-8") as f, bar:
        for doc in pipeline.run(tracked(reader)):
            f.write(json.dumps(doc.output(text_field), ensure_ascii=False) + "\n")
    report = pipeline.report
    report.inputs = reader.summary()
    report.output = str(output)
    report.plot_funnel(out_dir / "funnel.png")
    report.write_json(out_dir / "report.json")
    return report
