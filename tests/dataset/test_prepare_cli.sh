#!/usr/bin/env bash
# `fmtrain prepare` and `fmtrain inspect` end to end: text mode on the King James text (time limit,
# round trip through the stored tokenizer, determinism), tokens mode (llm.c shards, raw uint16/uint32,
# --tokenizer-from), every error case with its exit code and message, no half files after failures or
# a kill, and inspect on foreign/damaged files.
set -uo pipefail
: "${FMTRAIN_EXE:?}" "${FMTRAIN_SOURCE_DIR:?}"
PY=/usr/bin/python3
work=$(mktemp -d /tmp/fm_prepare_cli.XXXXXX)
trap 'rm -rf "$work"' EXIT
fails=0
ok() { echo "ok   $*"; }
bad() { echo "FAIL $*"; fails=$((fails + 1)); }
verdict() { if [ "$1" -eq 0 ]; then ok "$2"; else bad "$3"; fi; }

# expect CODE NEEDLE -- command...: exit code and a message fragment on stderr, and no HDF5 error stack
expect() {
  local code=$1 needle=$2
  shift 3
  "$@" >"$work/out" 2>"$work/err"
  local rc=$?
  if [ "$rc" -ne "$code" ]; then
    bad "exit $rc (wanted $code): $*"; sed 's/^/     /' "$work/err" | head -5; return
  fi
  if [ -n "$needle" ] && ! grep -qF -- "$needle" "$work/err" "$work/out"; then
    bad "message lacks '$needle': $*"; sed 's/^/     /' "$work/err" | head -5; return
  fi
  # fmtrain reports HDF5 failures as its own one-line messages, never as HDF5's raw error stack
  if grep -q "HDF5-DIAG" "$work/err"; then
    bad "HDF5's error stack printed: $*"; grep -m 3 "HDF5-DIAG" "$work/err" | sed 's/^/     /'; return
  fi
  ok "exit $code '$needle': ${*:1:4}"
}

kjv=${FMTRAIN_KJV_TEXT:-}
if [ -z "$kjv" ] || [ ! -r "$kjv" ]; then
  if command -v bible >/dev/null; then bible -f Gen1:1-Rev22:21 >"$work/kjv.txt"; kjv=$work/kjv.txt
  else
    echo "no King James text (bible-kjv); using the docs as corpus"
    cat "$FMTRAIN_SOURCE_DIR"/docs/*.md "$FMTRAIN_SOURCE_DIR"/src/*/*.c >"$work/kjv.txt"; kjv=$work/kjv.txt
  fi
fi

# ---- text mode ------------------------------------------------------------------------------------
start=$(date +%s.%N)
expect 0 "wrote" -- "$FMTRAIN_EXE" prepare --input "$kjv" --output "$work/kjv.h5" --vocab-size 4096 --val-fraction 0.02
secs=$(echo "$(date +%s.%N) - $start" | bc)
echo "     prepare of $(stat -c %s "$kjv") bytes with a 4096-token vocabulary took $secs s"
if [ "$(echo "$secs < 60" | bc)" = 1 ]; then ok "under a minute"; else bad "took $secs s"; fi
grep -q "encoding:" "$work/err"
verdict $? "progress lines (not a terminal)" "no progress lines"
expect 0 "" -- "$FMTRAIN_EXE" inspect "$work/kjv.h5"
for want in "vocab_size      4096 (uint16 tokens)" "byte-bpe" "verified" "decoded"; do
  grep -qF "$want" "$work/out"
  verdict $? "inspect shows '$want'" "inspect lacks '$want'"
done
# decoding both splits with the stored tokenizer gives back the text, minus the end-of-text marks
$PY - "$work/kjv.h5" "$kjv" <<'EOF'
import sys, h5py
f = h5py.File(sys.argv[1], "r")
off = f["tokenizer/token_offsets"][:]; raw = f["tokenizer/token_bytes"][:].tobytes()
eot = int(f.attrs["eot_id"])
text = open(sys.argv[2], "rb").read()
def dec(ids): return b"".join(raw[off[i]:off[i + 1]] for i in ids)
parts = dec([i for i in f["train/tokens"][:] if i != eot]), dec([i for i in f["val/tokens"][:] if i != eot])
# every val piece and every train piece occurs in the text, and together they have its length
assert len(parts[0]) + len(parts[1]) == len(text), (len(parts[0]), len(parts[1]), len(text))
for piece in dec(f["val/tokens"][:]).split(b"<|endoftext|>"):
    assert piece in text
