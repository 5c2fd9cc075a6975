#!/usr/bin/env bash
# test_run_dir.sh — the batch scripts find the run directory exactly where fmtrain puts it.
# jobscripts/generic/fmtrain-job.sh reads [run] dir / name from the parameter file and FM_SETS with
# awk (to look for COMPLETE and STOP before starting fmtrain); fmtrain's own rule is in src/config/config.c.
# For several parameter files (quoted values, comments, no name, odd file names, --set overrides)
# this compares fm_job_find_run_dir with the effective name/dir that `fmtrain train --dry-run` prints.
set -uo pipefail
: "${FMTRAIN_EXE:?}" "${FMTRAIN_SOURCE_DIR:?}" "${FMTRAIN_BINARY_DIR:?}"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
unset SLURM_SUBMIT_DIR FM_RUN_DIR
# shellcheck source=../../jobscripts/generic/fmtrain-job.sh
. "$FMTRAIN_SOURCE_DIR/jobscripts/generic/fmtrain-job.sh"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work" || exit 1
"$FMTRAIN_BINARY_DIR/tests/train/train_make_dataset" "$work/d.h5" repeat 32 256 16 1 >/dev/null ||
  { echo "FAIL: making the dataset"; exit 1; }
base="[model]
n_layer = 1
n_head = 1
d_model = 16
seq_len = 32
[data]
train = $work/d.h5
[train]
steps = 1"
fail=0

# check FILE [--set ...]: compares the two answers
check() {
  local file=$1 out name dir expect
  shift
  FM_PARAMS=$file
  FM_SETS=("$@")
  FM_RUN_DIR=""
  out=$("$FMTRAIN_EXE" train "$file" "$@" --dry-run 2>&1) || { echo "$out"; echo "FAIL: dry run of $file"; fail=1; return; }
  name=$(printf '%s\n' "$out" | sed -n 's/^name = \(.*\)$/\1/p' | sed 's/  # default:.*$//; s/^"\(.*\)"$/\1/')
  dir=$(printf '%s\n' "$out" | sed -n 's/^dir = \(.*\)$/\1/p' | sed 's/  # default:.*$//; s/^"\(.*\)"$/\1/')
  if [ -n "$dir" ]; then
    case "$dir" in /*) expect=$dir ;; *) expect="$PWD/$dir" ;; esac
  else
    expect="$PWD/runs/$name"
  fi
  fm_job_find_run_dir
  if [ "$FM_RUN_DIR" = "$expect" ]; then
    echo "ok:   $(basename "$file") $*: $FM_RUN_DIR"
  else
    echo "FAIL: $(basename "$file") $*: the job scripts say $FM_RUN_DIR, fmtrain says $expect"
    fail=1
  fi
}

printf '[run]\nname = "quoted"   # a comment\n%s\n' "$base" >"$work/a.ini"
check "$work/a.ini"
printf '%s\n' "$base" >"$work/odd name+v2.ini"
check "$work/odd name+v2.ini"
printf '[run]\nname = n1\ndir = rel/dir ; comment\n%s\n' "$base" >"$work/b.ini"
check "$work/b.ini"
printf '[run]\ndir = "%s/with space"\n%s\n' "$work" "$base" >"$work/c.ini"
check "$work/c.ini"
check "$work/a.ini" --set run.dir="$work/from-set"
check "$work/b.ini" --set=run.name=other --set run.dir=
check "$work/odd name+v2.ini" --set run.name=named
exit $fail
