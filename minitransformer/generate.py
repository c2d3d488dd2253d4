"""Using a pre-trained model: sampling, beam search, fill-mask, fill-spans.

- GPT (decoder-only) continues text one token at a time. The prompt runs once; after that
  each step feeds only the newest token and reuses every earlier key and value from the KV
  cache, so a step costs O(T) instead of O(T^2). Prompts of different lengths are padded on
  the left, so every row's next token is at the same column; position ids count real
  tokens only, so padding does not shift positions.
- T5 (encoder-decoder) encodes the input once and decodes greedily or with beam search.
- BERT (encoder-only) fills in masked tokens: ``fill_mask``.
- T5 fills sentinel slots: ``fill_spans``.

Choosing the next token from logits z (``sample_next``): greedy takes argmax z; otherwise
probabilities softmax(z / temperature), optionally kept to the k most likely (top-k) or to
the smallest set whose probability reaches p (top-p, nucleus sampling), renormalised.
"""
from __future__ import annotations

import numpy

from minitransformer import backend, families
from minitransformer.autograd import Tensor, no_grad


def _host_logits(logits) -> numpy.ndarray:
    return backend.to_numpy(logits.data if isinstance(logits, Tensor) else logits).astype(numpy.float64)


def sample_next(logits, temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0, rng=None):
    """Next-token ids (B,) on the host, from logits (B, V) on any device; temperature 0 is greedy.

    The choice is made where the logits are, and only the B chosen ids come to the host:
    one transfer per step, of B numbers instead of B x V. The random draw (one uniform
    number per row, from ``rng``) is made on the host and sent, so a seed gives the same
    tokens on every device.
    """
    z = logits.data if isinstance(logits, Tensor) else logits
    xp = backend.xp(z)
    z = z.astype("float64")
    if temperature <= 0.0:
        return backend.to_numpy(z.argmax(axis=-1))
    rng = rng or numpy.random.default_rng()
    z = z / temperature
    if top_k and top_k < z.shape[-1]:
        kth = xp.partition(z, -top_k, axis=-1)[:, -top_k][:, None]
        z = xp.where(z < kth, -xp.inf, z)
    p = xp.exp(z - z.max(axis=-1, keepdims=True))
    p /= p.sum(axis=-1, keepdims=True)
    if top_p < 1.0:
        order = xp.argsort(-p, axis=-1)
        sorted_p = xp.take_along_axis(p, order, axis=-1)
        # keep a token if the mass before it is still below top_p (so the first always stays)
        keep_sorted = (xp.cumsum(sorted_p, axis=-1) - sorted_p) < top_p
        keep = xp.take_along_axis(keep_sorted, xp.argsort(order, axis=-1), axis=-1)   # back to vocabulary order
        p = xp.where(keep, p, 0.0)
        p /= p.sum(axis=-1, keepdims=True)
    u = xp.asarray(rng.random((p.shape[0], 1)))                  # (B, 1), drawn on the host
    return backend.to_numpy((xp.cumsum(p, axis=-1) < u).sum(axis=-1).clip(0, p.shape[-1] - 1))


def left_pad(prompts, pad_id: int):
    """Rows of ids (lists) -> (ids (B, T), attention_mask (B, T)) padded on the left."""
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("generate: every prompt needs at least one token")
    t = max(len(p) for p in prompts)
    ids = numpy.full((len(prompts), t), pad_id, dtype=numpy.int64)
    mask = numpy.zeros((len(prompts), t), dtype=numpy.int64)
    for i, p in enumerate(prompts):
        ids[i, t - len(p):] = p
        mask[i, t - len(p):] = 1
    return ids, mask


