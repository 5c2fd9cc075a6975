#!/usr/bin/python3
"""test_export.py — `fmtrain export` against transformers and tokenizers (PyPI), on a model fmtrain trains:
  * transformers loads the exported directory with no missing, unexpected or mismatched keys;
  * its logits on validation windows match fmtrain's forward within 1e-5 (max |diff| / max |logit|),
    and its loss within 1e-5 relative (fp32 export); `fmtrain eval --all` on the validation split
    gives transformers' loss on the same windows within 1e-5 relative;
  * greedy generation (do_sample=False) gives the text of `fmtrain sample --temperature 0`;
  * tokenizers with the exported tokenizer.json (add_special_tokens=False, encode_special_tokens=True)
    gives the ids of `fmtrain prepare` on the King James text, licences, C source, non-ASCII text,
    long white-space runs and random text (one document each, end-of-text between them);
  * a bf16 export holds the fp32 weights rounded to nearest even (as torch rounds);
  * a sharded export (--max-shard-size) loads to the same logits;
  * export -> import -> export writes byte-identical files.
Usage: test_export.py (FMTRAIN_EXE, FMTRAIN_BINARY_DIR set by CTest)"""
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hfenv  # noqa: E402
from hfcommon import check, finish, fm_greedy, fm_logits, hf_forward, load, rel, run, windows  # noqa: E402

import h5py  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402


def write_ini(path, data, run_dir, extra=""):
    open(path, "w").write("""[run]
dir = %s
seed = 7
stop_margin_minutes = 0
[model]
n_layer = 2
n_head = 2
d_model = 64
seq_len = 64
[data]
train = %s
[train]
micro_batch = 4
grad_accum = 1
steps = 200
lr = 3e-3
warmup_steps = 4
eval_every = 0
weight_decay = 0.0
[checkpoint]
every_steps = 0
every_minutes = 0
resume = never
[runtime]
device = cpu
threads = 1
bind = none
log_every = 20
%s""" % (run_dir, data, extra))


