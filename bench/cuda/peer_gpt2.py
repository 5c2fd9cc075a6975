#!/usr/bin/env python3
"""peer_gpt2.py — the PyTorch peer of `fmtrain-bench`: one GPT-2 training step in PyTorch on the same
GPU (--device cuda, the default) or the same CPU cores (--device cpu --threads P), same model (GPT-2
124M by default: L=12, NH=12, C=768, V=50257, tied LM head, GELU tanh, LayerNorm, biases), same
micro-batch B and sequence length T.

The step is the usual fast PyTorch recipe: F.scaled_dot_product_attention (flash attention), bf16
autocast (--precision fp32 turns it off; on the GPU fp32 then uses TF32), fused AdamW, and
torch.compile (--mode eager skips the compile). Random tokens, fixed seed. After --warmup steps
(which include the compile), --steps steps are timed one by one (with a CUDA synchronize around each
on the GPU) and the median is reported. On the CPU, --threads sets torch.set_num_threads (intra-op)
and one inter-op thread; the 1-minute load average is printed at the start and the end.

MFU counts model FLOPs per token exactly as fmtrain-bench does (fm_model_flops_per_token): 6 per
element of every weight matrix a token is multiplied with (per layer 3C*C + C*C + 4C*C + 4C*C, and the
LM head's V*C real vocabulary rows; embedding gathers, norms and biases not) plus 6*L*T*C for attention
(QK^T and AV, forward + backward, causal as fmtrain counts it), against --peak-tflops (989: H100/H200
SXM dense bf16).

Prints one result line:
  peer=torch version=<v> device=<cuda|cpu> precision=<bf16|fp32> mode=<compile|eager> B=<B> T=<T>
    median_step_s=<s> tokens_per_s=<x> model_flops_per_token=<f> mfu=<m> stated_peak_tflops=<p>
    (on the CPU: model_gflops=<g> threads=<P> load=<start>-><end> instead of mfu and the peak)
Exit 0 on success; 77 when PyTorch or a CUDA device is missing (reported, not a failure of fmtrain).
Usage: peer_gpt2.py --batch B [--seq T] [--device cuda|cpu] [--threads P] [--precision bf16|fp32]
                    [--mode compile|eager] [--steps S] [--warmup W] [--peak-tflops X]
                    [--layers L --heads NH --dim C --vocab V]
"""
import argparse
import sys
import time


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, required=True)
    ap.add_argument("--seq", type=int, default=1024)
    ap.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    ap.add_argument("--threads", type=int, default=0, help="CPU: torch.set_num_threads (0: torch's default)")
    ap.add_argument("--precision", choices=["bf16", "fp32"], default="bf16")
    ap.add_argument("--mode", choices=["compile", "eager"], default="compile")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--peak-tflops", type=float, default=989.0)
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--vocab", type=int, default=50257)
    a = ap.parse_args()
    try:
        import torch
        import torch.nn as nn
        import torch.nn.functional as F
    except ImportError as e:
        print(f"peer_gpt2.py: PyTorch is not importable ({e}): skipped")
        return 77
    cuda = a.device == "cuda"
    if cuda and not torch.cuda.is_available():
        print("peer_gpt2.py: torch.cuda.is_available() is False: skipped")
        return 77
    if not cuda and a.threads > 0:
        torch.set_num_threads(a.threads)
        torch.set_num_interop_threads(1)

    def load():
        with open("/proc/loadavg") as f:
            return f.read().split()[0]

    def sync():
        if cuda:
            torch.cuda.synchronize()

    load0 = load()
    B, T, L, NH, C, V = a.batch, a.seq, a.layers, a.heads, a.dim, a.vocab

    class Block(nn.Module):
        def __init__(s):
            super().__init__()
            s.ln1, s.ln2 = nn.LayerNorm(C), nn.LayerNorm(C)
            s.attn, s.proj = nn.Linear(C, 3 * C), nn.Linear(C, C)
            s.fc, s.fcp = nn.Linear(C, 4 * C), nn.Linear(4 * C, C)

        def forward(s, x):
            q, k, v = s.attn(s.ln1(x)).split(C, dim=2)
            q, k, v = [t.view(B, T, NH, C // NH).transpose(1, 2) for t in (q, k, v)]
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + s.proj(y.transpose(1, 2).reshape(B, T, C))
            return x + s.fcp(F.gelu(s.fc(s.ln2(x)), approximate="tanh"))

    class GPT(nn.Module):
        def __init__(s):
            super().__init__()
            s.wte, s.wpe = nn.Embedding(V, C), nn.Embedding(T, C)
            s.h = nn.ModuleList([Block() for _ in range(L)])
            s.lnf = nn.LayerNorm(C)
            nn.init.normal_(s.wte.weight, std=0.02)  # GPT-2's initialisation of the (tied) embedding
            nn.init.normal_(s.wpe.weight, std=0.01)

        def forward(s, idx, tgt):
            x = s.wte(idx) + s.wpe(torch.arange(T, device=idx.device))
            for b in s.h:
                x = b(x)
            logits = F.linear(s.lnf(x), s.wte.weight)  # tied LM head
            return F.cross_entropy(logits.view(-1, V).float(), tgt.view(-1))

    torch.manual_seed(0)
    dev = torch.device(a.device)
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    m = GPT().to(dev)
    opt = torch.optim.AdamW(m.parameters(), lr=3e-4, weight_decay=0.1, fused=True)
    step_model = torch.compile(m) if a.mode == "compile" else m
    idx = torch.randint(0, V, (B, T), device=dev)
    tgt = torch.randint(0, V, (B, T), device=dev)

    def one():
        with torch.autocast(a.device, dtype=torch.bfloat16, enabled=a.precision == "bf16"):
            loss = step_model(idx, tgt)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    t0 = time.time()
    for _ in range(a.warmup):
        one()
    sync()
    warm = time.time() - t0
    times = []
    loss = None
    for _ in range(a.steps):
        sync()
        t = time.time()
        loss = one()
        sync()
        times.append(time.time() - t)
    times.sort()
    med = times[len(times) // 2]
    flops_tok = 6 * (L * 12 * C * C + V * C) + 6 * L * T * C
    tps = B * T / med
    mfu = tps * flops_tok / (a.peak_tflops * 1e12)
    head = (f"peer=torch version={torch.__version__} device={a.device} precision={a.precision} "
            f"mode={a.mode} B={B} T={T} median_step_s={med:.4f}")
    if cuda:
        print(f"peer_gpt2.py: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, "
              f"warm-up {a.warmup} steps {warm:.1f} s, last loss {float(loss.detach()):.4f}, "
              f"peak memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")
        print(f"{head} tokens_per_s={tps:.0f} model_flops_per_token={flops_tok} mfu={mfu:.4f} "
              f"stated_peak_tflops={a.peak_tflops:g}")
    else:
        print(f"peer_gpt2.py: CPU, {torch.get_num_threads()} thread(s), torch {torch.__version__}, "
              f"warm-up {a.warmup} steps {warm:.1f} s, steps {times[0]:.4f}-{times[-1]:.4f} s, "
              f"last loss {float(loss.detach()):.4f}")
        print(f"{head} tokens_per_s={tps:.1f} model_flops_per_token={flops_tok} "
              f"model_gflops={tps * flops_tok / 1e9:.2f} threads={torch.get_num_threads()} "
              f"load={load0}->{load()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
