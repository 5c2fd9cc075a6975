# shellcheck shell=bash
# lib.sh — shared by the training script tests (sourced). Needs FMTRAIN_EXE and FMTRAIN_BINARY_DIR.
: "${FMTRAIN_EXE:?}" "${FMTRAIN_BINARY_DIR:?}"
PY=/usr/bin/python3
# shellcheck disable=SC2034 # used by the scripts that source this file
MAKE_DATASET="$FMTRAIN_BINARY_DIR/tests/train/train_make_dataset"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
# Keep Open MPI quiet and local on CI containers.
export OMPI_MCA_btl=self,vader OMPI_MCA_btl_vader_single_copy_mechanism=none
unset SLURM_JOB_ID SLURM_JOB_END_TIME FMTRAIN_END_TIME OMP_NUM_THREADS

# tmpfs_mount DIR SIZE : mounts a tmpfs of SIZE (e.g. 6m) at DIR, creating DIR: the small file system
# the disk-full tests fill. Fails where mounting is not permitted (not root, or no CAP_SYS_ADMIN).
# tmpfs_mount_or_skip DIR SIZE : tmpfs_mount, or the test is skipped (exit 77) saying why.
# tmpfs_cleanup : unmounts every DIR tmpfs_mount mounted (lazily when still busy); for the EXIT trap.
FM_TMPFS_MOUNTS=()
tmpfs_mount() {
  mkdir -p "$1"
  mount -t tmpfs -o size="$2" tmpfs "$1" 2>/dev/null || return 1
  FM_TMPFS_MOUNTS+=("$1")
}
tmpfs_mount_or_skip() {
  tmpfs_mount "$1" "$2" && return 0
  echo "SKIP: cannot mount a tmpfs here (not root, or no CAP_SYS_ADMIN): no small file system to fill"
  exit 77
}
tmpfs_cleanup() {
  local m
  for m in "${FM_TMPFS_MOUNTS[@]}"; do umount "$m" 2>/dev/null || umount -l "$m" || true; done
  FM_TMPFS_MOUNTS=()
}

# mpirun_n N ARGS... : runs fmtrain under mpiexec with N ranks.
mpirun_n() {
  local n=$1
  shift
  mpiexec -n "$n" --oversubscribe "$FMTRAIN_EXE" "$@"
}

# write_ini PATH DATA RUN_DIR [section.key=value ...] : a tiny model for the stride task. fp32: the
# tolerances these tests state (rank counts, resumes, eval == logged) are fp32 rounding; bf16 runs
# have their own test (test_bf16.sh).
write_ini() {
  local path=$1 data=$2 run=$3
  shift 3
  cat >"$path" <<INI
[run]
dir = $run
seed = 7
stop_margin_minutes = 0

[model]
n_layer = 2
n_head = 2
d_model = 64
seq_len = 32

[data]
train = $data

[train]
micro_batch = 8
grad_accum = 1
steps = 50
lr = 3e-3
min_lr = 3e-4
warmup_steps = 10
schedule = cosine
weight_decay = 0.0
clip_grad = 1.0
eval_every = 0
eval_batches = 2

[checkpoint]
every_steps = 0
every_minutes = 0
resume = never

[runtime]
device = cpu
precision = fp32
threads = 1
bind = none
log_every = 10
INI
}

# placement_ranks FILE : the rank column of the placement table in a start banner (the rows under the
# "rank  host  bind ..." header, "# "-prefixed in a dry run), space-separated: "0 1 ".
placement_ranks() {
  awk '/^(# )?rank +host +bind +cpuset/ { t = 1; next }
       t && /^(# )? +[0-9]+ / { sub(/^# /, ""); printf "%s ", $1; next }
       t { exit }' "$1"
}

# jsonl_check RUN_DIR : every line of metrics.jsonl is a JSON object with the documented fields.
jsonl_check() {
  "$PY" - "$1/metrics.jsonl" <<'PYEOF'
import json, sys
train_keys = {"step", "loss", "lr", "grad_norm", "tokens_per_s", "mfu", "elapsed_s", "tokens"}
n_train = n_eval = 0
with open(sys.argv[1]) as f:
    for i, line in enumerate(f, 1):
        rec = json.loads(line)
        assert isinstance(rec, dict), f"line {i} is not an object"
        if rec["type"] == "train":
            missing = train_keys - rec.keys()
            assert not missing, f"line {i} lacks {missing}"
            assert isinstance(rec["step"], int) and rec["step"] >= 1
            n_train += 1
        elif rec["type"] == "eval":
            assert {"step", "val_loss"} <= rec.keys(), f"line {i} lacks step/val_loss"
            n_eval += 1
        elif rec["type"] == "checkpoint":
            assert {"step", "file", "write_s", "checkpoint_stall_s"} <= rec.keys(), f"line {i} lacks checkpoint fields"
        else:
            raise AssertionError(f"line {i}: unknown type {rec['type']}")
print(f"metrics.jsonl: {n_train} train and {n_eval} eval records, all valid JSON")
PYEOF
}
