#!/usr/bin/python3
"""test_llama.py — `fmtrain export` / `fmtrain import` of the Llama family against transformers'
LlamaForCausalLM (PyPI transformers 4.40.2 with Debian's torch):
  * a LlamaForCausalLM made by transformers from a random configuration (grouped-query attention 4:2,
    RoPE theta 10000, RMSNorm eps 1e-5, untied head, then tied; weights perturbed), saved with
    save_pretrained with a Llama-3-style tokenizer.json, imported: fmtrain's loss and logits on windows
    match transformers' within 1e-5, `fmtrain eval` gives transformers' loss on a dataset prepared with
    that tokenizer, greedy generation is the same, and export gives back every tensor bit for bit;
    the tokenizer has Llama 3's post-processor (ByteLevel and a TemplateProcessing that prepends
    <|begin_of_text|>): the exported tokenizer.json encodes single texts and pairs with
    add_special_tokens = True to the original's ids (BOS first), and transformers' AutoTokenizer of the
    export prepends it too;
  * `fmtrain eval` of the imported checkpoint without --data says that it records no dataset, where it
    was imported from and what to pass;
  * a Llama trained by fmtrain, exported: transformers loads it with no missing or unexpected keys and
    computes fmtrain's logits;
  * a configuration fmtrain does not compute (rope_scaling) is refused naming the field.
Usage: test_llama.py (FMTRAIN_EXE, FMTRAIN_BINARY_DIR set by CTest)"""
import json
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hfenv  # noqa: E402
from hfcommon import LLAMA3, check, finish, fm_greedy, fm_logits, hf_forward, load, rel, run, windows  # noqa: E402

import h5py  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from safetensors.numpy import load_file  # noqa: E402
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers  # noqa: E402


