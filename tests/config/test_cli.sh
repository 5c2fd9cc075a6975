#!/usr/bin/env bash
# The command line: help, --version, unknown commands and options, exit codes, and configuration
# errors reported with file:line and a suggestion.
set -uo pipefail
: "${FMTRAIN_EXE:?}" "${FMTRAIN_SOURCE_DIR:?}"
# In the sanitizer build: full stack unwinding on malloc, so that the LeakSanitizer suppressions for
# MPI's own allocations (tests/lsan.supp) match; the fast unwinder stops inside the MPI libraries.
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}fast_unwind_on_malloc=0"
exe=$FMTRAIN_EXE
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0
fail() { echo "FAIL: $*" >&2; fails=$((fails + 1)); }

# run EXPECTED_CODE ARGS... : runs fmtrain, stdout -> $tmp/out, stderr -> $tmp/err, checks the code.
run() {
  local want=$1
  shift
  "$exe" "$@" >"$tmp/out" 2>"$tmp/err"
  local got=$?
  if [ "$got" -ne "$want" ]; then
    fail "fmtrain $* exited $got, expected $want; stderr:"
    sed 's/^/    /' "$tmp/err" >&2
  fi
}
# has FILE FIXED_STRING : the file contains the string
has() { grep -qF -- "$2" "$tmp/$1" || fail "$1 of the last command lacks: $2 (got: $(head -c 600 "$tmp/$1"))"; }

# ---- --version prints the real build configuration ----
run 0 --version
has out "fmtrain "
grep -qE '^  MPI: +(Open MPI|MPICH|Intel\(R\) MPI|.*MPI).*[0-9]+\.[0-9]+.*\(standard [0-9]\.[0-9]\)' "$tmp/out" ||
  fail "--version: no MPI library line with a version"
grep -qE '^  HDF5: +[0-9]+\.[0-9]+\.[0-9]+, parallel$' "$tmp/out" || fail "--version: HDF5 line is not 'X.Y.Z, parallel'"
grep -qE '^  hwloc: +[0-9]+\.[0-9]+\.[0-9]+' "$tmp/out" || fail "--version: no hwloc version"
grep -qE '^  BLAS: +[^ ?].+' "$tmp/out" || fail "--version: no BLAS line"
grep -qE '^  OpenMP: +[0-9]\.[0-9] \([0-9]{6}\)' "$tmp/out" || fail "--version: no OpenMP version"
grep -qE '^  CUDA: +(on \(architectures [^,]+, CUDA [0-9]+\.[0-9]+[^)]*\)|off)$' "$tmp/out" ||
  fail "--version: the CUDA line is neither 'on (architectures ..., CUDA X.Y)' nor 'off'"
# The versions are the real ones: compare with what the system reports where it can tell.
if command -v h5pcc >/dev/null 2>&1; then
  hv=$(h5pcc -showconfig 2>/dev/null | sed -n 's/^ *HDF5 Version: *//p' | head -n 1)
  [ -n "$hv" ] && { grep -qE "^  HDF5: +$hv," "$tmp/out" || fail "--version: HDF5 is not $hv (h5pcc -showconfig)"; }
fi
if command -v mpirun >/dev/null 2>&1; then
  mv=$(mpirun --version 2>/dev/null | grep -oE '[0-9]+\.[0-9]+\.[0-9]+' | head -n 1)
  [ -n "$mv" ] && { grep -E '^  MPI:' "$tmp/out" | grep -qF "$mv" || fail "--version: MPI line lacks $mv (mpirun --version)"; }
fi
if pkg-config --exists hwloc 2>/dev/null; then
  hw=$(pkg-config --modversion hwloc | cut -d. -f1)
  grep -qE "^  hwloc: +$hw\." "$tmp/out" || fail "--version: hwloc major is not $hw (pkg-config)"
fi
cp "$tmp/out" "$tmp/version.txt"

# ---- help ----
run 0 help
has out "Usage: fmtrain COMMAND"
grep -qE '^  train +train a model' "$tmp/out" || fail "help: no line for the train command"
has out "Exit codes:"
cp "$tmp/out" "$tmp/help.txt"
run 0 --help
cmp -s "$tmp/out" "$tmp/help.txt" || fail "fmtrain --help differs from fmtrain help"
run 0 help train
has out "Usage: fmtrain train PARAMS.ini"
has out "--set section.key=value"
has out "--dry-run"
has out "Exit codes:"
run 0 train --help
has out "Usage: fmtrain train PARAMS.ini"
run 2 help nosuchcommand
has err "no command 'nosuchcommand'; commands are listed by 'fmtrain help'"
run 2 help trian
has err "no command 'trian' (did you mean 'train'?)"
run 2
has err "Usage: fmtrain COMMAND"

