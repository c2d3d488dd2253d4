"""Models trained here are used by transformers, and transformers folders are used here:
a GPT pre-trained by the same pipeline as ``minitransformer pretrain`` is exported, loaded by
transformers (model and tokenizer, no warnings) and generates the same tokens; the command
line reads transformers-format folders (BERT with WordPiece, T5 with Unigram) and shows
their model cards."""
import json
import logging

import numpy as np
import pytest

from minitransformer import checkpoint, generate, hf, recipes
from minitransformer.cli import main
from minitransformer.train import TrainConfig
from tests.hf.test_tokenizers import bert_tokenizer, t5_tokenizer

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

TEXT = ("The function returns the sum of the list. The method copies the list and returns it. "
        "Return the number of items in the list. The class holds a list of names.\n")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny GPT pre-trained on a small corpus, then written as a transformers folder."""
    root = tmp_path_factory.mktemp("pretrain")
    corpus = root / "corpus"
    corpus.mkdir()
    for i in range(20):
        (corpus / f"doc{i}.txt").write_text(TEXT * (1 + i % 3))
    cfg = TrainConfig(objective="clm", steps=8, batch_size=4, lr=3e-3, warmup=2, eval_every=8, eval_batches=1,
                      save_every=0)
    trainer = recipes.build_run("clm", [corpus], "gpt-tiny", root / "run", vocab_size=400, block_size=16,
                                train_config=cfg)
    result = trainer.fit()
    run = checkpoint.resolve(root / "run")
    model, tok = checkpoint.load_model(run), checkpoint.load_tokenizer(run)
    out = hf.save_pretrained(model, root / "exported", tokenizer=tok, card=(run / "README.md").read_text())
    return out, model, tok, result


def test_transformers_loads_the_pretrained_model_and_generates_the_same_tokens(exported):
    folder, model, tok, result = exported
    assert result["step"] == 8 and np.isfinite(result["val_loss"])
    logger = logging.getLogger("transformers")
    records = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    logger.addHandler(handler)
    try:
        theirs = transformers.AutoModelForCausalLM.from_pretrained(folder).eval()
        their_tok = transformers.AutoTokenizer.from_pretrained(folder)
    finally:
        logger.removeHandler(handler)
    assert [r.getMessage() for r in records] == []
    assert type(theirs).__name__ == "GPT2LMHeadModel"

    prompts = ["The function returns", "Return the number", "The class"]
    encoded = [tok.encode(p) for p in prompts]
    assert [their_tok(p)["input_ids"] for p in prompts] == encoded
    mine = generate.generate(model, encoded, max_new_tokens=16, temperature=0.0, eos_id=tok.eos_id, pad_id=tok.pad_id)
    ids, mask = generate.left_pad(encoded, tok.pad_id)
    with torch.no_grad():
        out = theirs.generate(torch.tensor(ids), attention_mask=torch.tensor(mask), max_new_tokens=16,
                              do_sample=False, eos_token_id=tok.eos_id, pad_token_id=tok.pad_id)
    new = out[:, ids.shape[1]:].tolist()
    theirs_cut = [row[:row.index(tok.eos_id) + 1] if tok.eos_id in row else row for row in new]
    assert mine == theirs_cut
    with torch.no_grad():
        logits = theirs(torch.tensor(ids), attention_mask=torch.tensor(mask),
                        position_ids=torch.tensor(np.clip(mask.cumsum(1) - 1, 0, None))).logits.numpy()
    ours = model(ids, attention_mask=mask, position_ids=np.clip(mask.cumsum(1) - 1, 0, None)).numpy()
    assert np.abs(logits - ours)[mask.astype(bool)].max() < 1e-4


def test_info_prints_the_model_card_of_an_exported_folder(exported, capsys):
    folder = exported[0]
    assert main(["info", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "family: gpt" in out and "## Limitations" in out and "Validation loss" in out


def test_the_command_line_runs_transformers_bert_and_t5_folders(tmp_path, capsys):
    bert_tok = bert_tokenizer(True)
    bert = transformers.BertForMaskedLM(transformers.BertConfig(
        vocab_size=bert_tok.get_vocab_size(), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=24, max_position_embeddings=32))
    bert.save_pretrained(tmp_path / "bert")
    bert_tok.save(str(tmp_path / "bert" / "tokenizer.json"))
    assert main(["fill-mask", "--model", str(tmp_path / "bert"), "the cat [MASK] on the mat", "--top-k", "2"]) == 0
    assert capsys.readouterr().out.startswith("mask 0:")

    t5_tok = t5_tokenizer(True)
    t5 = transformers.T5ForConditionalGeneration(transformers.T5Config(
        vocab_size=t5_tok.get_vocab_size(), d_model=16, d_kv=4, d_ff=24, num_layers=1, num_heads=2,
        relative_attention_num_buckets=8, relative_attention_max_distance=12, decoder_start_token_id=0))
    t5.save_pretrained(tmp_path / "t5")
    t5_tok.save(str(tmp_path / "t5" / "tokenizer.json"))
    assert main(["generate", "--model", str(tmp_path / "t5"), "--prompt", "the cat sat", "--max-new-tokens", "4"]) == 0
    assert capsys.readouterr().out.startswith("'the cat sat' -> ")
    assert main(["fill-spans", "--model", str(tmp_path / "t5"), "the <extra_id_0> sat", "--max-new-tokens", "4"]) == 0
    assert "<extra_id_0> =" in capsys.readouterr().out

    assert main(["info", str(tmp_path / "t5")]) == 0          # transformers wrote no README.md
    assert "no model card" in capsys.readouterr().out


def test_every_folder_we_write_carries_a_model_card(tmp_path):
    from minitransformer import models

    model = models.T5(models.T5Config(vocab_size=30, d_model=8, d_kv=4, d_ff=12, num_layers=1, num_heads=2,
                                      relative_attention_num_buckets=8))
    hf.save_pretrained(model, tmp_path, info={"name": "t5 probe", "source": "random initialisation"})
    card = (tmp_path / "README.md").read_text()
    for section in ("# t5 probe", "## Architecture and size", "## Training", "Weights from: random initialisation",
                    "not recorded", "## Evaluation", "## Intended uses", "## Limitations"):
        assert section in card
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "t5"
