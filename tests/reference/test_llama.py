#!/usr/bin/python3
"""test_llama.py — checks fmtrain's Llama against PyTorch in fp32: Hugging Face's LlamaForCausalLM
(--against hf, transformers 4.40.2) or a Llama written here in plain PyTorch (--against torch).

Runs the C dump program (ref_dump.c) for a small Llama config (odd sizes, T not a power of two,
grouped-query attention 1:1, 2:1 or 4:1, tied or untied head), which writes the initial weights with
their Hugging Face names (the tensor table's hf_name), a fixed batch, the logits, loss and every
gradient of one forward/backward, and the losses of 10 AdamW steps with clipping. This script builds
the same model, loads the weights BY THE HUGGING FACE NAMES (so the tensor table's mapping is tested
too: export is that mapping), computes the same, and compares:
  loss                      relative error <= 1e-5
  logits                    max|l_c - l_torch| / max|l_torch| <= 1e-5
  every gradient tensor     max|g_c - g_torch| / max|g_torch| <= 1e-5   (the worst tensor is printed)
  padded vocabulary rows    zero at init and zero gradient
  loss trajectory           relative error <= 1e-5 at every one of the 11 points (10 AdamW steps)
--against hf needs transformers 4.40.2 (works with Debian's torch 1.13): it is looked up in
$FM_HF_PYTHONPATH, else ${XDG_CACHE_HOME:-~/.cache}/fmtrain/pydeps-transformers-4.40.2, where
tests/reference/install_transformers.sh puts it; when it is not there the test is SKIPPED (exit 77)
with the reason. --against torch needs only torch, h5py and numpy (a failure when missing).
Usage: test_llama.py --exe PATH --config NAME --workdir DIR --against hf|torch [--threads N] [--keep]
"""
import argparse
import math
import os
import subprocess
import sys
import time

try:
    import h5py
    import numpy as np
    import torch
    import torch.nn.functional as F
except ImportError as e:  # a failure, not a skip: the comparison must run where the suite runs
    print("FAIL: %s; install python3-torch python3-h5py python3-numpy (modules/setup-debian.sh)" % e)
    sys.exit(1)

TOL = {"loss": 1e-5, "logits": 1e-5, "grad": 1e-5, "traj": 1e-5}
HF_VERSION = "4.40.2"


def hf_dir():
    d = os.environ.get("FM_HF_PYTHONPATH")
    if d:
        return d
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "fmtrain", "pydeps-transformers-" + HF_VERSION)


def import_transformers():
    """transformers from the cache directory, or None and the reason."""
    d = hf_dir()
    if not os.path.isdir(d):
        return None, ("transformers %s not found: %s does not exist (run "
                      "tests/reference/install_transformers.sh, or set FM_HF_PYTHONPATH)" % (HF_VERSION, d))
    sys.path.insert(0, d)
    try:
        import transformers
        from transformers import LlamaConfig, LlamaForCausalLM
    except Exception as e:  # noqa: BLE001 - any import problem is a reason to skip
        return None, "transformers in %s cannot be imported: %s" % (d, e)
    if transformers.__version__ != HF_VERSION:
        print("note: transformers %s (the test was written for %s)" % (transformers.__version__, HF_VERSION))
    return (LlamaConfig, LlamaForCausalLM), None


# ---- Llama in plain PyTorch (independent of transformers) -------------------------------------

