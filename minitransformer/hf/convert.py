"""load_pretrained and save_pretrained: whole folders in the transformers format.

A transformers model folder holds ``config.json`` (``model_type`` names the family) and the
weights as ``model.safetensors`` or, for large models, shards listed by
``model.safetensors.index.json`` ({"weight_map": {key: shard file}}). Loading is

    1. read config.json and pick the family (gpt2, bert, t5);
    2. read every tensor, upcasting floats to the dtype asked for;
    3. put the family's keys in canonical form (a base-model folder lacks the task prefix;
       old BERT files say gamma/beta) and resolve tied copies;
    4. translate the config, refusing options our models do not compute;
    5. build the model and fill it through the family's table, checking that every
       parameter is filled, every tensor used (or knowingly ignored), every shape right,
       and reporting all problems at once.

Saving walks the same table backwards and writes config.json, model.safetensors, the
tokenizer (tokenizer.json and tokenizer_config.json) if one is given, and a model card
(README.md).
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy

from minitransformer import backend, limits
from minitransformer.checkpoint import CheckpointError
from minitransformer.hf.architectures import CONV1D, FAMILIES, UnsupportedConfig, family_of_model
from minitransformer.hf.tensor_file import read_tensors, write_tensors

PICKLES = ("pytorch_model.bin", "pytorch_model.bin.index.json")
OTHER_FORMATS = ("tf_model.h5", "flax_model.msgpack", "model.ckpt.index")
CONVERT = ("python -c \"from transformers import AutoModelForPreTraining as M; "
           "M.from_pretrained('{dir}').save_pretrained('{dir}')\"")


class ConversionError(CheckpointError):
    """A checkpoint's tensors do not fit the model its config describes."""


def _listing(names, limit: int = 8) -> str:
    names = list(names)
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def read_weights(folder: Path, float_dtype="float32") -> dict:
    """Every tensor of a model folder (single file or shards), floats as ``float_dtype``."""
    single, index = folder / "model.safetensors", folder / "model.safetensors.index.json"
    if single.is_file():
        return read_tensors(single, float_dtype)
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError):
            weight_map = None
        if not isinstance(weight_map, dict):
            raise CheckpointError(f"{index} is not a shard index (a JSON object with a weight_map of "
                                  "tensor name -> shard file); re-download it")
        shards: dict[str, list[str]] = {}
        for name, shard in weight_map.items():
            shards.setdefault(str(shard), []).append(name)
        tensors = {}
        for shard, names in shards.items():
            path = folder / shard
            if Path(shard).name != shard or not path.is_file():
                raise FileNotFoundError(f"{index} lists shard {shard!r}, which is not a file in {folder}; "
                                        "download every shard")
            part = read_tensors(path, float_dtype)
            if set(part) != set(names):
                odd = sorted(set(part) ^ set(names))
                raise CheckpointError(f"{path} and {index} disagree about which tensors it holds "
                                      f"({_listing(odd)}); re-download both")
            tensors.update(part)
        return tensors
    pickles = [p for p in PICKLES if (folder / p).is_file()]
    if pickles:
        raise CheckpointError(
            f"{folder} holds its weights only as {pickles[0]}, a PyTorch pickle; loading a pickle can run "
            "any code its author put in it, so minitransformer refuses. Get the model.safetensors version "
            "of the model, or convert it once where you trust the file: " + CONVERT.format(dir=folder))
    others = [p for p in OTHER_FORMATS if (folder / p).is_file()]
    raise FileNotFoundError(
        f"{folder} has no model.safetensors or model.safetensors.index.json"
        + (f" (only {others[0]}, which is not supported)" if others else "")
        + "; expected a transformers-format folder")


def read_config(folder: Path) -> dict:
    path = folder / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{folder} has no config.json: not a transformers-format model folder")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path} is not valid JSON ({e}); re-download it") from None
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path} holds a JSON {type(raw).__name__}, expected an object")
    return raw


def load_pretrained(path, dtype="float32", device: str = "cpu", *, revision: str | None = None,
                    cache_dir=None, local_files_only: bool | None = None):
    """The model saved in a transformers-format folder, or under a hub id, with its weights, in eval mode.

    ``path``: a folder, or a hub id such as "openai-community/gpt2" (resolved through
    huggingface_hub's cache; see ``minitransformer.hf.hub``; a folder that exists wins).
    Supported: GPT-2 (GPT2LMHeadModel, GPT2Model), BERT (BertForMaskedLM and
    BertForPreTraining -> ``BERT``; BertModel -> ``BertModel``), T5 v1.0 and v1.1
    (T5ForConditionalGeneration). dtype: the precision to compute in ("float32" or
    "float64"); float16 and bfloat16 weights are upcast to it.
    """
    from minitransformer.hf import hub

    folder = hub.locate(path, revision=revision, cache_dir=cache_dir, local_files_only=local_files_only)
    if not folder.is_dir():
        raise NotADirectoryError(f"load_pretrained: {folder} is a file; give the folder that holds config.json")
    raw = read_config(folder)
    model_type = raw.get("model_type")
    if model_type is None and "family" in raw:
        raise UnsupportedConfig(f"{folder} is a minitransformer checkpoint, not a transformers-format folder; "
                                "load it with minitransformer.checkpoint.load_model")
    if not isinstance(model_type, str) or model_type not in FAMILIES:
        raise UnsupportedConfig(f"{folder / 'config.json'} has model_type {model_type!r}; minitransformer "
                                f"loads {', '.join(FAMILIES)}")
    family = FAMILIES[model_type]
    float_dtype = numpy.dtype(dtype)
    if float_dtype.kind != "f":
        raise ValueError(f"load_pretrained: dtype must be a float type such as 'float32', got {dtype!r}")
    tensors = read_weights(folder, float_dtype)
    for alias, source in family.aliases.items():      # a file may keep only the tied copy
        if source not in tensors and alias in tensors:
            tensors[source] = tensors[alias]
    try:
        tensors = family.prepare(raw, tensors)
        config = family.config_from_hf(raw, tensors)
    except (TypeError, AttributeError) as e:
        # Only config.json's values are read here; a value of the wrong type (a list where a
        # name belongs, a string where a size does) is the file's fault, not the library's.
        raise UnsupportedConfig(f"{folder / 'config.json'} holds a value of the wrong type ({e}); "
                                "compare it with the config.json of a model that loads") from None
    limits.check_fits(config, float_dtype, source=str(folder / "config.json"))   # before allocating
    model = family.build(config, tensors).astype(float_dtype)
    fill(model, family, tensors, folder)
    return model.eval().to(device)


