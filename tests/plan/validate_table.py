#!/usr/bin/python3
"""validate_table.py — turns validate_cpu.sh's logs into docs/plan.md's CPU validation (a helper, not a
CTest test).

    tests/plan/validate_table.py calibrate LOG...        the devvm-zen4-2c table entries
    tests/plan/validate_table.py compare FMTRAIN LOG...  predicted vs measured, a Markdown table

`calibrate` prints, from the runs of the two CALIBRATION models (mid: a GPT-2 of 4 layers, d_model 256,
vocabulary 8192; gtiny: inputs/tiny-cpu.ini, vocabulary 1024) — never from the validated ones — the
device entries of jobscripts/sites/devices.plan that fmtrain plan adds to a benchmark's step:
  trainer_overhead_ms      train CPU s/step (1 rank x 2 threads) - fmtrain-bench's step (2 threads),
                           the mean over the two models;
  allreduce_latency_ms,    on 2 ranks x 1 thread: train - bench (1 thread) - trainer overhead = the
  allreduce_busbw_gbs      all-reduce, = latency + 2 (n-1)/n x gradient bytes / busbw with n = 2; the
                           two models give two equations;
  runtime_overhead_mib     peak RSS (1 rank) - the model's formula, the mean over the two models;
  allreduce_buffer_factor  (peak RSS on 2 ranks - on 1 rank) / gradient bytes, of mid (gtiny's 2 MB of
                           gradients are below the noise of RSS);
and the [measured] sections of every fmtrain-bench run (all four models), with the date of the log.
With several logs of one precision, every figure is the median over them.

`compare` runs `FMTRAIN plan --cpu devvm-zen4-2c --json` for GPT-2 124M (seq_len 64, micro_batch 4)
and inputs/llama-tiny.ini on 1 rank x 2 cores and 2 ranks x 1 core, in the logs' precision, on the
tables of the source tree, and compares the predicted step (CPU seconds per thread, the unit of
fmtrain-bench --clock cpu) and memory per rank with the measured ones of the logs.
"""
import json
import os
import re
import statistics
import subprocess
import sys

SRC = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

# The models of validate_cpu.sh: fmtrain-bench arguments and `fmtrain plan` overrides (the same shapes).
BENCH = {
    "gpt2": "--layers 12 --heads 12 --dim 768 --vocab 50257 --seq 64 --max-seq 64 --batch 4 --steps 5 --warmup 1",
    "tiny": "--arch llama --layers 2 --heads 4 --kv-heads 2 --dim 128 --ffn 398 --vocab 1024 --tie --seq 64 "
            "--batch 8 --steps 60 --warmup 10",
    "mid": "--layers 4 --heads 4 --dim 256 --vocab 8192 --seq 64 --max-seq 64 --batch 8 --steps 20 --warmup 3",
    "gtiny": "--layers 2 --heads 4 --dim 128 --vocab 1024 --seq 64 --max-seq 64 --batch 8 --steps 60 --warmup 10",
}
PLAN = {
    "gpt2": ["inputs/gpt2-124m.ini", "model.vocab_size=50257", "model.seq_len=64", "train.micro_batch=4",
             "train.grad_accum=1"],
    "tiny": ["inputs/llama-tiny.ini", "model.vocab_size=1024"],
    "mid": ["inputs/tiny-cpu.ini", "model.vocab_size=8192", "model.n_layer=4", "model.n_head=4",
            "model.d_model=256", "model.seq_len=64", "train.micro_batch=8", "train.grad_accum=1"],
    "gtiny": ["inputs/tiny-cpu.ini", "model.vocab_size=1024"],
}
NAMES = {"gpt2": "GPT-2 124M (T 64, B 4)", "tiny": "Llama tiny (inputs/llama-tiny.ini)",
         "mid": "calibration: GPT-2 4 L, 256, V 8192", "gtiny": "calibration: GPT-2 tiny, V 1024"}