frac = len(f["val/tokens"]) / (len(f["train/tokens"]) + len(f["val/tokens"]))
assert 0.015 < frac < 0.025, frac
EOF
verdict $? "stored tokenizer decodes the corpus" "decode mismatch"
# determinism: the same command gives the same tokens
"$FMTRAIN_EXE" prepare --input "$kjv" --output "$work/kjv2.h5" --vocab-size 4096 --val-fraction 0.02 --quiet
$PY - "$work/kjv.h5" "$work/kjv2.h5" <<'EOF'
import sys, h5py, numpy as np
a, b = h5py.File(sys.argv[1], "r"), h5py.File(sys.argv[2], "r")
for k in ["train/tokens", "val/tokens", "tokenizer/merges", "tokenizer/token_bytes"]:
    assert np.array_equal(a[k][:], b[k][:]), k
EOF
verdict $? "prepare is deterministic" "prepare differs between runs"
# another seed chooses other val segments
"$FMTRAIN_EXE" prepare --input "$kjv" --output "$work/kjv3.h5" --tokenizer-from "$work/kjv.h5" --val-fraction 0.02 --seed 7 --quiet
$PY - "$work/kjv.h5" "$work/kjv3.h5" <<'EOF'
import sys, h5py, numpy as np
a, b = h5py.File(sys.argv[1], "r"), h5py.File(sys.argv[2], "r")
assert np.array_equal(a["tokenizer/merges"][:], b["tokenizer/merges"][:])
assert not np.array_equal(a["val/tokens"][:200], b["val/tokens"][:200])
EOF
verdict $? "--seed moves the val segments; --tokenizer-from keeps the tokenizer" "--seed/--tokenizer-from"

# ---- text-mode errors -----------------------------------------------------------------------------
printf 'the cat sat on the mat. the dog sat on the log.\n' >"$work/small.txt"
: >"$work/empty.txt"
expect 2 "--force" -- "$FMTRAIN_EXE" prepare --input "$kjv" --output "$work/kjv.h5" --vocab-size 4096
expect 0 "wrote" -- "$FMTRAIN_EXE" prepare --input "$work/small.txt" --output "$work/kjv.h5" --vocab-size 270 --force
expect 3 "nothere.txt" -- "$FMTRAIN_EXE" prepare --input "$work/nothere.txt" --output "$work/x.h5" --vocab-size 300
expect 3 "empty" -- "$FMTRAIN_EXE" prepare --input "$work/empty.txt" --output "$work/x.h5" --vocab-size 300
expect 2 "out of range" -- "$FMTRAIN_EXE" prepare --input "$work/small.txt" --output "$work/x.h5" --vocab-size 256
expect 2 "out of range" -- "$FMTRAIN_EXE" prepare --input "$work/small.txt" --output "$work/x.h5" --vocab-size 99999999999
expect 3 "supports at most" -- "$FMTRAIN_EXE" prepare --input "$work/small.txt" --output "$work/x.h5" --vocab-size 5000
expect 1 "does not exist" -- "$FMTRAIN_EXE" prepare --input "$work/small.txt" --output "$work/no/such/dir/x.h5" --vocab-size 270
if [ "$(id -u)" != 0 ]; then
  mkdir "$work/ro" && chmod 555 "$work/ro"
  expect 1 "not writable" -- "$FMTRAIN_EXE" prepare --input "$work/small.txt" --output "$work/ro/x.h5" --vocab-size 270
fi
expect 2 "--vocab-size" -- "$FMTRAIN_EXE" prepare --input "$work/small.txt" --output "$work/x.h5"
expect 2 "not both" -- "$FMTRAIN_EXE" prepare --input "$work/small.txt" --tokens "$work/small.txt" --output "$work/x.h5" --vocab-size 300
expect 2 "val-fraction" -- "$FMTRAIN_EXE" prepare --input "$work/small.txt" --output "$work/x.h5" --vocab-size 270 --val-fraction 0.9
expect 3 "kjv.h5.notthere" -- "$FMTRAIN_EXE" prepare --input "$work/small.txt" --output "$work/x.h5" --tokenizer-from "$work/kjv.h5.notthere"
[ ! -e "$work/x.h5" ]
verdict $? "no output after failures" "an output was left after a failure"
if compgen -G "$work/*.tmp.*" >/dev/null; then bad "temporary files left: $(echo "$work"/*.tmp.*)"; else ok "no temporary files left"; fi