def fill(model, family, tensors: dict, source) -> None:
    """Copy ``tensors`` into ``model`` through the family's table, or raise listing every misfit."""
    own = dict(model.named_parameters())
    table = family.table(model)
    unmapped = sorted(set(own) - {ours for ours, _, _ in table})
    state, used, missing, misshaped = {}, set(), [], []
    for ours, theirs, layout in table:
        if theirs not in tensors:
            missing.append(theirs)
            continue
        used.add(theirs)
        array = tensors[theirs].T if layout == CONV1D else tensors[theirs]
        if tuple(array.shape) != tuple(own[ours].shape):
            stored = tuple(tensors[theirs].shape)
            expected = tuple(own[ours].shape)[::-1] if layout == CONV1D else tuple(own[ours].shape)
            misshaped.append(f"{theirs} {stored} (expected {expected})")
            continue
        state[ours] = array
    differing = []
    for alias, src in family.tied(model).items():
        if alias in tensors:
            used.add(alias)
            if src in tensors and not numpy.array_equal(tensors[alias], tensors[src]):
                differing.append(f"{alias} != {src}")
    unused = [k for k in tensors if k not in used
              and not any(re.fullmatch(pattern, k) for pattern in family.ignored)]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing tensor(s): {_listing(missing)}")
    if unused:
        problems.append(f"{len(unused)} tensor(s) nothing uses: {_listing(unused)}")
    if misshaped:
        problems.append(f"{len(misshaped)} with the wrong shape: {_listing(misshaped, 4)}")
    if differing:
        problems.append(f"tied copies that differ (our model has one array for both): {_listing(differing)}")
    if unmapped:
        problems.append(f"parameters no table row fills: {_listing(unmapped)}")
    if problems:
        raise ConversionError(
            f"{source}: the weights do not fit the {type(model).__name__} its config.json describes: "
            + "; ".join(problems) + ". Is config.json the one these weights were saved with?")
    model.load_state_dict(state)


# =======================================================================================
# Saving
# =======================================================================================

def _tokenizer_config(tokenizer, model) -> dict:
    """tokenizer_config.json: which tokens play which role, for transformers' AutoTokenizer."""
    c = model.config
    out = {"tokenizer_class": "PreTrainedTokenizerFast",
           "model_max_length": c.max_positions or 512}
    for role in ("pad", "eos", "unk", "mask", "cls", "sep"):
        try:
            out[f"{role}_token"] = tokenizer.id_to_token(getattr(tokenizer, f"{role}_id"))
        except (AttributeError, ValueError):
            continue            # this tokenizer has no token for that role
    if family_of_model(model).bos_is_eos and "eos_token" in out:
        out["bos_token"] = out["eos_token"]
    return out


def save_pretrained(model, path, tokenizer=None, card: str | None = None, info: dict | None = None,
                    pooler: bool = False) -> Path:
    """Write ``model`` as a transformers-format folder that ``from_pretrained`` loads as-is.

    Files: config.json, model.safetensors, README.md (``card``, or one generated from
    ``info`` by ``model_card``), and with a ``tokenizer`` its tokenizer.json and
    tokenizer_config.json. A GPT loads as GPT2LMHeadModel, a BERT as BertForMaskedLM, a
    BertModel as BertModel, a T5 as T5ForConditionalGeneration.

    pooler: BertForMaskedLM has no pooler, so BERT's is left out (transformers would report
    it as an unexpected key); pass True to keep it for BertForSequenceClassification.
    """
    from minitransformer.model_card import model_card

    family = family_of_model(model)
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"save_pretrained: {folder} is a file; give a folder to write into")
    folder.mkdir(parents=True, exist_ok=True)
    own = dict(model.named_parameters())
    table = family.table(model)
    unmapped = sorted(set(own) - {ours for ours, _, _ in table})
    if unmapped:
        raise ConversionError(f"save_pretrained: parameters no table row exports: {_listing(unmapped)}")
    arrays = {}
    for ours, theirs, layout in table:
        if not pooler and family.model_type == "bert" and theirs.startswith("bert.pooler."):
            continue
        a = backend.to_numpy(own[ours].data)
        arrays[theirs] = numpy.ascontiguousarray(a.T if layout == CONV1D else a)
    config = family.config_to_hf(model)
    config["dtype"] = str(model.dtype)
    write_tensors(folder / "model.safetensors", arrays, {"format": "pt"})
    (folder / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    if tokenizer is not None:
        tokenizer.save(folder / "tokenizer.json")
        (folder / "tokenizer_config.json").write_text(
            json.dumps(_tokenizer_config(tokenizer, model), indent=2, sort_keys=True) + "\n")
    (folder / "README.md").write_text(card if card is not None else model_card(model, info=info))
    return folder