def generate(model, prompts, max_new_tokens: int = 50, temperature: float = 0.0, top_k: int = 0,
             top_p: float = 1.0, eos_id: int | None = None, pad_id: int = 0, seed: int | None = None,
             use_cache: bool = True):
    """Continue each prompt (a list of token-id lists) with a GPT model; returns the new ids.

    Generation stops for a row at ``eos_id`` (kept in its output) or after
    ``max_new_tokens``. ``use_cache=False`` recomputes the whole sequence each step (the
    slow, obviously correct path, kept for tests).
    """
    if families.of(model).architecture != "decoder-only":
        raise ValueError(f"generate continues text with a GPT model; this is a {model.config.family} model "
                         "(use fill_mask for BERT, fill_spans or seq2seq for T5)")
    rng = numpy.random.default_rng(seed)
    ids, mask = left_pad([list(p) for p in prompts], pad_id)
    limit = model.config.n_positions
    if ids.shape[1] + max_new_tokens > limit:
        raise ValueError(f"generate: prompt length {ids.shape[1]} + {max_new_tokens} new tokens exceeds the "
                         f"model's {limit} positions; shorten the prompt or ask for fewer tokens")
    positions = numpy.clip(mask.cumsum(axis=1) - 1, 0, None)
    out = [[] for _ in prompts]
    done = numpy.zeros(len(prompts), bool)
    model.eval()
    with no_grad():
        cache = None
        step_ids, step_mask, step_pos = ids, mask, positions
        all_ids, all_mask = ids, mask
        for _ in range(max_new_tokens):
            # The inputs go in as host arrays: the model checks them there for free and moves
            # them; the only transfer back is the sampled ids.
            if use_cache:
                logits, cache = model(step_ids, attention_mask=step_mask, position_ids=step_pos,
                                      past_key_values=cache, use_cache=True)
            else:
                logits = model(all_ids, attention_mask=all_mask,
                               position_ids=numpy.clip(all_mask.cumsum(axis=1) - 1, 0, None))
            nxt = sample_next(logits[:, -1], temperature, top_k, top_p, rng)
            for i, tok in enumerate(nxt):
                if not done[i]:
                    out[i].append(int(tok))
                    done[i] = eos_id is not None and int(tok) == eos_id
            if done.all():
                break
            step_ids = nxt[:, None].astype(numpy.int64)
            step_mask = numpy.ones_like(step_ids)
            step_pos = step_pos[:, -1:] + 1
            all_ids = numpy.concatenate([all_ids, step_ids], axis=1)
            all_mask = numpy.concatenate([all_mask, step_mask], axis=1)
    return out


# =======================================================================================
# Encoder-decoder decoding (T5)
# =======================================================================================

def _encoder_inputs(prompts, pad_id):
    t = max(len(p) for p in prompts)
    ids = numpy.full((len(prompts), t), pad_id, dtype=numpy.int64)
    mask = numpy.zeros_like(ids)
    for i, p in enumerate(prompts):
        ids[i, :len(p)] = p
        mask[i, :len(p)] = 1
    return ids, mask


def seq2seq_greedy(model, inputs, max_new_tokens: int = 50, eos_id: int = 1, pad_id: int = 0,
                   decoder_start_id: int | None = None):
    """Greedy decoding with a T5 model for each input (a list of token-id lists): at every
    step take the most likely token; a row stops at EOS (kept in its output)."""
    if families.of(model).architecture != "encoder-decoder":
        raise ValueError(f"seq2seq decoding needs a T5 model, got a {model.config.family} model")
    start = pad_id if decoder_start_id is None else decoder_start_id
    xp = backend.module_for_device(model.device)
    enc_ids, enc_mask = _encoder_inputs([list(p) for p in inputs], pad_id)
    out = [[] for _ in inputs]
    done = numpy.zeros(len(inputs), bool)
    model.eval()
    with no_grad():
        memory = model.encode(xp.asarray(enc_ids), attention_mask=xp.asarray(enc_mask))
        cache, step_ids = None, numpy.full((len(inputs), 1), start, dtype=numpy.int64)
        for _ in range(max_new_tokens):
            logits, cache = model.decode(xp.asarray(step_ids), memory, attention_mask=xp.asarray(enc_mask),
                                         past_key_values=cache, use_cache=True)
            nxt = sample_next(logits[:, -1])
            for i, tok in enumerate(nxt):
                if not done[i]:
                    out[i].append(int(tok))
                    done[i] = int(tok) == eos_id
            if done.all():
                break
            step_ids = nxt[:, None].astype(numpy.int64)
    return out


