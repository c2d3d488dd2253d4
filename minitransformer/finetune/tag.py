"""Token classification with a BERT encoder: a BIO tag for every word (named entities).

Labels belong to words, the model sees sub-word tokens. The words are joined with single
spaces and encoded once, with character offsets; each token belongs to the word holding
its first non-space character (a byte-level BPE chunk never crosses a space, so no token
straddles two words). As in the BERT paper, the *first* token of a word carries the
word's tag and the word is predicted from it; its other tokens, [CLS], [SEP] and padding
get the label -100, which the loss ignores.

    words   Maria  paid  12,500        dollars
    tokens  [CLS] ĠMaria Ġpaid Ġ12 , 500 Ġdollars [SEP]
    labels  -100  B-PER  O     B-NUM -100 -100 O   -100

The head is a linear layer over every hidden state (``BertForTokenClassification``).
A word cut off by ``max_length`` is predicted O, so truncation costs recall in the score
rather than vanishing from it.

Baselines: every word O (the majority tag; entity F1 0), and each word's most frequent
tag in the training data (O for unseen words), which knows names and months but not
context: "May" the month and "May" the name get the same tag.
"""
from __future__ import annotations

from collections import Counter, defaultdict

from minitransformer.finetune import metrics
from minitransformer.finetune.classify import BertHeadTask
from minitransformer.finetune.loop import pad
from minitransformer.models import BertForTokenClassification

IGNORE = -100


def align_words(tokenizer, words: list[str], max_length: int) -> tuple[list[int], list[int]]:
    """(token ids with [CLS]/[SEP], index of each word's first token or -1 if truncated)."""
    text = " ".join(words)
    word_of_char = []
    for w, word in enumerate(words):
        if w:
            word_of_char.append(-1)                  # the joining space
        word_of_char += [w] * len(word)
    enc = tokenizer.encode(text, disallowed_special=(), return_offsets=True)
    ids, first = [tokenizer.cls_id], [-1] * len(words)
    for tok, (start, end) in zip(enc.ids, enc.offsets):
        if len(ids) == max_length - 1:               # room for [SEP] only
            break
        owner = next((word_of_char[c] for c in range(start, end) if word_of_char[c] >= 0), -1)
        if owner >= 0 and first[owner] < 0:
            first[owner] = len(ids)
        ids.append(tok)
    ids.append(tokenizer.sep_id)
    return ids, first


class Tagging(BertHeadTask):
    task = "tag"
    primary = "entity_f1"
    head = BertForTokenClassification

    def __init__(self, tokenizer, labels: list[str], max_length: int):
        if "O" not in labels or len(labels) < 3:
            raise ValueError(f"tagging needs 'O' and at least one entity type in the training data, "
                             f"found labels {labels}")
        super().__init__(tokenizer, labels, max_length)

    def encode(self, example: dict) -> tuple:
        """(ids, first-token index per word, labels per token)."""
        ids, first = align_words(self.tokenizer, example["tokens"], self.max_length)
        if min(first) < 0:
            self.truncated += 1
        labels = [IGNORE] * len(ids)
        for w, pos in enumerate(first):
            if pos >= 0 and "tags" in example:
                labels[pos] = self.index.get(example["tags"][w], IGNORE)
        return ids, first, labels

    def collate(self, features: list) -> dict:
        ids = pad([f[0] for f in features], self.tokenizer.pad_id)
        t = ids.shape[1]
        return {"input_ids": ids,
                "attention_mask": pad([[1] * len(f[0]) for f in features], 0, t),
                "token_type_ids": pad([[0] for _ in features], 0, t),
                "labels": pad([f[2] for f in features], IGNORE, t)}               # (B, T)

    def predict(self, model, examples: list[dict], batch_size: int = 64) -> list[list[str]]:
        out = []
        for part, best in self.best_labels(model, examples, batch_size):          # best: (B, T)
            for row, (_, first, _) in zip(best, part):
                out.append([self.labels[row[p]] if p >= 0 else "O" for p in first])
        return out

    def score(self, examples: list[dict], predictions: list[list[str]]) -> dict:
        gold = [ex["tags"] for ex in examples]
        report = metrics.entity_f1(gold, predictions)
        return {"entity_f1": report.pop("f1"), **report,
                "tag_accuracy": metrics.tag_accuracy(gold, predictions)}

    def baselines(self, train: list[dict], evaluation: list[dict]) -> dict:
        counts = defaultdict(Counter)
        for ex in train:
            for w, t in zip(ex["tokens"], ex["tags"]):
                counts[w][t] += 1
        by_word = {w: c.most_common(1)[0][0] for w, c in counts.items()}
        out = {}
        for name, guess in (("majority", lambda w: "O"), ("word_majority", lambda w: by_word.get(w, "O"))):
            report = self.score(evaluation, [[guess(w) for w in ex["tokens"]] for ex in evaluation])
            out[name] = {k: report[k] for k in ("entity_f1", "precision", "recall", "tag_accuracy")}
        return out
