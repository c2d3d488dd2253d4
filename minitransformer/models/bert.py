"""BERT: an encoder-only transformer trained to fill in masked tokens.

    e = LayerNorm(W_word[x_t] + W_pos[t] + W_type[s_t]);  h_0 = Dropout(e)
    h_l = Block_l(h_{l-1})                          post-LN encoder blocks (bidirectional)
    MLM logits = LayerNorm(gelu(h_L W_t^T + b_t)) W_word^T + b      (the decoder is tied)
    pooled = tanh(h_L[:, 0] W_p^T + b_p)            the [CLS] vector, for sentence tasks

Each block (post-LN): x = LN(x + Dropout(Attn(x)));  x = LN(x + Dropout(FFN(x))), with
exact (erf) GELU inside the FFN and LayerNorm eps 1e-12. Scores are scaled by 1/sqrt(head
size); padding keys are masked out. Init: weights N(0, 0.02^2), biases 0, LayerNorm 1/0,
the pad token's embedding row 0.

Modules: ``BertModel`` (embeddings, encoder, optional pooler) is the shared body;
``BERT`` adds the masked-LM head (the pre-training model); ``BertForSequenceClassification``
and ``BertForTokenClassification`` add a classifier for fine-tuning, and
``load_pretrained(bert)`` copies a pre-trained body into them.

Parameter names and their ``transformers`` BertForMaskedLM (+ pooler) keys:

    bert.embeddings.word_embeddings.weight      bert.embeddings.word_embeddings.weight (tied decoder)
    bert.embeddings.position_embeddings.weight  bert.embeddings.position_embeddings.weight
    bert.embeddings.token_type_embeddings.weight bert.embeddings.token_type_embeddings.weight
    bert.embeddings.norm.*                      bert.embeddings.LayerNorm.*
    bert.blocks.{i}.attn.{q,k,v}.*              bert.encoder.layer.{i}.attention.self.{query,key,value}.*
    bert.blocks.{i}.attn.o.*                    bert.encoder.layer.{i}.attention.output.dense.*
    bert.blocks.{i}.attn_norm.*                 bert.encoder.layer.{i}.attention.output.LayerNorm.*
    bert.blocks.{i}.ff.wi.*                     bert.encoder.layer.{i}.intermediate.dense.*
    bert.blocks.{i}.ff.wo.*                     bert.encoder.layer.{i}.output.dense.*
    bert.blocks.{i}.ff_norm.*                   bert.encoder.layer.{i}.output.LayerNorm.*
    bert.pooler.*                               bert.pooler.dense.*
    mlm.transform.*                             cls.predictions.transform.dense.*
    mlm.norm.*                                  cls.predictions.transform.LayerNorm.*
    mlm.bias                                    cls.predictions.bias (= cls.predictions.decoder.bias)
"""
from __future__ import annotations

from minitransformer import backend
from minitransformer import functional as F
from minitransformer.autograd.ops import as_array, tanh
from minitransformer.models.configs import BERTConfig
from minitransformer.models.inputs import as_ids, as_mask, get_field, positions
from minitransformer.nn import (
    Dropout, Embedding, EncoderBlock, LayerNorm, Linear, Module, ModuleList, activate,
    key_padding_mask,
)
from minitransformer.nn.layers import constant


class BertEmbeddings(Module):
    """word + position + token type embeddings, then LayerNorm and dropout."""

    def __init__(self, c: BERTConfig):
        super().__init__()
        std = c.initializer_range
        self.word_embeddings = Embedding(c.vocab_size, c.hidden_size, std=std, padding_idx=c.pad_token_id)
        self.position_embeddings = Embedding(c.max_position_embeddings, c.hidden_size, std=std)
        self.token_type_embeddings = Embedding(c.type_vocab_size, c.hidden_size, std=std)
        self.norm = LayerNorm(c.hidden_size, c.layer_norm_eps)
        self.dropout = Dropout(c.hidden_dropout_prob)

    def forward(self, ids, token_type_ids, position_ids):
        e = self.word_embeddings(ids) + self.token_type_embeddings(token_type_ids)  # (B, T, C)
        e = e + self.position_embeddings(position_ids)
        return self.dropout(self.norm(e))


class BertModel(Module):
    """The BERT body: embeddings, post-LN encoder blocks and (optionally) the pooler."""

    def __init__(self, config: BERTConfig, add_pooler: bool = True):
        super().__init__()
        if not isinstance(config, BERTConfig):
            raise TypeError(f"BERT needs a BERTConfig, got {type(config).__name__}")
        self.config = c = config
        self.embeddings = BertEmbeddings(c)
        self.blocks = ModuleList(
            EncoderBlock(c.hidden_size, c.num_attention_heads, c.intermediate_size, norm="layer",
                         norm_first=False, eps=c.layer_norm_eps, activation=c.hidden_act, bias=True,
                         dropout=c.hidden_dropout_prob,
                         attention_dropout=c.attention_probs_dropout_prob, std=c.initializer_range)
            for _ in range(c.num_hidden_layers))
        self.pooler = Linear(c.hidden_size, c.hidden_size, std=c.initializer_range) if add_pooler else None

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, position_ids=None):
        """Hidden states (B, T, C) of the last block."""
        c, device = self.config, self.device
        ids = as_ids(input_ids, "input_ids", device)
        b, t = ids.shape
        if token_type_ids is None:
            types = ids * 0                                       # every token in segment A
        else:
            types = as_ids(token_type_ids, "token_type_ids", device, shape=(b, t))
        pos = positions(position_ids, b, t, 0, c.max_position_embeddings, device)
        mask = key_padding_mask(as_mask(attention_mask, "attention_mask", device, (b, t)))
        x = self.embeddings(ids, types, pos)
        for block in self.blocks:
            x = block(x, mask=mask)
        return x

    def pool(self, hidden):
        """tanh(W_p h_[CLS] + b_p): the sentence vector from the first position."""
        if self.pooler is None:
            raise ValueError("this BertModel was built without a pooler (add_pooler=False)")
        return tanh(self.pooler(hidden[:, 0]))                     # (B, T, C) -> (B, C)


