#!/usr/bin/python3
"""test_import.py — `fmtrain import` and `prepare --tokenizer-from tokenizer.json` against models and
tokenizers made by transformers and tokenizers (PyPI):
  * a GPT-2 made by transformers from a random configuration (weights perturbed so that every tensor
    matters), saved with save_pretrained, imported: fmtrain's loss on windows equals transformers' within
    1e-5 relative, and its logits within 1e-5 of the largest; `fmtrain eval` of the imported checkpoint
    on a dataset prepared with its tokenizer.json gives transformers' loss on the same windows;
    greedy generation equals transformers';
  * export of the imported checkpoint gives back every tensor of the original file bit for bit;
  * a GPT-2-style tokenizer (ByteLevel with its regex) and a Llama-3-style one (Split with Llama 3's
    regex, ByteLevel, ignore_merges) trained by tokenizers: `fmtrain prepare --tokenizer-from` gives
    their ids on the test corpora;
  * [checkpoint] init_from starts a run from the imported model (with lr 0 its parameters stay
    those of the model); resume = the imported file is refused naming init_from;
  * a configuration fmtrain does not compute exactly (relu) is refused naming the field.
Usage: test_import.py (FMTRAIN_EXE, FMTRAIN_BINARY_DIR set by CTest)"""
import json
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hfenv  # noqa: E402
from hfcommon import LLAMA3, check, finish, fm_greedy, fm_logits, hf_forward, rel, run  # noqa: E402

import h5py  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from safetensors.numpy import load_file  # noqa: E402
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers  # noqa: E402

TINY = """[run]
dir = %s
seed = 1
stop_margin_minutes = 0
[model]
n_layer = 1
n_head = 2
d_model = 32
seq_len = 32
[data]
train = %s
[train]
micro_batch = 2
steps = 1
eval_every = 0
[checkpoint]
every_steps = 0
every_minutes = 0
resume = never
[runtime]
device = cpu
threads = 1
bind = none
"""


def train_tokenizer(kind, texts, vocab):
    tok = Tokenizer(models.BPE(ignore_merges=(kind == "llama3")))
    if kind == "gpt2":
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    else:
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(LLAMA3), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    special = "<|endoftext|>" if kind == "gpt2" else "<|end_of_text|>"
    tr = trainers.BpeTrainer(vocab_size=vocab, special_tokens=[special],
                             initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=tr)
    return tok, special


def prepare_ids(tmp, tjson, docs, name):
    data = os.path.join(tmp, name + ".h5")
    run("prepare", "--input", *[p for p, _ in docs], "--output", data, "--tokenizer-from", tjson,
        "--val-fraction", "0", "--quiet")
    with h5py.File(data, "r") as f:
        return f["train/tokens"][:].tolist()


