#!/usr/bin/python3
"""make_fuzz_seeds.py — writes the seed inputs of the tests/hf fuzzers into a directory: small valid
safetensors headers (with the 8-byte data size first, as fuzz_safetensors.c reads it) and a small valid
tokenizer.json of each pre-split kind (the Llama 3 one with its post-processor). Usage: make_fuzz_seeds.py DIR"""
import json
import os
import struct
import sys

out = sys.argv[1]
os.makedirs(out, exist_ok=True)
hdr = {"__metadata__": {"format": "pt"},
       "w": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]},
       "b": {"dtype": "BF16", "shape": [3], "data_offsets": [24, 30]}}
open(os.path.join(out, "st1"), "wb").write(struct.pack(">Q", 30) + json.dumps(hdr).encode())
open(os.path.join(out, "st2"), "wb").write(struct.pack(">Q", 0) + b"{}")


def byte_table():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


m = byte_table()
vocab = {m[b]: b for b in range(256)}
merges = []
for k, (a, b) in enumerate([(" ", "t"), ("h", "e"), (" t", "he"), ("i", "n")]):
    ma, mb = "".join(m[ord(c)] for c in a), "".join(m[ord(c)] for c in b)
    vocab[ma + mb] = 256 + k
    merges.append(ma + " " + mb)
for name, pre in [
    ("tj_gpt2", {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}),
    ("tj_llama3", {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| "
                                               r"?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"},
         "behavior": "Isolated", "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]}),
]:
    tj = {"version": "1.0", "added_tokens": [{"id": 260, "content": "<|endoftext|>", "special": True}],
          "normalizer": None, "pre_tokenizer": pre, "decoder": {"type": "ByteLevel"},
          "model": {"type": "BPE", "dropout": None, "unk_token": None, "ignore_merges": name == "tj_llama3",
                    "vocab": vocab, "merges": merges}}
    if name == "tj_llama3":  # Llama 3's post-processor: <|begin_of_text|> before each sequence
        tj["added_tokens"].append({"id": 261, "content": "<|begin_of_text|>", "special": True})
        s = {"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}}
        s1 = {"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 1}}
        a, b = {"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}
        tj["post_processor"] = {"type": "Sequence", "processors": [
            {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
            {"type": "TemplateProcessing", "single": [s, a], "pair": [s, a, s1, b],
             "special_tokens": {"<|begin_of_text|>": {"id": "<|begin_of_text|>", "ids": [261],
                                                      "tokens": ["<|begin_of_text|>"]}}}]}
    open(os.path.join(out, name), "w").write(json.dumps(tj, ensure_ascii=False))
