"""Build a SentencePiece ``precompiled_charsmap`` for tests.

T5's tokenizer.json normalizes text through such a blob (its NFKC table compiled into a
Darts-clone double-array trie). Published ones cannot be downloaded in tests, so this
module compiles a small one from a dict {text: replacement}; ``tokenizers`` reads it as
the reference, and the parity tests compare our reader against it.

Layout (what the reader expects): a little-endian u32 trie size in bytes, the trie's u32
units, then the replacements, each NUL-terminated. A unit packs
    bits 0-7   the label (the byte that leads to this node from its parent)
    bit 8      has-leaf: a value unit sits at this node's child position for byte 0
    bits 10-31 the offset to the children: child for byte c is at position ^ offset ^ c
and a value unit has bit 31 set and the replacement's start in the low 31 bits.
"""
from __future__ import annotations

import base64


def compile_charsmap(mapping: dict[str, str]) -> bytes:
    replacements, value_of = bytearray(), {}
    for text in sorted(set(mapping.values())):
        value_of[text] = len(replacements)
        replacements += text.encode("utf-8") + b"\x00"

    # A byte trie: node = {"children": {byte: node}, "value": int | None}.
    root = {"children": {}, "value": None}
    for key, replacement in mapping.items():
        node = root
        for b in key.encode("utf-8"):
            node = node["children"].setdefault(b, {"children": {}, "value": None})
        node["value"] = value_of[replacement]

    units = [0]
    used = {0}

    def ensure(n):
        while len(units) < n:
            units.append(0)

    def place(node, position, label):
        """Give ``node`` (at ``position``) a children block, recursively."""
        labels = sorted(node["children"]) + ([0] if node["value"] is not None else [])
        if not labels:
            units[position] = label
            return
        base = 1
        while any((base ^ c) in used or (base ^ c) == 0 for c in labels):
            base += 1
        offset = position ^ base
        assert offset < (1 << 21), "trie too large for the simple offset encoding"
        for c in labels:
            used.add(base ^ c)
        ensure(max(base ^ c for c in labels) + 1)
        has_leaf = node["value"] is not None
        units[position] = (offset << 10) | (int(has_leaf) << 8) | label
        if has_leaf:
            units[base] = (1 << 31) | node["value"]
        for c, child in node["children"].items():
            place(child, base ^ c, c)

    place(root, 0, 0)
    ensure(-(-len(units) // 256) * 256)     # whole 256-unit blocks: a lookup's XOR stays inside
    trie = b"".join(u.to_bytes(4, "little") for u in units)
    return len(trie).to_bytes(4, "little") + trie + bytes(replacements)


def precompiled_spec(mapping: dict[str, str]) -> dict:
    """The tokenizer.json normalizer entry for ``mapping``."""
    return {"type": "Precompiled",
            "precompiled_charsmap": base64.b64encode(compile_charsmap(mapping)).decode("ascii")}