class MLMHead(Module):
    """transform (dense + activation + LayerNorm), then the tied decoder with its own bias."""

    def __init__(self, c: BERTConfig):
        super().__init__()
        self.activation = c.hidden_act
        self.transform = Linear(c.hidden_size, c.hidden_size, std=c.initializer_range)
        self.norm = LayerNorm(c.hidden_size, c.layer_norm_eps)
        self.bias = constant((c.vocab_size,), 0.0)

    def forward(self, hidden, word_embeddings):
        h = self.norm(activate(self.transform(hidden), self.activation))
        return F.linear(h, word_embeddings, self.bias)             # (..., C) -> (..., V)


class BERT(Module):
    """BERT with its masked-LM head: ``forward`` returns MLM logits (B, T, V)."""

    def __init__(self, config: BERTConfig):
        super().__init__()
        self.bert = BertModel(config, add_pooler=True)
        self.mlm = MLMHead(config)
        self.config = config

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, position_ids=None):
        h = self.bert(input_ids, attention_mask, token_type_ids, position_ids)
        return self.mlm(h, self.bert.embeddings.word_embeddings.weight)

    def loss(self, batch: dict, reduction: str = "mean"):
        """Masked-LM cross-entropy over the positions whose label is not -100.

        batch: input_ids, labels, and optionally attention_mask, token_type_ids, position_ids.
        Only the labelled positions (about 15%) go through the head: the loss and its
        gradients are those of the full logits, at a fraction of the vocabulary matmul.
        """
        ids, labels = get_field(batch, "input_ids", "BERT"), get_field(batch, "labels", "BERT")
        h = self.bert(ids, batch.get("attention_mask"), batch.get("token_type_ids"),
                      batch.get("position_ids"))
        b, t, c = h.shape
        # The targets' positions are found where the labels are: on the host for a batch
        # built there, since finding them on a device waits for it (the count sizes the result).
        labels = as_ids(labels, "labels", backend.device_of(as_array(labels)), shape=(b, t)).reshape(-1)
        picked = backend.xp(labels).nonzero(labels != -100)[0]     # flat indices of targets
        labels, picked = backend.to_device(labels, self.device), backend.to_device(picked, self.device)
        logits = self.mlm(h.reshape(b * t, c)[picked], self.bert.embeddings.word_embeddings.weight)
        return F.cross_entropy(logits, labels[picked], reduction=reduction)

    def count_targets(self, batch: dict) -> int:
        from minitransformer.models.losses import count_targets
        return count_targets(batch, self.config)


class _BertClassifier(Module):
    """A BERT body, dropout and a linear classifier (shared by the two fine-tuning heads)."""

    def __init__(self, config: BERTConfig, num_labels: int, add_pooler: bool):
        super().__init__()
        if not isinstance(num_labels, int) or num_labels < 2:
            raise ValueError(f"{type(self).__name__}: num_labels must be an integer >= 2, got {num_labels!r}")
        self.config, self.num_labels = config, num_labels
        self.bert = BertModel(config, add_pooler=add_pooler)
        self.dropout = Dropout(config.hidden_dropout_prob)
        self.classifier = Linear(config.hidden_size, num_labels, std=config.initializer_range)

    def load_pretrained(self, model) -> None:
        """Copy the body of a pre-trained ``BERT`` (or ``BertModel``) into this model."""
        body = model.bert if isinstance(model, BERT) else model
        own = self.bert.state_dict()
        self.bert.load_state_dict({k: v for k, v in body.state_dict().items() if k in own})

    def loss(self, batch: dict, reduction: str = "mean"):
        """Cross-entropy of the logits against ``batch["labels"]`` ((B,) or (B, T); -100 ignored)."""
        name = type(self).__name__
        ids, labels = get_field(batch, "input_ids", name), get_field(batch, "labels", name)
        logits = self(ids, batch.get("attention_mask"), batch.get("token_type_ids"),
                      batch.get("position_ids"))
        labels = as_ids(labels, "labels", self.device, ndim=logits.ndim - 1)
        return F.cross_entropy(logits, labels, reduction=reduction)

    def count_targets(self, batch: dict) -> int:
        from minitransformer.models.losses import count_targets
        return count_targets(batch, self.config)


class BertForSequenceClassification(_BertClassifier):
    """Sentence classification from the pooled [CLS] vector: logits (B, num_labels)."""

    def __init__(self, config: BERTConfig, num_labels: int):
        super().__init__(config, num_labels, add_pooler=True)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, position_ids=None):
        h = self.bert(input_ids, attention_mask, token_type_ids, position_ids)
        return self.classifier(self.dropout(self.bert.pool(h)))   # (B, C) -> (B, num_labels)


class BertForTokenClassification(_BertClassifier):
    """A label per token (e.g. named entities): logits (B, T, num_labels)."""

    def __init__(self, config: BERTConfig, num_labels: int):
        super().__init__(config, num_labels, add_pooler=False)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, position_ids=None):
        h = self.bert(input_ids, attention_mask, token_type_ids, position_ids)
        return self.classifier(self.dropout(h))                    # (B, T, C) -> (B, T, num_labels)
