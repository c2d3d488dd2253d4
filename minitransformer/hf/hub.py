"""Models from a hub: a hub id such as ``openai-community/gpt2`` resolved to a folder on disk.

The course this library grew from starts a model's life cycle by choosing it on a hub, by its
model card (what it is for, how it was trained, its limits). ``locate`` turns what a user
typed into a folder: a path that exists always wins; anything else that looks like a hub id
(``NAME`` or ``ORG/NAME``) is looked up through ``huggingface_hub``'s cache (the optional
``hub`` extra), which fetches only the files this library reads. Offline mode is honoured:
with ``HF_HUB_OFFLINE=1`` in the environment, or ``local_files_only=True``, only what the
cache already holds is used. The cache's layout is huggingface_hub's:
``models--ORG--NAME/refs/main`` names a revision, ``snapshots/REVISION/`` holds its files.
"""
from __future__ import annotations

import re
from pathlib import Path

# What load_pretrained, the tokenizer loader and `info` read; nothing else is fetched.
FILES = ("config.json", "model.safetensors", "model.safetensors.index.json", "model-*.safetensors",
         "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "spiece.model", "vocab.txt",
         "README.md", "generation_config.json")

_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")


def looks_like_hub_id(name: str) -> bool:
    """NAME or ORG/NAME, without path syntax (no leading ./ or /, no .., no backslash)."""
    return bool(_HUB_ID.fullmatch(name)) and ".." not in name and not name.endswith((".json", ".safetensors"))


def locate(name_or_path, *, revision: str | None = None, cache_dir=None, local_files_only: bool | None = None) -> Path:
    """The folder holding a model: ``name_or_path`` itself if it exists, else its hub snapshot.

    Raises FileNotFoundError naming both what was tried as a path and what the hub said.
    """
    path = Path(name_or_path)
    if path.exists():
        return path
    name = str(name_or_path)
    tried = f"no such folder {path.resolve()}"
    if not looks_like_hub_id(name):
        raise FileNotFoundError(f"{tried} (and {name!r} is not a hub id of the form ORG/NAME)")
    try:
        import huggingface_hub
        from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled
    except ImportError:
        raise FileNotFoundError(f"{tried}; to read {name!r} as a hub id, install huggingface_hub "
                                "(pip install \"minitransformer[hub]\")") from None
    kwargs = {"revision": revision, "cache_dir": None if cache_dir is None else str(cache_dir),
              "allow_patterns": list(FILES)}
    if local_files_only is not None:
        kwargs["local_files_only"] = local_files_only
    try:
        folder = Path(huggingface_hub.snapshot_download(name, **kwargs))
    except (LocalEntryNotFoundError, OfflineModeIsEnabled) as e:
        raise FileNotFoundError(f"{tried}; as a hub id, {name!r} is not in the local cache and the hub cannot "
                                f"be reached ({_first_line(e)}); download it once online, or give a folder") from None
    except (HfHubHTTPError, OSError, ValueError) as e:
        raise FileNotFoundError(f"{tried}; as a hub id, {name!r} could not be fetched: {_first_line(e)}") from None
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{tried}; the hub snapshot of {name!r} at {folder} has no config.json: "
                                "not a model this library reads")
    return folder


def _first_line(e: Exception) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0]