def parse(paths):
    """-> (precision, date, bench[(name, threads)] = [s/step...], train[(name, ranks)] = [dict...])"""
    bench, train, prec, date, loads = {}, {}, None, None, []
    for path in paths:
        for line in open(path):
            m = re.match(r"validate_cpu.sh: \w+ (\w+) +(\d+) [\d:]+ UTC (\d+) .*precision (\w+)", line)
            if m:
                mon = "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split().index(m.group(1)) + 1
                date = "%s-%02d-%02d" % (m.group(3), mon, int(m.group(2)))
                if prec and prec != m.group(4):
                    sys.exit("logs of two precisions: %s and %s" % (prec, m.group(4)))
                prec = m.group(4)
            m = re.match(r"bench (\w+) (\w+) threads=(\d+) probe ([\d.]+) load ([\d.]+) .*-> ([\d.]+) .*median of \d+ "
                         r"steps: ([\d.]+) s/step.*tokens_per_s=([\d.]+)", line)
            if m:
                bench.setdefault((m.group(1), int(m.group(3))), []).append(
                    {"s": float(m.group(7)), "tps": float(m.group(8)), "probe": float(m.group(4)),
                     "load": (float(m.group(5)), float(m.group(6)))})
                continue
            m = re.match(r"train (\w+) (\w+) ranks=(\d+) threads=(\d+) probe ([\d.]+) load ([\d.]+) .*-> ([\d.]+) .*"
                         r"cpu_s_per_step\(per rank\): ([\d. ]+) wall_step_ms_median\(\d+ steps\): ([\d.na]+) "
                         r"maxrss_kb\(\d+ steps\): ([\d ]+)", line)
            if m:
                train.setdefault((m.group(1), int(m.group(3))), []).append(
                    {"cpu": [float(x) for x in m.group(8).split()], "wall_ms": m.group(9),
                     "rss_kb": [int(x) for x in m.group(10).split()], "probe": float(m.group(5)),
                     "load": (float(m.group(6)), float(m.group(7)))})
    return prec, date, bench, train


def med(xs):
    return statistics.median(xs)


def plan_json(fm, case, prec, ranks, tables=None):
    args = [fm, "plan", os.path.join(SRC, PLAN[case][0]), "--tokens", "1e6", "--cpu", "devvm-zen4-2c",
            "--precision", prec, "--json", "--set", "data.train=/nonexistent.h5"]
    for s in PLAN[case][1:]:
        args += ["--set", s]
    if ranks > 1:
        args += ["--ranks-per-node", str(ranks)]
    if tables:
        args += ["--data", tables]
    return json.loads(subprocess.run(args, check=True, capture_output=True, text=True).stdout)


def calibrate(fm, paths):
    prec, date, bench, train = parse(paths)
    bstep = {k: med([r["s"] for r in v]) for k, v in bench.items()}
    tcpu = {k: med([med(r["cpu"]) for r in v]) for k, v in train.items()}
    rss = {k: med([max(r["rss_kb"]) for r in v]) * 1024 for k, v in train.items()}
    if all((c, r) in train for c in ("mid", "gtiny") for r in (1, 2)):
        device_entries(fm, paths, prec, date, bstep, tcpu, rss)
    else:
        print("# no runs of the calibration models (FM_CASES without mid gtiny): [measured] sections only\n")
    print_measured(fm, prec, date, bench)


def device_entries(fm, paths, prec, date, bstep, tcpu, rss):
    over = [tcpu[(c, 1)] - bstep[(c, 2)] for c in ("mid", "gtiny")]
    trainer = statistics.mean(over)
    comm, grads, formula = {}, {}, {}
    for c in ("mid", "gtiny"):
        j = plan_json(fm, c, prec, 1, tables=empty_tables())
        z0 = [r for r in j["memory"]["per_rank"] if r["precision"] == prec and r["zero"] == 0][0]
        grads[c] = z0["grads"]
        formula[c] = sum(z0[k] for k in ("weights", "master", "grads", "optim", "activations", "logits",
                                         "scratch"))
        comm[c] = tcpu[(c, 2)] - bstep[(c, 1)] - trainer
    # comm = lat + G / bw, two models
    gm, gt = grads["mid"], grads["gtiny"]
    bw = (gm - gt) / (comm["mid"] - comm["gtiny"])
    lat = comm["gtiny"] - gt / bw
    ovh = statistics.mean([rss[(c, 1)] - formula[c] for c in ("mid", "gtiny")])
    factor = (rss[("mid", 2)] - rss[("mid", 1)]) / grads["mid"]
    n = len(paths)
    src = "validate_cpu.sh %s, %s (%d log%s), tests/plan/validate_table.py calibrate on the calibration models" % (
        prec, date, n, "" if n == 1 else "s")
    print("# %s" % src)
    print("#   trainer overhead: mid %.2f ms, gtiny %.2f ms" % (over[0] * 1e3, over[1] * 1e3))
    print("#   all-reduce: mid %.2f ms for %d gradient bytes, gtiny %.2f ms for %d" %
          (comm["mid"] * 1e3, gm, comm["gtiny"] * 1e3, gt))
    print("#   RSS - formula: mid %.1f MiB, gtiny %.1f MiB" % tuple((rss[(c, 1)] - formula[c]) / 2**20
                                                                for c in ("mid", "gtiny")))
    print("trainer_overhead_ms = %.2f" % (trainer * 1e3))
    print("allreduce_latency_ms = %.2f" % (lat * 1e3))
    print("allreduce_busbw_gbs = %.3f" % (bw / 1e9))
    print("runtime_overhead_mib = %.0f" % (ovh / 2**20))
    print("allreduce_buffer_factor = %.2f" % factor)
    print()