def seq2seq_beam(model, inputs, num_beams: int = 4, max_new_tokens: int = 50, eos_id: int = 1,
                 pad_id: int = 0, decoder_start_id: int | None = None, length_penalty: float = 1.0):
    """Beam search with a T5 model; returns the best hypothesis per input (ids after the start token).

    Each of the ``num_beams`` hypotheses per input is extended by every token; the best
    ``num_beams`` by total log-probability survive. A hypothesis that emits EOS is finished,
    scored by log p / length ** length_penalty; search stops when every input has
    ``num_beams`` finished hypotheses better than any open one could become (or at the limit).
    """
    if families.of(model).architecture != "encoder-decoder":
        raise ValueError(f"seq2seq decoding needs a T5 model, got a {model.config.family} model")
    start = pad_id if decoder_start_id is None else decoder_start_id
    xp = backend.module_for_device(model.device)
    enc_ids, enc_mask = _encoder_inputs([list(p) for p in inputs], pad_id)
    n, k = len(inputs), num_beams
    model.eval()
    with no_grad():
        memory = model.encode(xp.asarray(enc_ids), attention_mask=xp.asarray(enc_mask))
        # Every input repeated k times: rows i*k .. i*k+k-1 are the beams of input i.
        rep = numpy.repeat(numpy.arange(n), k)
        memory = memory[rep]
        mem_mask = xp.asarray(enc_mask[rep])
        scores = numpy.zeros((n, k))
        scores[:, 1:] = -numpy.inf                 # all beams start identical: keep one
        seqs = [[] for _ in range(n * k)]
        finished = [[] for _ in range(n)]
        cache = None
        step_ids = numpy.full((n * k, 1), start, dtype=numpy.int64)
        t = 0                                      # the steps taken, for max_new_tokens=0 too
        for t in range(max_new_tokens):
            logits, cache = model.decode(xp.asarray(step_ids), memory, attention_mask=mem_mask,
                                         past_key_values=cache, use_cache=True)
            z = _host_logits(logits[:, -1])
            logp = z - z.max(axis=-1, keepdims=True)
            logp -= numpy.log(numpy.exp(logp).sum(axis=-1, keepdims=True))
            v = logp.shape[-1]
            total = (scores.reshape(-1, 1) + logp).reshape(n, k * v)
            best = numpy.argsort(-total, axis=-1)[:, :2 * k]            # spare candidates for EOS
            new_scores = numpy.full((n, k), -numpy.inf)
            new_rows = numpy.zeros((n, k), dtype=numpy.int64)
            new_tokens = numpy.full((n, k), pad_id, dtype=numpy.int64)
            for i in range(n):
                j = 0
                for rank, cand in enumerate(best[i]):
                    beam, tok = divmod(int(cand), v)
                    row, s = i * k + beam, total[i, cand]
                    if not numpy.isfinite(s):
                        continue
                    if tok == eos_id:
                        if rank < k:               # an EOS outside the best k is no hypothesis (as in transformers)
                            finished[i].append((s / (t + 1) ** length_penalty, seqs[row] + [tok]))
                        continue
                    if j < k:
                        new_scores[i, j], new_rows[i, j], new_tokens[i, j] = s, row, tok
                        j += 1
            rows = new_rows.reshape(-1)
            seqs = [seqs[r] + [int(tok)] for r, tok in zip(rows, new_tokens.reshape(-1))]
            scores = new_scores
            cache.reorder(xp.asarray(rows))
            step_ids = new_tokens.reshape(-1, 1)
            if all(len(f) >= k and max(f)[0] >= scores[i].max() / (t + 1) ** length_penalty
                   for i, f in enumerate(finished)):
                break
    results = []
    for i in range(n):
        # Open beams compete with finished ones at the length reached (as transformers does at its limit).
        pool = finished[i] + [(scores[i, j] / (t + 1) ** length_penalty, seqs[i * k + j]) for j in range(k)]
        results.append(max(pool, key=lambda x: x[0])[1])
    return results