# a killed run leaves no file under the final name
for _ in $(seq 24); do cat "$kjv"; done >"$work/big.txt"
"$FMTRAIN_EXE" prepare --input "$work/big.txt" --output "$work/killed.h5" --vocab-size 4096 --quiet &
pid=$!
sleep 0.3
kill -9 $pid 2>/dev/null
wait $pid 2>/dev/null
[ ! -e "$work/killed.h5" ]
verdict $? "killed run: no file under the final name" "killed run left $work/killed.h5"
rm -f "$work"/killed.h5.tmp.* "$work/big.txt"

# ---- tokens mode ----------------------------------------------------------------------------------
$PY - "$work" <<'EOF'
import sys, numpy as np
d = sys.argv[1]
rng = np.random.default_rng(1)
toks = rng.integers(0, 50257, 30000).astype(np.uint16); toks[::100] = 50256
hdr = np.zeros(256, np.int32); hdr[0] = 20240520; hdr[1] = 1; hdr[2] = len(toks)
with open(f"{d}/shard_000.bin", "wb") as f: f.write(hdr.tobytes()); f.write(toks.tobytes())
with open(f"{d}/shard_trunc.bin", "wb") as f: f.write(hdr.tobytes()); f.write(toks[:-5].tobytes())
t32 = rng.integers(0, 100000, 20000).astype(np.uint32)
hdr[1] = 2; hdr[2] = len(t32)
with open(f"{d}/shard_32.bin", "wb") as f: f.write(hdr.tobytes()); f.write(t32.tobytes())
toks.tofile(f"{d}/raw16.bin")
t32.tofile(f"{d}/raw32.bin")
bad = toks.copy(); bad[1234] = 60000
bad.tofile(f"{d}/bad16.bin")
np.save(f"{d}/expect.npy", toks)
EOF
expect 0 "wrote" -- "$FMTRAIN_EXE" prepare --tokens "$work/shard_000.bin" --vocab-size 50257 --eot 50256 --output "$work/tok.h5" --val-fraction 0
$PY - "$work/tok.h5" "$work/expect.npy" <<'EOF'
import sys, h5py, numpy as np
f = h5py.File(sys.argv[1], "r")
assert np.array_equal(f["train/tokens"][:], np.load(sys.argv[2])) and len(f["val/tokens"]) == 0
assert f["train/tokens"].dtype == np.uint16
EOF
verdict $? "llm.c shard imported exactly" "llm.c shard import differs"
expect 0 "none stored" -- "$FMTRAIN_EXE" inspect "$work/tok.h5"
expect 0 "wrote" -- "$FMTRAIN_EXE" prepare --tokens "$work/raw16.bin" "$work/shard_000.bin" --vocab-size 50257 --eot 50256 --output "$work/raw.h5" --val-fraction 0.1
$PY - "$work/raw.h5" <<'EOF'
import sys, h5py
f = h5py.File(sys.argv[1], "r")
n, v = len(f["train/tokens"]), len(f["val/tokens"])
assert 0.08 < v / (n + v) < 0.12, v / (n + v)
assert 60000 <= n + v <= 60000 + 200
EOF
verdict $? "raw uint16 + shard: split 10 %, eot between pieces" "raw uint16 split"
expect 0 "uint32" -- "$FMTRAIN_EXE" prepare --tokens "$work/raw32.bin" --dtype uint32 --vocab-size 100000 --eot 0 --output "$work/raw32.h5"
expect 0 "uint32" -- "$FMTRAIN_EXE" prepare --tokens "$work/shard_32.bin" --vocab-size 100000 --eot 0 --output "$work/s32.h5"
expect 3 "token offset 1234" -- "$FMTRAIN_EXE" prepare --tokens "$work/bad16.bin" --vocab-size 50257 --eot 50256 --output "$work/x.h5"
expect 3 "truncated" -- "$FMTRAIN_EXE" prepare --tokens "$work/shard_trunc.bin" --vocab-size 50257 --eot 50256 --output "$work/x.h5"
printf 'abc' >"$work/odd.bin"
expect 3 "whole number" -- "$FMTRAIN_EXE" prepare --tokens "$work/odd.bin" --vocab-size 50257 --eot 50256 --output "$work/x.h5"
expect 3 "stores no tokenizer" -- "$FMTRAIN_EXE" prepare --input "$work/small.txt" --output "$work/x.h5" --tokenizer-from "$work/tok.h5"
expect 2 "--eot" -- "$FMTRAIN_EXE" prepare --tokens "$work/raw16.bin" --vocab-size 50257 --output "$work/x.h5"
expect 2 "out of range" -- "$FMTRAIN_EXE" prepare --tokens "$work/raw16.bin" --vocab-size 50257 --eot 50257 --output "$work/x.h5"
expect 2 "out of range" -- "$FMTRAIN_EXE" prepare --tokens "$work/raw16.bin" --vocab-size 4294967296 --eot 1 --output "$work/x.h5"
# tokens encoded with fmtrain's own tokenizer, imported with --tokenizer-from: decodable
$PY - "$work" <<'EOF'
import sys, h5py, numpy as np
d = sys.argv[1]
np.asarray(h5py.File(f"{d}/kjv2.h5", "r")["train/tokens"][:5000], np.uint16).tofile(f"{d}/own.bin")
EOF
expect 0 "" -- "$FMTRAIN_EXE" prepare --tokens "$work/own.bin" --vocab-size 4096 --eot 4095 --tokenizer-from "$work/kjv2.h5" --output "$work/own.h5" --quiet
expect 0 "In the beginning" -- "$FMTRAIN_EXE" inspect "$work/own.h5"
expect 2 "differs" -- "$FMTRAIN_EXE" prepare --tokens "$work/own.bin" --vocab-size 5000 --eot 4095 --tokenizer-from "$work/kjv2.h5" --output "$work/x.h5"

