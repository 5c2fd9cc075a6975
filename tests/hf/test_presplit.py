#!/usr/bin/python3
"""test_presplit.py — fmtrain's pre-split rules (src/data/presplit.c) split text exactly as Hugging
Face's `tokenizers` does with the rule's regular expression: fmtrain's own rule (a Split
pre-tokenizer with fm_presplit_regex), GPT-2's (ByteLevel with use_regex) and Llama 3's (Split). Runs
on the King James text, licences, C source, non-ASCII text, long white-space runs and random strings;
the helper also checks that streaming cuts (fm_presplit_cut) never change the words.
Usage: test_presplit.py PRESPLIT_DUMP"""
import os
import struct
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hfenv  # noqa: E402

hfenv.need("tokenizers")
from tokenizers import Regex, pre_tokenizers  # noqa: E402

FMTRAIN = None  # read from the C source below, so the test checks the string fmtrain exports


def c_regexes():
    """The regular expressions as written in src/data/presplit.c (C string literals, concatenated)."""
    src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "src", "data", "presplit.c")
    text = open(src).read()
    defs = {"W": r"\t\n\x0B\f\r "}
    out = {}
    for name in ("re_fmtrain", "re_gpt2", "re_llama3"):
        start = text.index("static const char %s[] =" % name) + len("static const char %s[] =" % name)
        end = text.index(";", start)
        body = text[start:end]
        s, i = "", 0
        while i < len(body):
            c = body[i]
            if c == '"':
                j = i + 1
                while body[j] != '"':
                    j += 2 if body[j] == "\\" else 1
                s += body[i + 1:j].encode().decode("unicode_escape")
                i = j + 1
            elif body.startswith("W", i) and not body[i + 1:i + 2].isalnum():
                s += defs["W"].encode().decode("unicode_escape")
                i += 1
            else:
                i += 1
        out[name[3:]] = s
    return out


def hf_lengths(pt, text):
    return [len(text[a:b].encode("utf-8")) for _, (a, b) in pt.pre_tokenize_str(text)]


def main():
    dump = sys.argv[1]
    res = c_regexes()
    gpt2_builtin = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
    assert res["gpt2"] == gpt2_builtin, res["gpt2"]
    rules = {
        "fmtrain": pre_tokenizers.Split(Regex(res["fmtrain"]), behavior="isolated"),
        "gpt2": pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        "llama3": pre_tokenizers.Split(Regex(res["llama3"]), behavior="isolated"),
    }
    corpora = hfenv.corpora()
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        for rule, pt in rules.items():
            recs = []
            for name, text in corpora:
                for r in hfenv.records(text):
                    recs.append((name, r))
            path = os.path.join(tmp, "rec")
            with open(path, "wb") as f:
                for _, r in recs:
                    b = r.encode("utf-8")
                    f.write(struct.pack("<I", len(b)) + b)
            outp = os.path.join(tmp, "out")
            rc = subprocess.run([dump, rule, path, outp]).returncode
            if rc != 0:
                print("FAIL %s: the streaming cut changed words (see above)" % rule)
                failures += 1
            got = open(outp).read().split("\n")
            bad = 0
            for k, (name, r) in enumerate(recs):
                want = hf_lengths(pt, r)
                mine = [int(x) for x in got[k].split()] if got[k] else []
                if mine != want:
                    bad += 1
                    if bad <= 3:
                        # the first differing word
                        i = next(i for i in range(min(len(mine), len(want)) + 1)
                                 if i >= len(mine) or i >= len(want) or mine[i] != want[i])
                        at = sum(want[:i])
                        b = r.encode("utf-8")
                        print("FAIL %s on %s: word %d at byte %d: fmtrain %s, tokenizers %s; text %r" %
                              (rule, name, i, at, mine[i:i + 3], want[i:i + 3], b[at:at + 40]))
            n_words = sum(len(g.split()) for g in got)
            print("%-8s %d records (%s), %d words: %d differ" %
                  (rule, len(recs), ", ".join(n for n, _ in corpora), n_words, bad))
            failures += bad
    if failures:
        sys.exit(1)
    print("pre-split rules identical to tokenizers %s" % __import__("tokenizers").__version__)


main()