def rms_norm(x, w, eps):
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def rope(x, theta):
    """x (B,H,T,hs) at positions 0..T-1; Hugging Face's rotate_half convention, fp32 angles"""
    hs, T = x.shape[-1], x.shape[-2]
    inv = 1.0 / (theta ** (torch.arange(0, hs, 2, dtype=torch.int64).float() / hs))
    ang = torch.arange(T, dtype=torch.int64).float()[:, None] * inv[None, :]  # (T, hs/2)
    cos, sin = ang.cos(), ang.sin()
    x1, x2 = x[..., : hs // 2], x[..., hs // 2:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


def plain_forward(P, cfg, tokens):
    L, NH, NKV, C = cfg["n_layer"], cfg["n_head"], cfg["n_kv_head"], cfg["d_model"]
    eps, theta = cfg["norm_eps"], cfg["rope_theta"]
    B, T = tokens.shape
    hs = C // NH
    x = P["model.embed_tokens.weight"][tokens]
    mask = torch.ones(T, T, dtype=torch.bool).tril()
    for l in range(L):
        p = lambda n: P["model.layers.%d.%s" % (l, n)]
        h = rms_norm(x, p("input_layernorm.weight"), eps)
        q = F.linear(h, p("self_attn.q_proj.weight")).view(B, T, NH, hs).transpose(1, 2)
        k = F.linear(h, p("self_attn.k_proj.weight")).view(B, T, NKV, hs).transpose(1, 2)
        v = F.linear(h, p("self_attn.v_proj.weight")).view(B, T, NKV, hs).transpose(1, 2)
        q, k = rope(q, theta), rope(k, theta)
        k = k.repeat_interleave(NH // NKV, dim=1)  # query head h uses key/value head h // (NH/NKV)
        v = v.repeat_interleave(NH // NKV, dim=1)
        att = (q @ k.transpose(-2, -1)) / math.sqrt(hs)
        att = F.softmax(att.masked_fill(~mask, float("-inf")), dim=-1)
        y = (att @ v).transpose(1, 2).reshape(B, T, C)
        x = x + F.linear(y, p("self_attn.o_proj.weight"))
        h = rms_norm(x, p("post_attention_layernorm.weight"), eps)
        g = F.linear(h, p("mlp.gate_proj.weight"))
        u = F.linear(h, p("mlp.up_proj.weight"))
        x = x + F.linear(F.silu(g) * u, p("mlp.down_proj.weight"))
    x = rms_norm(x, P["model.norm.weight"], eps)
    head = P["model.embed_tokens.weight"] if cfg["tie_embeddings"] else P["lm_head.weight"]
    return x @ head.t()


def rel_max(a, b):
    """max|a-b| / max|b| (max norm), with a floor for all-zero references."""
    den = float(np.max(np.abs(b))) if b.size else 0.0
    num = float(np.max(np.abs(a - b))) if b.size else 0.0
    return num / den if den > 0 else num


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--exe", required=True)
    ap.add_argument("--config", required=True)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--against", choices=["hf", "torch"], required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--keep", action="store_true", help="keep the HDF5 file")
    args = ap.parse_args()

    hf = None
    if args.against == "hf":
        hf, why = import_transformers()
        if hf is None:
            print("SKIP: " + why)
            return 77
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    os.makedirs(args.workdir, exist_ok=True)
    path = os.path.join(args.workdir, "reference_%s_%s.h5" % (args.config, args.against))
    t0 = time.time()
    r = subprocess.run([args.exe, "--config", args.config, "--out", path, "--threads",
                        str(args.threads)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    print(r.stdout, end="")
    if r.returncode != 0:
        print("FAIL: %s exited with %d" % (args.exe, r.returncode))
        return 1
    print("C side: %.1f s" % (time.time() - t0))

    failures = []
    t0 = time.time()
    with h5py.File(path, "r") as f:
        cfg = {k: (int(v) if isinstance(v, np.integer) else
                   float(v) if isinstance(v, (float, np.floating)) else
                   v.decode() if isinstance(v, bytes) else str(v))
               for k, v in f["config"].attrs.items()}
        if cfg["arch"] != "llama":
            print("FAIL: config %s is arch %s, not llama" % (args.config, cfg["arch"]))
            return 1
        tokens = torch.from_numpy(f["batch/tokens"][...].astype(np.int64))
        targets = torch.from_numpy(f["batch/targets"][...].astype(np.int64))
        ours = list(f["params"].keys())
        hf_name, init, c_grads = {}, {}, {}
        for n in ours:
            d = f["params/" + n]
            hn, rows = d.attrs["hf_name"], int(d.attrs["hf_rows"])
            hn = hn.decode() if isinstance(hn, bytes) else str(hn)
            hf_name[n] = hn
            a, g = d[...], f["grads/" + n][...]
            if a.shape[0] > rows:  # a vocabulary matrix padded to Vp rows
                if np.any(a[rows:] != 0):
                    failures.append("initial %s rows >= %d are not zero" % (n, rows))
                if np.any(g[rows:] != 0):
                    failures.append("gradient of the padded rows of %s is not zero" % n)
                a, g = a[:rows], g[:rows]
            init[hn] = torch.from_numpy(np.ascontiguousarray(a))
            c_grads[hn] = g
        c_logits = f["logits"][...]
        c_loss = float(f["loss"][()])
        c_losses = f["losses"][...]
        c_norms = f["grad_norms"][...]
    V, steps = cfg["vocab_size"], cfg["steps"]
    print("config %s: L=%d NH=%d NKV=%d C=%d F=%d V=%d (Vp=%d) rope_theta=%g norm_eps=%g %s head, "
          "B=%d T=%d, %d tensors" % (args.config, cfg["n_layer"], cfg["n_head"], cfg["n_kv_head"],
                                     cfg["d_model"], cfg["ffn_dim"], V, cfg["padded_vocab"],
                                     cfg["rope_theta"], cfg["norm_eps"],
                                     "tied" if cfg["tie_embeddings"] else "untied", cfg["B"], cfg["T"],
                                     len(ours)))

    # ---- the model under comparison, with fmtrain's weights loaded by Hugging Face name ---------
    if hf is not None:
        LlamaConfig, LlamaForCausalLM = hf
        hc = LlamaConfig(vocab_size=V, hidden_size=cfg["d_model"], intermediate_size=cfg["ffn_dim"],
                         num_hidden_layers=cfg["n_layer"], num_attention_heads=cfg["n_head"],
                         num_key_value_heads=cfg["n_kv_head"], max_position_embeddings=cfg["max_seq_len"],
                         rms_norm_eps=cfg["norm_eps"], rope_theta=cfg["rope_theta"],
                         tie_word_embeddings=bool(cfg["tie_embeddings"]), attention_bias=False,
                         hidden_act="silu", attn_implementation="eager")
        model = LlamaForCausalLM(hc).float()
        missing, unexpected = model.load_state_dict(init, strict=False)
        allowed_missing = {"lm_head.weight"} if cfg["tie_embeddings"] else set()
        if set(missing) - allowed_missing or unexpected:
            print("FAIL: Hugging Face names do not match: missing %s, unexpected %s" % (missing, unexpected))
            return 1
        P = dict(model.named_parameters())  # tied: lm_head shares embed_tokens (listed once)
        if set(P) != set(init):
            print("FAIL: Hugging Face's parameters %s != fmtrain's %s" % (sorted(P), sorted(init)))
            return 1
        model.train()
        forward = lambda: model(input_ids=tokens).logits
        print("reference: Hugging Face transformers LlamaForCausalLM (eager attention)")
    else:
        P = {n: torch.nn.Parameter(t.clone()) for n, t in init.items()}
        forward = lambda: plain_forward(P, cfg, tokens)
        print("reference: Llama in plain PyTorch (this file)")
    nparams = sum(p.numel() for p in P.values())
    print("%d parameters" % nparams)

    def loss_of(logits):
        return F.cross_entropy(logits.reshape(-1, V), targets.reshape(-1))

    # ---- one forward/backward -------------------------------------------------------------------
    logits = forward()
    loss = loss_of(logits)
    loss.backward()
    t_loss = float(loss)
    loss_rel = abs(c_loss - t_loss) / abs(t_loss)
    print("loss: C %.8f torch %.8f rel %.2e (tol %.0e)" % (c_loss, t_loss, loss_rel, TOL["loss"]))
    if not loss_rel <= TOL["loss"]:
        failures.append("loss rel error %.2e > %.0e" % (loss_rel, TOL["loss"]))
    lrel = rel_max(c_logits[:, :, :V], logits.detach().numpy())
    print("logits: max-norm rel error %.2e (tol %.0e)" % (lrel, TOL["logits"]))
    if not lrel <= TOL["logits"]:
        failures.append("logits rel error %.2e > %.0e" % (lrel, TOL["logits"]))
    worst, worst_name = -1.0, ""
    for n in sorted(P):
        e = rel_max(c_grads[n], P[n].grad.numpy())
        if not np.isfinite(e):
            e = float("inf")
        if e > worst:
            worst, worst_name = e, n
        if not e <= TOL["grad"]:
            failures.append("gradient %s rel error %.2e > %.0e" % (n, e, TOL["grad"]))
    print("gradients: %d tensors, worst %s max-norm rel error %.2e (tol %.0e)"
          % (len(P), worst_name, worst, TOL["grad"]))

    # ---- the AdamW trajectory -------------------------------------------------------------------
    for p in P.values():
        p.grad = None
    decay = [p for n, p in sorted(P.items()) if p.dim() == 2]
    no_decay = [p for n, p in sorted(P.items()) if p.dim() != 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg["weight_decay"]},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=cfg["lr"], betas=(cfg["beta1"], cfg["beta2"]), eps=cfg["eps"])
    t_losses, t_norms = [], []
    for s in range(steps + 1):
        loss = loss_of(forward())
        t_losses.append(float(loss))
        if s == steps:
            break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        norm = 0.0  # clip_grad_norm_'s rule with the norm in float64, as fmtrain (see test_gpt2.py)
        for p in P.values():
            gd = p.grad.reshape(-1).double()
            norm += float(torch.dot(gd, gd))
        norm = math.sqrt(norm)
        coef = min(1.0, cfg["clip"] / (norm + 1e-6))
        if coef < 1.0:
            for p in P.values():
                p.grad.mul_(coef)
        t_norms.append(norm)
        opt.step()
    traj_worst = 0.0
    for s in range(steps + 1):
        e = abs(c_losses[s] - t_losses[s]) / abs(t_losses[s])
        traj_worst = max(traj_worst, e)
        print("step %2d loss C %.7f torch %.7f rel %.2e%s" % (
            s, c_losses[s], t_losses[s], e,
            ("  grad norm C %.5f torch %.5f" % (c_norms[s], t_norms[s])) if s < steps else ""))
        if not e <= TOL["traj"]:
            failures.append("step %d loss rel error %.2e > %.0e" % (s, e, TOL["traj"]))
    print("trajectory: worst rel error %.2e (tol %.0e)" % (traj_worst, TOL["traj"]))
    if not t_losses[-1] < t_losses[0]:
        failures.append("the loss did not decrease over %d steps (%.5f -> %.5f)"
                        % (steps, t_losses[0], t_losses[-1]))
    print("torch side: %.1f s" % (time.time() - t0))

    if failures:
        print("FAIL:\n  " + "\n  ".join(failures))
        print("(kept %s for inspection)" % path)
        return 1
    if not args.keep:
        os.remove(path)
    print("PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