[ ! -e "$work/x.h5" ]
verdict $? "no output after the import failures" "an output was left after an import failure"

# ---- inspect on foreign and damaged files ----------------------------------------------------------
$PY - "$work" <<'EOF'
import sys, h5py, shutil
d = sys.argv[1]
h5py.File(f"{d}/foreign.h5", "w").create_dataset("x", data=[1, 2, 3])
with h5py.File(f"{d}/ckpt.h5", "w") as f: f.attrs["format"] = "fmtrain-checkpoint"
data = open(f"{d}/kjv2.h5", "rb").read()
open(f"{d}/trunc.h5", "wb").write(data[: len(data) * 2 // 3])
f = h5py.File(f"{d}/kjv2.h5", "r")
addr = f["train/tokens"].id.get_offset() if f["train/tokens"].chunks is None else f["train/tokens"].id.get_chunk_info(0).byte_offset
b = bytearray(data); b[addr + 200: addr + 400] = b"\xff" * 200
open(f"{d}/badtok.h5", "wb").write(bytes(b))
EOF
expect 3 "not an fmtrain file" -- "$FMTRAIN_EXE" inspect "$work/foreign.h5"
expect 3 "not an HDF5 file" -- "$FMTRAIN_EXE" inspect "$work/small.txt"
expect 3 "No such file" -- "$FMTRAIN_EXE" inspect "$work/nothere.h5"
expect 3 "" -- "$FMTRAIN_EXE" inspect "$work/trunc.h5"
expect 3 "not below vocab_size" -- "$FMTRAIN_EXE" inspect "$work/badtok.h5"
"$FMTRAIN_EXE" inspect "$work/ckpt.h5" >/dev/null 2>&1; rc=$?
[ "$rc" -ne 0 ]
verdict $? "inspect on a (bare) checkpoint-format file exits $rc" "inspect accepted a bare checkpoint file"
expect 2 "expected one file" -- "$FMTRAIN_EXE" inspect

if [ "$fails" -ne 0 ]; then echo "$fails check(s) failed"; exit 1; fi
echo "all checks passed"