def main():
    tmp = tempfile.mkdtemp(prefix="fm_llama_")
    kjv = [t for n, t in hfenv.corpora() if n in ("kjv", "licences")]
    text = "\n".join(kjv)[:300000] if kjv else "In the beginning God created the heaven and the earth.\n" * 3000
    src = os.path.join(tmp, "text.txt")
    open(src, "w", encoding="utf-8", newline="").write(text)
    tok = Tokenizer(models.BPE(ignore_merges=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(LLAMA3), behavior="isolated"),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator([text], trainer=trainers.BpeTrainer(
        vocab_size=600, special_tokens=["<|begin_of_text|>", "<|end_of_text|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    eot = tok.token_to_id("<|end_of_text|>")
    # Llama 3's post-processor, as its tokenizer.json has it: BOS before each sequence (add_special_tokens=True)
    bos = tok.token_to_id("<|begin_of_text|>")
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single="<|begin_of_text|> $A",
                                      pair="<|begin_of_text|> $A <|begin_of_text|>:1 $B:1",
                                      special_tokens=[("<|begin_of_text|>", bos)])])
    ids = tok.encode(text[:20000], add_special_tokens=False).ids
    B, T = 3, 100
    w = np.array(ids[:B * (T + 1)], dtype=np.int32).reshape(B, T + 1)

    for tied in (False, True):
        name = "tied" if tied else "untied"
        torch.manual_seed(5)
        cfg = transformers.LlamaConfig(vocab_size=600, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                                       rope_theta=10000.0, rms_norm_eps=1e-5, tie_word_embeddings=tied,
                                       bos_token_id=tok.token_to_id("<|begin_of_text|>"), eos_token_id=eot)
        model = transformers.LlamaForCausalLM(cfg)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.05)
        model.eval()
        hf = os.path.join(tmp, "hf_" + name)
        model.save_pretrained(hf, safe_serialization=True)
        tok.save(os.path.join(hf, "tokenizer.json"))
        ck = os.path.join(tmp, name + ".h5")
        run("import", "--from-hf", hf, "--output", ck, mpi=True)
        if not tied:
            # eval without --data: the imported checkpoint records no dataset; the message says so and what to pass
            r = run("eval", "--checkpoint", ck, mpi=True, check=False)
            msg = next((ln for ln in r.stderr.splitlines() if ln.startswith("fmtrain:")), r.stderr)
            check(r.returncode == 2 and "records no dataset" in msg and "fmtrain import` from Hugging Face model " + hf
                  in msg and "--data FILE.h5" in msg and "--tokenizer-from " + ck in msg,
                  "eval of an imported checkpoint without --data (exit %d): %s" % (r.returncode, msg[-400:]))
        fl, flog = fm_logits(ck, w, tmp)
        hl, hlog = hf_forward(model, w)
        check(abs(fl - hl) / hl <= 1e-5 and rel(flog, hlog) <= 1e-5,
              "%s Llama imported: loss fmtrain %.8f, transformers %.8f; logits max |diff| / max |logit| = %.2e"
              % (name, fl, hl, rel(flog, hlog)))
        if not tied:
            data = os.path.join(tmp, "d.h5")
            run("prepare", "--input", src, "--output", data, "--tokenizer-from", os.path.join(hf, "tokenizer.json"),
                "--val-fraction", "0.02", "--quiet")
            ev = json.loads(run("eval", "--checkpoint", ck, "--data", data, "--all", "--json", mpi=True).stdout)
            with h5py.File(data, "r") as f:
                val = f["val/tokens"][:].astype(np.int64)
            Te = 128
            nw = (len(val) - 1) // Te
            tot = sum(hf_forward(model, val[v * Te:v * Te + Te + 1][None])[0] for v in range(nw)) / nw
            check(ev["windows"] == nw and abs(ev["loss"] - tot) / tot <= 1e-5,
                  "fmtrain eval of the imported Llama: %.8f on %d windows, transformers %.8f" % (ev["loss"], nw, tot))
            prompt = "And God said"
            pids = tok.encode(prompt, add_special_tokens=False).ids
            model.generation_config.eos_token_id = None
            gen = model.generate(torch.tensor([pids]), max_new_tokens=25, do_sample=False, pad_token_id=0)
            hf_text = tok.decode(gen[0].tolist(), skip_special_tokens=False)
            _, fm_text = fm_greedy(ck, prompt, 25, "<|end_of_text|>")
            check(fm_text == hf_text, "greedy generation of the imported Llama: fmtrain %r, transformers %r" %
                  (fm_text[-30:], hf_text[-30:]))
        if tied:
            # the [model] keys import prints start a run from the model ([checkpoint] init_from)
            r = run("import", "--from-hf", hf, "--output", ck, "--force", mpi=True)
            keys = r.stdout[r.stdout.index("[model]"):]
            data = os.path.join(tmp, "d.h5")
            ini = os.path.join(tmp, "init.ini")
            open(ini, "w").write(keys + """
[run]
dir = %s
[data]
train = %s
[train]
micro_batch = 2
steps = 1
eval_every = 0
[runtime]
device = cpu
threads = 1
bind = none
""" % (os.path.join(tmp, "run_init"), data))
            r = run("train", ini, mpi=True)
            check("initialised the parameters from " + ck in r.stdout + r.stderr,
                  "the [model] keys import printed start a Llama run from the imported model (init_from)")
        out = os.path.join(tmp, "out_" + name)
        run("export", ck, "--format", "hf", "--output", out)
        orig, back = load_file(os.path.join(hf, "model.safetensors")), load_file(os.path.join(out, "model.safetensors"))
        params = {k for k in orig if not (tied and k == "lm_head.weight")}
        same = set(back) == params and all(np.array_equal(orig[k], back[k]) for k in params)
        check(same, "%s Llama: import -> export gives the %d tensors bit for bit" % (name, len(params)))
        # the exported tokenizer prepends <|begin_of_text|> like the original
        back = Tokenizer.from_file(os.path.join(out, "tokenizer.json"))
        samples = [text[:3000], "And God said", " x", ""]
        singles = all(back.encode(t).ids == tok.encode(t).ids for t in samples)
        a, b = back.encode("In the beginning", " God created"), tok.encode("In the beginning", " God created")
        at = transformers.AutoTokenizer.from_pretrained(out)
        ec = json.load(open(os.path.join(out, "config.json")))
        check(singles and a.ids == b.ids and a.type_ids == b.type_ids and tok.encode("And").ids[0] == bos and
              at("And God said").input_ids == tok.encode("And God said").ids and at.bos_token == "<|begin_of_text|>"
              and ec["bos_token_id"] == bos and ec["eos_token_id"] == eot,
              "%s Llama: the exported tokenizer.json adds <|begin_of_text|> (id %d) like the original: single texts, "
              "pairs (ids and type ids), transformers' AutoTokenizer; config.json bos/eos ids" % (name, bos))
        m2, info = load(out)
        _, l2 = hf_forward(m2, w)
        check(not info["missing_keys"] and not info["unexpected_keys"] and np.array_equal(l2, hlog),
              "%s Llama: transformers loads the export (no missing/unexpected keys, same logits)" % name)

    # a Llama that fmtrain trains, exported
    data = os.path.join(tmp, "d.h5")
    ini = os.path.join(tmp, "p.ini")
    open(ini, "w").write("""[run]
dir = %s
seed = 3
stop_margin_minutes = 0
[model]
arch = llama
n_layer = 2
n_head = 4
n_kv_head = 2
d_model = 64
ffn_dim = 96
seq_len = 64
rope_theta = 10000
[data]
train = %s
[train]
micro_batch = 4
steps = 30
lr = 3e-3
warmup_steps = 3
eval_every = 0
[checkpoint]
every_steps = 0
every_minutes = 0
resume = never
[runtime]
device = cpu
threads = 1
bind = none
""" % (os.path.join(tmp, "run"), data))
    run("train", ini, mpi=True)
    out = os.path.join(tmp, "out_trained")
    run("export", os.path.join(tmp, "run"), "--format", "hf", "--output", out)
    m3, info = load(out)
    w2 = windows(data, 3, 64)
    fl, flog = fm_logits(os.path.join(tmp, "run"), w2, tmp)
    hl, hlog = hf_forward(m3, w2)
    check(type(m3).__name__ == "LlamaForCausalLM" and not info["missing_keys"] and not info["unexpected_keys"]
          and rel(flog, hlog) <= 1e-5 and abs(fl - hl) / hl <= 1e-5,
          "trained Llama exported: %s loads with no missing/unexpected keys; logits max |diff| / max |logit| = "
          "%.2e, loss %.8f vs %.8f" % (type(m3).__name__, rel(flog, hlog), fl, hl))

    # refusal
    bad = os.path.join(tmp, "hf_scaled")
    shutil.copytree(os.path.join(tmp, "hf_untied"), bad)
    c = json.load(open(os.path.join(bad, "config.json")))
    c["rope_scaling"] = {"rope_type": "llama3", "factor": 8.0}
    json.dump(c, open(os.path.join(bad, "config.json"), "w"))
    r = run("import", "--from-hf", bad, "--output", os.path.join(tmp, "x.h5"), mpi=True, check=False)
    check(r.returncode == 3 and "rope_scaling" in r.stderr, "rope_scaling is refused (exit %d)" % r.returncode)

    finish(tmp, "llama: all checks passed (transformers %s)" % transformers.__version__)


main()