# =======================================================================================
# Filling in: BERT masks and T5 sentinels
# =======================================================================================

def fill_mask(model, tokenizer, text: str, top_k: int = 5):
    """For each mask token in ``text``, the ``top_k`` most likely (token string, probability)."""
    if families.of(model).architecture != "encoder-only":
        raise ValueError(f"fill-mask needs a BERT model, got a {model.config.family} model")
    mask_token = tokenizer.id_to_token(tokenizer.mask_id)
    if mask_token not in text:
        raise ValueError(f"fill-mask: the text has no {mask_token} token to fill; write e.g. "
                         f"'The capital of France is {mask_token}.'")
    ids = tokenizer.encode(text, allowed_special="all")
    ids = [tokenizer.cls_id, *ids, tokenizer.sep_id]
    xp = backend.module_for_device(model.device)
    model.eval()
    with no_grad():
        logits = model(xp.asarray(numpy.array([ids])))
    z = _host_logits(logits[0])
    results = []
    for pos in [i for i, t in enumerate(ids) if t == tokenizer.mask_id]:
        p = numpy.exp(z[pos] - z[pos].max())
        p[list(tokenizer.special_ids)] = 0.0
        p /= p.sum()
        best = numpy.argsort(-p)[:top_k]
        results.append([(tokenizer.decode([int(b)]), float(p[b])) for b in best])
    return results


def fill_spans(model, tokenizer, text: str, max_new_tokens: int = 32, num_beams: int = 1):
    """Fill the sentinel slots (<extra_id_0>, ...) of ``text`` with a T5 model.

    Returns (the completed text, the list of span strings in slot order).
    """
    if families.of(model).architecture != "encoder-decoder":
        raise ValueError(f"fill-spans needs a T5 model, got a {model.config.family} model")
    sentinels = [tokenizer.sentinel_id(k) for k in range(tokenizer.num_sentinels)]
    ids = tokenizer.encode(text, allowed_special="all")
    slots = [t for t in ids if t in set(sentinels)]
    if not slots:
        raise ValueError(f"fill-spans: the text has no sentinel such as {tokenizer.id_to_token(sentinels[0])} "
                         "marking a span to fill")
    if num_beams > 1:
        out = seq2seq_beam(model, [ids + [tokenizer.eos_id]], num_beams=num_beams,
                           max_new_tokens=max_new_tokens, eos_id=tokenizer.eos_id, pad_id=tokenizer.pad_id)[0]
    else:
        out = seq2seq_greedy(model, [ids + [tokenizer.eos_id]], max_new_tokens=max_new_tokens,
                             eos_id=tokenizer.eos_id, pad_id=tokenizer.pad_id)[0]
    # The target reads: <extra_id_0> span0 <extra_id_1> span1 ... <eos>
    spans, current, slot = {}, None, None
    for t in out:
        if t == tokenizer.eos_id:
            break
        if t in set(sentinels):
            slot, current = t, []
            spans[slot] = current
        elif current is not None:
            current.append(t)
    # Decode each run of ordinary tokens in one call: a tokenizer may mark word starts on a
    # token (SentencePiece's "▁"), which decoding a lone token would drop.
    slot_set = set(slots)
    pieces, filled, run = [], [], []
    for t in ids + [None]:
        if t is None or t in slot_set:
            if run:
                pieces.append(tokenizer.decode(run))
                run = []
            if t is not None:
                span = tokenizer.decode(spans.get(t, []))
                filled.append(span)
                pieces.append(span)
        else:
            run.append(t)
    return "".join(pieces), filled