def main():
    tmp = tempfile.mkdtemp(prefix="fm_export_")
    docs = []
    for name, text in hfenv.corpora():
        if name == "kjv":
            text = text[:400000]
        p = os.path.join(tmp, name + ".txt")
        open(p, "w", encoding="utf-8", newline="").write(text)
        docs.append((p, text))
    data = os.path.join(tmp, "d.h5")
    run("prepare", "--input", *[p for p, _ in docs], "--output", data, "--vocab-size", "1024",
        "--val-fraction", "0.05", "--quiet")
    ini = os.path.join(tmp, "p.ini")
    write_ini(ini, data, os.path.join(tmp, "run"))
    run("train", ini, mpi=True)
    out = os.path.join(tmp, "out")
    r = run("export", os.path.join(tmp, "run"), "--format", "hf", "--output", out)
    print(r.stdout.strip())

    # transformers loads it: no missing, unexpected or mismatched keys
    model, info = load(out)
    check(not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
          and not info["error_msgs"], "transformers loads the export with no missing/unexpected keys: %s" % info)
    check(type(model).__name__ == "GPT2LMHeadModel", "the model is %s" % type(model).__name__)

    # logits and loss on validation windows
    w = windows(data, 4, 64)
    fl, flog = fm_logits(os.path.join(tmp, "run"), w, tmp)
    hl, hlog = hf_forward(model, w)
    r_log = rel(flog, hlog)
    check(r_log <= 1e-5, "logits on 4 validation windows of 64: max |diff| / max |logit| = %.2e (<= 1e-5)" % r_log)
    check(abs(fl - hl) / abs(hl) <= 1e-5, "loss fmtrain %.8f, transformers %.8f (rel %.1e)" % (fl, hl, abs(fl - hl) / hl))

    # fmtrain eval's validation loss (all windows of the val split, in file order) = transformers' on them
    ev = json.loads(run("eval", "--checkpoint", os.path.join(tmp, "run"), "--all", "--json", mpi=True).stdout)
    with h5py.File(data, "r") as f:
        val = f["val/tokens"][:].astype(np.int64)
    nw = (len(val) - 1) // 64
    allw = np.stack([val[v * 64:v * 64 + 65] for v in range(nw)])
    hl_all = sum(hf_forward(model, allw[i:i + 8])[0] * len(allw[i:i + 8]) for i in range(0, nw, 8)) / nw
    check(ev["windows"] == nw and abs(ev["loss"] - hl_all) / hl_all <= 1e-5,
          "fmtrain eval --all: %.8f on %d windows, transformers %.8f (rel %.1e)" %
          (ev["loss"], ev["windows"], hl_all, abs(ev["loss"] - hl_all) / hl_all))

    # greedy generation equals fmtrain sample --temperature 0
    tok = transformers.AutoTokenizer.from_pretrained(out)
    prompt = "And God said, Let there be light"
    ids = tok(prompt, add_special_tokens=False)["input_ids"]
    gen = model.generate(torch.tensor([ids]), max_new_tokens=24, do_sample=False, pad_token_id=tok.eos_token_id)
    hf_text = tok.decode(gen[0])
    rc, fm_text = fm_greedy(os.path.join(tmp, "run"), prompt, 24, "<|endoftext|>")
    check(rc == 0 and fm_text == hf_text, "greedy generation: fmtrain %r, transformers %r" % (fm_text[-50:], hf_text[-50:]))

    # tokenizers gives fmtrain prepare's ids
    tj = Tokenizer.from_file(os.path.join(out, "tokenizer.json"))
    tj.encode_special_tokens = True
    eot = tok.eos_token_id
    data0 = os.path.join(tmp, "d0.h5")
    run("prepare", "--input", *[p for p, _ in docs], "--output", data0, "--tokenizer-from", data,
        "--val-fraction", "0", "--quiet")
    with h5py.File(data0, "r") as f:
        fm_ids = f["train/tokens"][:].tolist()
    want = []
    for k, (p, text) in enumerate(docs):
        if k:
            want.append(eot)
        want.extend(tj.encode(text, add_special_tokens=False).ids)
    same = fm_ids == want
    if not same:
        i = next(i for i in range(min(len(fm_ids), len(want))) if fm_ids[i] != want[i]) if fm_ids[:len(want)] != want[:len(fm_ids)] else min(len(fm_ids), len(want))
        print("first difference at id %d: fmtrain %s, tokenizers %s" % (i, fm_ids[i:i + 5], want[i:i + 5]))
    check(same, "tokenizers with tokenizer.json = fmtrain prepare: %d ids over %s" %
          (len(want), ", ".join(os.path.basename(p)[:-4] for p, _ in docs)))
    auto = tok(docs[0][1][:20000], add_special_tokens=False)["input_ids"]
    check(auto == tj.encode(docs[0][1][:20000], add_special_tokens=False).ids,
          "transformers' AutoTokenizer gives the same ids as tokenizers")

    # bf16: the fp32 weights rounded to nearest even
    outb = os.path.join(tmp, "out_bf16")
    run("export", os.path.join(tmp, "run"), "--format", "hf", "--output", outb, "--dtype", "bf16")
    mb, info = load(outb, torch_dtype=torch.bfloat16)
    ok = not info["missing_keys"] and not info["unexpected_keys"]
    sd32, sd16 = model.state_dict(), mb.state_dict()
    for k, v in sd32.items():
        ok = ok and torch.equal(v.to(torch.bfloat16), sd16[k])
    check(ok, "bf16 export = fp32 weights rounded to nearest even (%d tensors)" % len(sd32))

    # sharded
    outs = os.path.join(tmp, "out_sharded")
    r = run("export", os.path.join(tmp, "run"), "--format", "hf", "--output", outs, "--max-shard-size", "100KB")
    shards = [f for f in os.listdir(outs) if f.startswith("model-")]
    ms, info = load(outs)
    _, slog = hf_forward(ms, w)
    check(len(shards) > 1 and os.path.exists(os.path.join(outs, "model.safetensors.index.json"))
          and not info["missing_keys"] and np.array_equal(slog, hlog),
          "sharded export (%d shards + index) loads to identical logits" % len(shards))

    # export -> import -> export: byte-identical files
    ck = os.path.join(tmp, "imported.h5")
    run("import", "--from-hf", out, "--output", ck, mpi=True)
    out2 = os.path.join(tmp, "out2")
    run("export", ck, "--format", "hf", "--output", out2)
    names = sorted(os.listdir(out))
    same = names == sorted(os.listdir(out2)) and all(
        open(os.path.join(out, n), "rb").read() == open(os.path.join(out2, n), "rb").read() for n in names)
    check(same, "export -> import -> export gives byte-identical files (%s)" % ", ".join(names))
    il, _ = fm_logits(ck, w, tmp)
    check(il == fl, "the imported checkpoint's loss equals the original's exactly (%.8f)" % il)

    finish(tmp, "export: all checks passed (transformers %s, tokenizers %s)" %
           (transformers.__version__, __import__("tokenizers").__version__))


main()
