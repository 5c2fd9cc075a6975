"""hfenv.py — shared by the tests/hf Python tests: finds the PyPI packages (transformers, tokenizers,
safetensors) on PYTHONPATH or in FMTRAIN_HF_PYTHONPATH, skips (exit 77) naming what is missing, and
makes the test corpora (the King James text, licences, C source, non-ASCII text, long white-space
runs, random strings)."""
import glob
import os
import random
import sys

SKIP = 77
# where tests/reference/install_transformers.sh puts transformers, tokenizers and safetensors (tests/run.sh
# runs it): $FM_HF_PYTHONPATH, else the cache; FMTRAIN_HF_PYTHONPATH (a ':' list) goes first
_cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
_paths = [p for p in os.environ.get("FMTRAIN_HF_PYTHONPATH", "").split(":") if p]
_paths.append(os.environ.get("FM_HF_PYTHONPATH") or os.path.join(_cache, "fmtrain", "pydeps-transformers-4.40.2"))
for p in reversed(_paths):
    if p and p not in sys.path:
        sys.path.insert(0, p)


def need(*names):
    missing = []
    for n in names:
        try:
            __import__(n)
        except ImportError as e:
            missing.append("%s (%s)" % (n, e))
    if missing:
        print("SKIP: missing Python packages: %s; install them with tests/reference/install_transformers.sh "
              "(or set FMTRAIN_HF_PYTHONPATH to a directory that has them)" % ", ".join(missing))
        sys.exit(SKIP)


def corpora(seed=1):
    """(name, text) pairs: real text first, then made-up text that stresses the rules."""
    out = []
    kjv = os.path.join(os.environ.get("FMTRAIN_BINARY_DIR", ""), "kjv.txt")
    if os.path.exists(kjv):
        out.append(("kjv", open(kjv, encoding="utf-8").read()))
    lic = []
    for f in sorted(glob.glob("/usr/share/common-licenses/*")):
        if os.path.isfile(f):
            lic.append(open(f, encoding="utf-8", errors="replace").read())
    if lic:
        out.append(("licences", "\n\n".join(lic)))
    src = os.environ.get("FMTRAIN_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
    code = []
    for f in sorted(glob.glob(os.path.join(src, "src", "*", "*.[ch]")))[:40]:
        code.append(open(f, encoding="utf-8", errors="replace").read())
    out.append(("c-source", "\n".join(code)))
    rnd = random.Random(seed)
    # non-ASCII: words of several scripts, curly quotes, dashes, NBSP and other Unicode spaces,
    # numbers of other scripts (Nd, Nl, No), combining marks, emoji, the long s
    pieces = ["naïve", "café", "Straße", "Ελληνικά", "русский", "中文字符", "日本語のテキスト", "한국어",
              "עברית", "العربية", "हिन्दी", "ﬁnance", "ſtate", "'ſ", "“quoted”", "it’s", "— dash –",
              "\u00a0", "\u2028", "\u3000", "\u2009", "\u0085", "١٢٣٤", "Ⅻ", "²³", "½", "🙂🚀", "e\u0301",
              "\u200b", "\ufeff", "x\u0308y", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "'S", "'LL", "'Re", "'vE", "\r\n", "\t", " "]
    out.append(("non-ascii", " ".join(rnd.choice(pieces) + rnd.choice(["", " ", "  ", "\n", ".", ","])
                                      for _ in range(20000))))
    ws = []
    for _ in range(400):
        n = rnd.choice([1, 2, 3, 255, 256, 257, 258, 300, 511, 512, 513, 700])
        run = "".join(rnd.choice(" \t\n\r\x0b\x0c") for _ in range(n)) if rnd.random() < 0.5 else " " * n
        ws.append(run + rnd.choice(["x", "word", "12", "!", "\u00a0", "é", "", "'s"]))
        if rnd.random() < 0.2:
            ws.append(rnd.choice("ab1.é") * rnd.choice([255, 256, 257, 600]))
    out.append(("long-runs", "".join(ws)))
    alpha = "ab'stredvml ELLRSVTD0129.,!?-_\t\n\r\x0b\x0c \u00a0é中ſ"
    out.append(("random", "".join(rnd.choice(alpha) for _ in range(200000))))
    return out


def records(text, size=3000):
    """Cuts text into pieces of about `size` characters at arbitrary points."""
    return [text[i:i + size] for i in range(0, len(text), size)]
