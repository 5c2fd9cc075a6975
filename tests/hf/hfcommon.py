"""hfcommon.py — shared by the tests/hf Python tests that compare fmtrain with transformers (test_export.py,
test_import.py, test_llama.py). Importing it skips the test (exit 77, hfenv.need's message naming what is
missing) unless numpy, torch, h5py, transformers, tokenizers and safetensors import; then it gives the
fmtrain command (`run`, `fm_greedy`), fmtrain's loss and logits through tests/hf/hf_logits (`fm_logits`),
transformers' (`hf_forward`, `load`), the list of checks (`check`, `finish`) and Llama 3's pre-split regex.
The script's own folder must be on sys.path (each script puts it there before importing this).
Needs FMTRAIN_EXE and FMTRAIN_BINARY_DIR (set by CTest)."""
import os
import shutil
import struct
import subprocess
import sys

import hfenv

hfenv.need("numpy", "torch", "h5py", "transformers", "tokenizers", "safetensors")
import h5py  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

EXE = os.environ["FMTRAIN_EXE"]
BIN = os.environ["FMTRAIN_BINARY_DIR"]
LOGITS = os.path.join(BIN, "tests", "hf", "hf_logits")
ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
           OMPI_MCA_rmaps_base_oversubscribe="1", OMPI_MCA_btl="self,vader")
transformers.logging.set_verbosity_error()
# Llama 3's pre-split rule, as its tokenizer.json writes it
LLAMA3 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
          r"\s*[\r\n]+|\s+(?!\S)|\s+")
failures = []


def run(*args, mpi=False, check=True):
    """Runs fmtrain ARGS (under `mpiexec -n 1` when mpi); with check, a non-zero exit ends the test (FAIL)."""
    cmd = (["mpiexec", "-n", "1", EXE] if mpi else [EXE]) + list(args)
    r = subprocess.run(cmd, env=ENV, capture_output=True, text=True)
    if check and r.returncode != 0:
        print(r.stdout, r.stderr)
        raise SystemExit("FAIL: %s exited %d" % (" ".join(cmd), r.returncode))
    return r


def check(ok, what):
    """Prints one check's line; a failed one is counted for `finish`, and the test goes on."""
    print(("ok    " if ok else "FAIL  ") + what)
    if not ok:
        failures.append(what)


def finish(tmp, passed):
    """Ends the test: exit 1 keeping tmp when a check failed; else removes tmp and prints `passed`."""
    if failures:
        print("%d check(s) failed; files kept in %s" % (len(failures), tmp))
        sys.exit(1)
    shutil.rmtree(tmp)
    print(passed)


def windows(path, B, T):
    """The first B windows of T+1 tokens of the validation split of dataset `path`, (B, T+1) int32."""
    with h5py.File(path, "r") as f:
        val = f["val/tokens"][:].astype(np.int32)
    assert len(val) >= B * (T + 1), len(val)
    return val[:B * (T + 1)].reshape(B, T + 1)


def fm_logits(ckpt, w, tmp):
    """fmtrain's mean loss and logits (B, T, V) float32 on windows w (B, T+1) of checkpoint ckpt."""
    B, T1 = w.shape
    wp, op = os.path.join(tmp, "w.i32"), os.path.join(tmp, "l.bin")
    w.astype("<i4").tofile(wp)
    subprocess.run([LOGITS, ckpt, wp, str(B), str(T1 - 1), op], check=True)
    raw = open(op, "rb").read()
    return struct.unpack("<d", raw[:8])[0], np.frombuffer(raw[8:], dtype="<f4").reshape(B, T1 - 1, -1)


def hf_forward(model, w):
    """transformers' mean loss and logits (B, T, V) float32 on windows w (B, T+1)."""
    x, y = torch.tensor(w[:, :-1], dtype=torch.long), torch.tensor(w[:, 1:], dtype=torch.long)
    with torch.no_grad():
        lg = model(x).logits.float()
    return float(torch.nn.functional.cross_entropy(lg.reshape(-1, lg.shape[-1]), y.reshape(-1))), lg.numpy()


def rel(a, b):
    """max |a - b| / max |b|"""
    return float(np.abs(a - b).max() / np.abs(b).max())


def load(d, **kw):
    """transformers' model of directory d (eval mode) and its loading information."""
    model, info = transformers.AutoModelForCausalLM.from_pretrained(d, output_loading_info=True, **kw)
    model.eval()
    return model, info


def fm_greedy(ckpt, prompt, tokens, eot):
    """`fmtrain sample --temperature 0` of ckpt: (exit status, the text with the end-of-text token `eot`
    written inline, as transformers' decode writes it)."""
    r = subprocess.run([EXE, "sample", "--checkpoint", ckpt, "--prompt", prompt, "--tokens", str(tokens),
                        "--temperature", "0", "--device", "cpu", "--eot-prefix", "no"], env=ENV, capture_output=True)
    return r.returncode, r.stdout.decode("utf-8", "replace").rstrip("\n").replace("\n%s\n" % eot, eot)
