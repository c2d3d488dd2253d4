"""Sequence to sequence with T5: text in, text out (translation, summarisation, QA).

Exactly the shape of T5's pre-training, with the corrupted text replaced by the task's
input and the sentinel spans by its target:

    input_ids          = input tokens + EOS                      (encoder)
    labels             = target tokens + EOS                     (what the decoder must write)
    decoder_input_ids  = [start] + labels[:-1]                   (teacher forcing, shifted right)

and the loss is the cross-entropy of the decoder's logits against ``labels`` (padding
-100). At evaluation the decoder writes greedily (or with beam search) from the start
token until EOS or a length limit: the longest training target plus a margin.

Baseline: copying the input unchanged. It earns partial token F1 wherever the target
shares words with the input, and shows how much of a score is mere copying.
"""
from __future__ import annotations

from minitransformer.finetune import metrics
from minitransformer.finetune.loop import chunks, pad
from minitransformer.generate import seq2seq_beam
from minitransformer.models import T5

IGNORE = -100


class Seq2Seq:
    task = "seq2seq"
    family = "t5"
    primary = "exact_match"

    def __init__(self, tokenizer, max_length: int, max_target_length: int | None = None, num_beams: int = 1):
        if max_length < 2:
            raise ValueError(f"max_length must be at least 2 tokens, got {max_length}")
        self.tokenizer, self.max_length = tokenizer, max_length
        self.max_target_length = max_target_length
        self.num_beams = num_beams
        self.truncated = 0
        self.labels = None

    def info(self) -> dict:
        return {"max_length": self.max_length, "max_target_length": self.max_target_length}

    def fit_lengths(self, train: list[dict]) -> None:
        """Set the target length limit from the training targets (longest + EOS + a margin)."""
        if self.max_target_length is None:
            longest = max(len(self.tokenizer.encode(ex["target"], disallowed_special=())) for ex in train)
            self.max_target_length = min(longest + 1 + max(4, longest // 4), 4 * self.max_length)

    def build(self, base):
        if hasattr(base, "config"):
            return base                   # T5 is fine-tuned as it was pre-trained: no new head
        return T5(base)

    def encode(self, example: dict) -> tuple:
        tok = self.tokenizer
        src = tok.encode(example["input"], disallowed_special=())
        if len(src) > self.max_length - 1:
            self.truncated += 1
            src = src[:self.max_length - 1]
        tgt = None
        if "target" in example:
            tgt = tok.encode(example["target"], disallowed_special=())[:self.max_target_length - 1]
            tgt = tgt + [tok.eos_id]
        return src + [tok.eos_id], tgt

    def collate(self, features: list) -> dict:
        tok = self.tokenizer
        ids = pad([f[0] for f in features], tok.pad_id)
        labels = pad([f[1] for f in features], IGNORE)
        start = tok.pad_id                                         # T5's decoder_start_token_id
        dec = pad([[start] + f[1][:-1] for f in features], tok.pad_id, labels.shape[1])
        return {"input_ids": ids,
                "attention_mask": pad([[1] * len(f[0]) for f in features], 0, ids.shape[1]),
                "decoder_input_ids": dec,
                "decoder_attention_mask": pad([[1] * len(f[1]) for f in features], 0, labels.shape[1]),
                "labels": labels}

    def predict(self, model, examples: list[dict], batch_size: int = 64) -> list[str]:
        tok = self.tokenizer
        out = []
        for part in chunks([self.encode({"input": ex["input"]})[0] for ex in examples], batch_size):
            ids = seq2seq_beam(model, part, num_beams=self.num_beams,
                               max_new_tokens=self.max_target_length, eos_id=tok.eos_id,
                               pad_id=tok.pad_id, decoder_start_id=tok.pad_id)
            for seq in ids:
                if tok.eos_id in seq:
                    seq = seq[:seq.index(tok.eos_id)]
                out.append(tok.decode(seq).strip())
        return out

    def score(self, examples: list[dict], predictions: list[str]) -> dict:
        return metrics.seq2seq_report([ex["target"] for ex in examples], predictions)

    def baselines(self, train: list[dict], evaluation: list[dict]) -> dict:
        return {"copy": self.score(evaluation, [ex["input"] for ex in evaluation])}