def print_measured(fm, prec, date, bench):
    for (c, th), v in sorted(bench.items()):
        tps = med([r["tps"] for r in v])
        loads = ", ".join("%.1f->%.1f" % r["load"] for r in v)
        print("[measured devvm-%s-%s-%dt]" % (c, prec, th))
        print("device = devvm-zen4-2c\nprecision = %s\ndate = %s" % (prec, date))
        print("program = fmtrain-bench (CPU backend with oneDNN, --clock cpu: CPU time / threads)")
        print("command = fmtrain-bench %s --threads %d --clock cpu --precision %s" % (BENCH[c], th, prec))
        shape = plan_json(fm, c, prec, 1, tables=empty_tables())["model"]
        print("arch = %s\nn_layer = %d\nn_head = %d" % (shape["arch"], shape["n_layer"], shape["n_head"]))
        if shape["arch"] == "llama":
            print("n_kv_head = %d\nffn_dim = %d\ntie_embeddings = true" % (shape["n_kv_head"], shape["ffn_dim"]))
        mb = int(re.search(r"--batch (\d+)", BENCH[c]).group(1))
        print("d_model = %d\nvocab_size = %d\nseq_len = %d\nmicro_batch = %d\nthreads = %d\nranks = 1" %
              (shape["d_model"], shape["vocab_size"], shape["seq_len"], mb, th))
        print("tokens_per_s = %.1f" % tps)
        print("note = %s; median %.4f s/step of CPU time per thread over %d run%s; load average (1 min) "
              "before->after %s on 2 cores shared with other builds" %
              (NAMES[c], med([r["s"] for r in v]), len(v), "" if len(v) == 1 else "s", loads))
        print()


_empty = None


def empty_tables():
    """The source tree's tables without the devvm calibration, so `calibrate` reads the formula only."""
    global _empty
    if _empty:
        return _empty
    import tempfile
    _empty = tempfile.mkdtemp(prefix="fm-plan-tables-")
    sites = os.path.join(SRC, "jobscripts", "sites")
    for f in os.listdir(sites):
        if f.endswith(".plan"):
            text = open(os.path.join(sites, f)).read()
            if f == "measured.plan":
                text = re.sub(r"\[measured devvm-.*?(?=\n\[|\Z)", "", text, flags=re.S)
            open(os.path.join(_empty, f), "w").write(text)
    return _empty


def compare(fm, paths):
    prec, date, bench, train = parse(paths)
    print("| model | ranks x threads | predicted step (CPU s) | measured step (CPU s per rank) | error | "
          "predicted memory per rank | measured peak RSS | error | load (1 min) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---|")
    worst = 0.0
    for c in ("gpt2", "tiny"):
        for ranks in (1, 2):
            if (c, ranks) not in train:
                continue
            j = plan_json(fm, c, prec, ranks)
            p = j["prediction"]
            if p["basis"] != "measured":
                sys.exit("%s on %d ranks: no prediction (basis %s)" % (c, ranks, p["basis"]))
            pred = p["step_s_low"]
            runs = train[(c, ranks)]
            meas = med([max(r["cpu"]) for r in runs])
            z0 = [r for r in j["memory"]["per_rank"] if r["precision"] == prec and r["zero"] == 0][0]
            pmem = z0["total"]
            mrss = med([max(r["rss_kb"]) for r in runs]) * 1024
            e1, e2 = pred / meas - 1, pmem / mrss - 1
            worst = max(worst, abs(e1), abs(e2))
            loads = ", ".join("%.1f->%.1f" % r["load"] for r in runs)
            print("| %s | %d x %d | %.4f | %.4f | %+.1f %% | %.1f MiB | %.1f MiB | %+.1f %% | %s |" %
                  (NAMES[c], ranks, 2 // ranks, pred, meas, 100 * e1, pmem / 2**20, mrss / 2**20, 100 * e2, loads))
    print("\nprecision %s, logs of %s; largest error %.1f %%" % (prec, date, 100 * worst))


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] in ("calibrate", "compare"):
        (calibrate if sys.argv[1] == "calibrate" else compare)(sys.argv[2], sys.argv[3:])
    else:
        sys.exit(__doc__)