def main():
    tmp = tempfile.mkdtemp(prefix="fm_import_")
    corp = hfenv.corpora(seed=2)
    docs = []
    for name, text in corp:
        if name == "kjv":
            text = text[:300000]
        p = os.path.join(tmp, name + ".txt")
        open(p, "w", encoding="utf-8", newline="").write(text)
        docs.append((p, text))
    texts = [t for _, t in docs]

    # tokenizers of both kinds: prepare --tokenizer-from gives tokenizers' ids
    for kind in ("gpt2", "llama3"):
        tok, special = train_tokenizer(kind, texts, 700)
        d = os.path.join(tmp, "tok_" + kind)
        os.makedirs(d)
        tok.save(os.path.join(d, "tokenizer.json"))
        tok.encode_special_tokens = True
        eot = tok.token_to_id(special)
        want = []
        for k, (_, text) in enumerate(docs):
            if k:
                want.append(eot)
            want.extend(tok.encode(text, add_special_tokens=False).ids)
        got = prepare_ids(tmp, os.path.join(d, "tokenizer.json"), docs, "p_" + kind)
        if got != want:
            i = next((i for i in range(min(len(got), len(want))) if got[i] != want[i]), min(len(got), len(want)))
            print("first difference at %d: fmtrain %s, tokenizers %s" % (i, got[i:i + 5], want[i:i + 5]))
        check(got == want, "%s-style tokenizer.json: fmtrain prepare = tokenizers (%d ids, ignore_merges %s)" %
              (kind, len(want), kind == "llama3"))
        # a model trained on that dataset exports the tokenizer back: tokenizers gives the same ids with it
        ini = os.path.join(tmp, "t_%s.ini" % kind)
        open(ini, "w").write(TINY % (os.path.join(tmp, "run_" + kind), os.path.join(tmp, "p_%s.h5" % kind)))
        run("train", ini, mpi=True)
        out = os.path.join(tmp, "out_" + kind)
        run("export", os.path.join(tmp, "run_" + kind), "--format", "hf", "--output", out)
        back = Tokenizer.from_file(os.path.join(out, "tokenizer.json"))
        back.encode_special_tokens = True
        same = all(back.encode(t, add_special_tokens=False).ids == tok.encode(t, add_special_tokens=False).ids
                   for t in texts)
        check(same and back.token_to_id(special) == eot, "%s-style tokenizer exported again by fmtrain export: "
              "tokenizers gives the original's ids" % kind)

    # a GPT-2 from a random configuration
    torch.manual_seed(3)
    cfg = transformers.GPT2Config(n_layer=3, n_head=4, n_embd=64, n_positions=128, vocab_size=700,
                                  activation_function="gelu_new", bos_token_id=0, eos_token_id=0)
    model = transformers.GPT2LMHeadModel(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.add_(torch.randn_like(p) * 0.05)  # biases and LayerNorm gains away from 0 and 1
    model.eval()
    hf = os.path.join(tmp, "hf_gpt2")
    model.save_pretrained(hf, safe_serialization=True)
    tok, special = train_tokenizer("gpt2", texts, 700)
    tok.save(os.path.join(hf, "tokenizer.json"))
    json.dump({"eos_token": special}, open(os.path.join(hf, "tokenizer_config.json"), "w"))
    ck = os.path.join(tmp, "gpt2.h5")
    r = run("import", "--from-hf", hf, "--output", ck, mpi=True)
    print(r.stdout.strip())

    # fmtrain's loss and logits of the imported model equal transformers'
    ids = tok.encode(docs[0][1][:20000], add_special_tokens=False).ids
    B, T = 4, 96
    w = np.array(ids[:B * (T + 1)], dtype=np.int32).reshape(B, T + 1)
    fl, flog = fm_logits(ck, w, tmp)
    hl, logits = hf_forward(model, w)
    check(abs(fl - hl) / hl <= 1e-5, "imported model: fmtrain loss %.8f, transformers %.8f (rel %.1e)" %
          (fl, hl, abs(fl - hl) / hl))
    r_log = rel(flog, logits)
    check(r_log <= 1e-5, "imported model: logits max |diff| / max |logit| = %.2e (<= 1e-5)" % r_log)

    # fmtrain eval of the imported model on a dataset made with its tokenizer = transformers' loss there
    data = os.path.join(tmp, "d.h5")
    run("prepare", "--input", docs[0][0], "--output", data, "--tokenizer-from", os.path.join(hf, "tokenizer.json"),
        "--val-fraction", "0.02", "--quiet")
    ev = json.loads(run("eval", "--checkpoint", ck, "--data", data, "--all", "--json", mpi=True).stdout)
    with h5py.File(data, "r") as f:
        val = f["val/tokens"][:].astype(np.int64)
    T = 128
    nw = (len(val) - 1) // T
    tot = 0.0
    with torch.no_grad():
        for v in range(nw):
            x = torch.tensor(val[v * T:v * T + T + 1])
            lg = model(x[None, :-1]).logits[0]
            tot += float(torch.nn.functional.cross_entropy(lg, x[1:]))
    hl_eval = tot / nw
    check(ev["windows"] == nw and abs(ev["loss"] - hl_eval) / hl_eval <= 1e-5,
          "fmtrain eval of the imported model: %.8f on %d windows, transformers %.8f (rel %.1e)" %
          (ev["loss"], nw, hl_eval, abs(ev["loss"] - hl_eval) / hl_eval))

    # greedy generation: fmtrain sample --temperature 0 = transformers' generate(do_sample=False)
    prompt = "And God said"
    pids = tok.encode(prompt, add_special_tokens=False).ids
    model.generation_config.eos_token_id = None  # fmtrain sample does not stop at the end-of-text token
    gen = model.generate(torch.tensor([pids]), max_new_tokens=30, do_sample=False, pad_token_id=0)
    hf_text = tok.decode(gen[0].tolist(), skip_special_tokens=False)
    rc, fm_text = fm_greedy(ck, prompt, 30, special)
    check(rc == 0 and fm_text == hf_text, "greedy generation of the imported model: fmtrain %r, "
          "transformers %r" % (fm_text[-40:], hf_text[-40:]))

    # import -> export: every tensor of the original, bit for bit
    out = os.path.join(tmp, "out")
    run("export", ck, "--format", "hf", "--output", out)
    orig, back = load_file(os.path.join(hf, "model.safetensors")), load_file(os.path.join(out, "model.safetensors"))
    params = {k for k in orig if not k.endswith((".attn.bias", ".attn.masked_bias")) and k != "lm_head.weight"}
    same = set(back) == params and all(np.array_equal(orig[k], back[k]) and orig[k].dtype == back[k].dtype
                                       for k in params)
    check(same, "import -> export: the %d parameter tensors are bit-identical" % len(params))

    # init_from: a run starts from the imported model; resume refuses it
    ini = os.path.join(tmp, "p.ini")
    base = """[run]
dir = %s
seed = 7
stop_margin_minutes = 0
[model]
n_layer = 3
n_head = 4
d_model = 64
seq_len = 128
vocab_size = 700
[data]
train = %s
[train]
micro_batch = 2
steps = 2
lr = 1e-30
min_lr = 0
warmup_steps = 0
weight_decay = 0
eval_every = 0
[checkpoint]
every_steps = 0
every_minutes = 0
%s
[runtime]
device = cpu
threads = 1
bind = none
log_every = 1
"""
    open(ini, "w").write(base % (os.path.join(tmp, "run"), data, "resume = never\ninit_from = " + ck))
    r = run("train", ini, mpi=True)
    started = "initialised the parameters from " + ck in r.stdout + r.stderr
    with h5py.File(ck, "r") as a, h5py.File(os.path.join(tmp, "run", "checkpoints", "step-00000002.h5"), "r") as b:
        equal = all(np.array_equal(a["params"][k][()], b["params"][k][()]) for k in a["params"])
        fresh = int(b["optimizer"].attrs["step"]) == 2
    check(started and equal and fresh, "init_from: the run starts from the imported parameters (lr 1e-30: unchanged "
          "after 2 steps; optimizer step 2 of this run)")
    open(ini, "w").write(base % (os.path.join(tmp, "run2"), data, "resume = " + ck))
    r = run("train", ini, mpi=True, check=False)
    check(r.returncode == 2 and "init_from" in r.stderr, "resume = an imported model is refused naming init_from "
          "(exit %d)" % r.returncode)

    # a configuration fmtrain does not compute: refused, naming the field
    bad = os.path.join(tmp, "hf_relu")
    shutil.copytree(hf, bad)
    c = json.load(open(os.path.join(bad, "config.json")))
    c["activation_function"] = "relu"
    json.dump(c, open(os.path.join(bad, "config.json"), "w"))
    r = run("import", "--from-hf", bad, "--output", os.path.join(tmp, "relu.h5"), mpi=True, check=False)
    check(r.returncode == 3 and "activation_function" in r.stderr, "an unsupported activation is refused (exit %d): "
          "%s" % (r.returncode, r.stderr.strip().splitlines()[0] if r.stderr.strip() else ""))

    finish(tmp, "import: all checks passed (transformers %s, tokenizers %s)" %
           (transformers.__version__, __import__("tokenizers").__version__))


main()