# Every exit code in `fmtrain help` is in docs/cli.md's table, and the other way round.
codes_help=$(sed -n '/^Exit codes:/,/^$/p' "$tmp/help.txt" | grep -oE '^  [0-9]+' | tr -d ' ' | sort -n | tr '\n' ' ')
codes_doc=$(grep -oE '^\| *[0-9]+ *\|' "$FMTRAIN_SOURCE_DIR/docs/cli.md" | tr -d '| ' | sort -n | tr '\n' ' ')
[ -n "$codes_help" ] || fail "no exit codes found in fmtrain help"
[ "$codes_help" = "$codes_doc" ] || fail "exit codes in fmtrain help ($codes_help) differ from docs/cli.md ($codes_doc)"
# ... and they are the FM_EXIT_* values of src/core/status.h.
codes_src=$(grep -oE 'FM_EXIT_[A-Z]+ = [0-9]+' "$FMTRAIN_SOURCE_DIR/src/core/status.h" | grep -oE '[0-9]+$' | sort -n | tr '\n' ' ')
[ "$codes_help" = "$codes_src" ] || fail "exit codes in fmtrain help ($codes_help) differ from src/core/status.h ($codes_src)"
# Every command in the table is documented in docs/cli.md.
while read -r c; do
  grep -q "fmtrain $c" "$FMTRAIN_SOURCE_DIR/docs/cli.md" || fail "command '$c' is not described in docs/cli.md"
done < <(sed -n '/^Commands:/,/^$/p' "$tmp/help.txt" | awk 'NR>1 && NF {print $1}')

# ---- unknown commands and options ----
run 2 trian
has err "unknown command 'trian' (did you mean 'train'?)"
run 2 zzzzzzzz
has err "unknown command 'zzzzzzzz'"

# ---- train: parameter-file errors (exit 2, file:line, suggestion) ----
# A small dataset, since the dry run checks the data too.
for i in $(seq 1 200); do echo "A small test text, line $i, for the command-line tests."; done >"$tmp/text.txt"
run 0 prepare --input "$tmp/text.txt" --output "$tmp/data.h5" --vocab-size 300 --quiet
cat >"$tmp/good.ini" <<INI
[model]
n_layer = 2
n_head = 2
d_model = 32
seq_len = 16
[data]
train = $tmp/data.h5
[train]
steps = 10
micro_batch = 2
INI
cat >"$tmp/bad.ini" <<'INI'
[train]
lr = 1e-3
warmup_step = 10
INI
run 2 train "$tmp/bad.ini" --dry-run
has err "error: $tmp/bad.ini:3: unknown key \`train.warmup_step\` (did you mean \`train.warmup_steps\`?)"
# (every other error class, with its exact message, is in the unit test tests/config/test_config.c)
run 2 train "$tmp/nonexistent.ini" --dry-run
has err "$tmp/nonexistent.ini"
run 2 train --dry-run
has err "expected one parameter file"
run 2 train "$tmp/good.ini" --dryrun
has err "dry-run"
# missing required keys are named
printf '[model]\nn_layer = 2\n' >"$tmp/partial.ini"
run 2 train "$tmp/partial.ini" --dry-run
has err "missing required key \`data.train\`"
has err "missing required key \`model.n_head\`"
# cross-key rule
run 2 train "$tmp/good.ini" --dry-run --set model.d_model=33
has err "model.d_model = 33 is not a multiple of model.n_head = 2"

# ---- --set ----
run 2 train "$tmp/good.ini" --dry-run --set train.warmup_step=3
has err "--set train.warmup_step: unknown key \`train.warmup_step\` (did you mean \`train.warmup_steps\`?)"
run 2 train "$tmp/good.ini" --dry-run --set train.lr=fast
has err "--set train.lr=fast: not a number; expected a real number in (0, 10]"
run 0 train "$tmp/good.ini" --dry-run --set train.lr=1e-3 --set runtime.device=cpu
has out "lr = 0.001  # default: 0.0006"
has out "device = cpu  # default: auto"
has out "name = good"
has out "# dry run: configuration is valid"
# (that the printed configuration loads again to the same one is checked by config_inputs_dry_run)
# a dataset that does not exist is an input error (exit 3) that names it
run 3 train "$tmp/good.ini" --dry-run --set "data.train=$tmp/missing.h5"
has err "$tmp/missing.h5"

# ---- under MPI: a configuration error is reported once, every rank exits 2 ----
if command -v mpiexec >/dev/null 2>&1; then
  mpiexec -n 2 --oversubscribe "$exe" train "$tmp/bad.ini" --dry-run >"$tmp/out" 2>"$tmp/err"
  code=$?
  [ "$code" -eq 2 ] || fail "mpiexec -n 2 fmtrain train bad.ini exited $code, expected 2: $(cat "$tmp/err")"
  n=$(grep -c "unknown key \`train.warmup_step\`" "$tmp/err")
  [ "$n" -eq 1 ] || fail "under 2 ranks the config error was printed $n times, expected once"
  mpiexec -n 2 --oversubscribe "$exe" train "$tmp/good.ini" --dry-run >"$tmp/out" 2>"$tmp/err"
  code=$?
  [ "$code" -eq 0 ] || fail "mpiexec -n 2 fmtrain train good.ini --dry-run exited $code: $(cat "$tmp/err")"
  n=$(grep -c "^# dry run: configuration is valid" "$tmp/out")
  [ "$n" -eq 1 ] || fail "under 2 ranks the effective configuration was printed $n times, expected once"
fi

if [ "$fails" -ne 0 ]; then
  echo "$fails check(s) failed" >&2
  exit 1
fi
echo "ok: all command-line checks passed"
