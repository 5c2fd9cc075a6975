#!/usr/bin/env bash
# test_jobs.sh — the batch scripts on a real (one-node, localhost) Slurm cluster.
#
#  1. Requeue: jobscripts/generic/cpu.sbatch runs a tiny 2-rank training (Open MPI; the cluster's
#     MpiDefault is none and the script chooses srun --mpi=pmix itself)
#     with --time=1 and --signal=B:USR1@58, so Slurm signals the batch shell while training runs. The
#     script forwards SIGUSR1 to the job step, fmtrain checkpoints and exits 75, the script requeues
#     the job (scontrol requeue), the requeued job resumes from the checkpoint and finishes. Checked:
#     the signal was received and forwarded, exit 75 then a requeue (Restarts >= 1), the COMPLETE
#     marker, and final parameters bitwise equal to an uninterrupted run (mpiexec, same ranks).
#  2. Chain: jobscripts/chain.sh -n 2 submits two jobs; the first is stopped with
#     `scancel --batch --signal=USR1` while it trains (exit 75, no requeue inside a chain), the
#     second (afterany) resumes and finishes: same final parameters again.
#  3. Chain stop conditions: with the stop file present the first job does not train and cancels
#     the second; with a configuration error (exit 2) the first job cancels the second.
#  4. A site script (sites/lumi-c.sbatch, sizes overridden) loads the installed fmtrain modulefile
#     with Lmod inside the job and trains to COMPLETE with the same final parameters.
#  5. A user's `scancel JOBID` stops the job for good (issue 13): fmtrain gets SIGTERM, writes a
#     checkpoint and exits 75, and the script, seeing from Slurm that the job was cancelled (not
#     preempted, not at its time limit), does not requeue it (before the fix it requeued itself and the
#     user had to cancel again). The time from scancel to the job's end is printed.
#  6. Preemption still requeues: a job in partition "low" is preempted by one in "high" (SIGTERM to
#     the steps only, PreemptTime set); fmtrain checkpoints and exits 75, the script requeues, and
#     the run resumes after the preemptor and ends with the reference's parameters. The time from the
#     preemptor's submission to fmtrain's exit is printed.
#
# Slurm checks time limits (and sends --signal warnings) only every 30 s, so the time-limit signal of
# part 1 arrives at one of those checks. The test reads when they happen from slurmctld's log (debug2)
# and submits the training job so that the next check falls about a third into its training; the
# run itself lasts seconds. Takes about two minutes, most of it waiting for Slurm. Skips (77) when Slurm or munge cannot run here (tests/slurm/cluster.sh). Needs
# /usr/bin/python3 with h5py to compare checkpoints.
set -uo pipefail
: "${FMTRAIN_EXE:?}" "${FMTRAIN_SOURCE_DIR:?}" "${FMTRAIN_BINARY_DIR:?}"
src=$FMTRAIN_SOURCE_DIR
PY=/usr/bin/python3
MAKE_DATASET="$FMTRAIN_BINARY_DIR/tests/train/train_make_dataset"

# Nothing from an outer Slurm job may leak into the private cluster's jobs.
while IFS='=' read -r name _; do
  case "$name" in SLURM_*|SBATCH_*|SRUN_*|SALLOC_*) unset "$name" ;; esac
done < <(env)
unset FMTRAIN_JOBSCRIPTS FMTRAIN_END_TIME OMP_NUM_THREADS
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
export OMPI_MCA_btl=self,vader OMPI_MCA_btl_vader_single_copy_mechanism=none
export FMTRAIN_EXE

# shellcheck source=cluster.sh
. "$(dirname "$0")/cluster.sh"
work=$(mktemp -d /tmp/fmtrain-slurm.XXXXXX)
keep=0
cleanup() {
  fm_cluster_stop
  if [ "$keep" = 1 ]; then echo "files kept in $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
fail() {
  echo "FAIL: $*"
  for f in "$work"/*.out "$work"/run*/jobs.log; do
    [ -f "$f" ] && { echo "----- $f"; cat "$f"; }
  done
  fm_cluster_logs
  keep=1
  exit 1
}
ok() { echo "ok: $*"; }

fm_cluster_start "$work/cluster"
rc=$?
[ "$rc" -eq 0 ] || exit "$rc"
# The cluster keeps Slurm's default MpiDefault=none, as many sites do: the job scripts must choose
# srun's MPI plugin themselves (fmtrain-job.sh: pmix for Open MPI). Only this test's own srun of the
# reference run names it.
unset SLURM_MPI_TYPE
srun --mpi=list 2>&1 | grep -q pmix || { echo "SKIP: this Slurm has no pmix plugin (srun --mpi=list)"; exit 77; }
ok "one-node cluster up: $(sinfo -h -o '%P %D %C %T' | head -n 1)"

# ---- data and parameter file --------------------------------------------------------------------
[ -x "$MAKE_DATASET" ] || fail "missing $MAKE_DATASET (built with the tests)"
"$MAKE_DATASET" "$work/data.h5" repeat 64 4096 64 5 >/dev/null || fail "making the dataset"
steps=${FM_SLURM_TEST_STEPS:-120}
write_params() { # PATH RUN_DIR
  cat >"$1" <<INI
[run]
dir = $2
seed = 11
stop_margin_minutes = 0

[model]
n_layer = 2
n_head = 4
d_model = 128
seq_len = 64

[data]
train = $work/data.h5

[train]
micro_batch = 8
grad_accum = 1
steps = $steps
lr = 1e-3
min_lr = 1e-4
warmup_steps = 10
schedule = cosine
eval_every = 0

[checkpoint]
every_steps = 0
every_minutes = 0
keep_last = 2
resume = auto

[runtime]
device = cpu
threads = 1
log_every = 1
INI
}

# final_checkpoint RUN_DIR: the path of the newest complete checkpoint
final_checkpoint() {
  local name
  name=$(cat "$1/checkpoints/latest" 2>/dev/null) || return 1
  echo "$1/checkpoints/$name"
}

# same_params A.h5 B.h5: every parameter and optimizer-moment dataset is bitwise identical
same_params() {
  "$PY" - "$1" "$2" <<'PYEOF'
import sys, h5py, numpy as np
a, b = h5py.File(sys.argv[1], "r"), h5py.File(sys.argv[2], "r")
names = []
def collect(name, obj):
    if isinstance(obj, h5py.Dataset) and name.split("/")[0] in ("params", "adam_m", "adam_v"):
        names.append(name)
a.visititems(collect)
assert any(n.startswith("params/") for n in names), f"no params/ datasets in {sys.argv[1]}"
bad = [n for n in names if n not in b or not np.array_equal(a[n][()], b[n][()])]
assert not bad, f"{len(bad)} of {len(names)} datasets differ, e.g. {bad[:3]}"
print(f"{len(names)} parameter/optimizer datasets bitwise identical")
PYEOF
}

# wait_job ID SECONDS: until the job has left the queue (completed, failed, cancelled)
wait_job() {
  local i
  for ((i = 0; i < $2 * 5; i++)); do
    [ -z "$(squeue -h -j "$1" -o %T 2>/dev/null)" ] && return 0
    sleep 0.2
  done
  return 1
}
job_field() { scontrol -o show job "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"; }

# ---- reference: an uninterrupted run, launched like the jobs' step (srun, 2 ranks x 1 core) -------
# Its timing (start-up until the first step, then the training) decides when part 1 is submitted.
export OMP_NUM_THREADS=1 OMP_PROC_BIND=false OPENBLAS_NUM_THREADS=1 # as generic/fmtrain-job.sh
write_params "$work/ref.ini" "$work/run-ref"
t0=$(date +%s.%N)
(cd "$work" && srun -p debug -N 1 -n 2 -c 1 --cpu-bind=cores --mpi=pmix "$FMTRAIN_EXE" train "$work/ref.ini" \
  >"$work/ref.out" 2>&1) &
ref_pid=$!
t_first=""
while kill -0 "$ref_pid" 2>/dev/null; do
  if [ -z "$t_first" ] && [ -f "$work/run-ref/metrics.jsonl" ] &&
     grep -q '"type":"train"' "$work/run-ref/metrics.jsonl"; then
    t_first=$(date +%s.%N)
  fi
  sleep 0.05
done
wait "$ref_pid"
rc=$?
t1=$(date +%s.%N)
unset OMP_NUM_THREADS OMP_PROC_BIND OPENBLAS_NUM_THREADS
[ "$rc" -eq 0 ] || { cat "$work/ref.out"; fail "the uninterrupted reference run exited $rc"; }
[ -e "$work/run-ref/COMPLETE" ] || fail "the reference run wrote no COMPLETE"
ref_ckpt=$(final_checkpoint "$work/run-ref") || fail "the reference run has no checkpoints/latest"
[ -n "$t_first" ] || t_first=$t0
t_start=$(awk -v a="$t0" -v b="$t_first" 'BEGIN { printf "%.2f", b - a }')
t_train=$(awk -v a="$t_first" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
ok "reference run (srun -n 2): start-up ${t_start} s, $steps steps in ${t_train} s"

# ---- 1. time limit -> USR1 -> checkpoint -> exit 75 -> requeue -> resume -> finish ----------------
# slurmctld checks time limits (and sends --signal warnings) every 30 s and logs each check at
# debug2: submit so that the next check comes about a third into the job's training. Up to two
# retries, aimed earlier when a job finished before the check (it ran faster than the reference) or
# later when the signal came while fmtrain was still starting.
scontrol setdebug debug2 || fail "scontrol setdebug debug2"
last_tick() { # epoch seconds of the newest time-limit check in the controller's log
  local ts
  ts=$(grep "Testing job time limits" "$work/cluster/log/slurmctld.log" | tail -n 1 | sed 's/^\[\([^]]*\)\].*/\1/')
  [ -n "$ts" ] && date -d "$ts" +%s.%N
}
for ((i = 0; i < 350; i++)); do last_tick >/dev/null && break; sleep 0.1; done
[ "$i" -lt 350 ] || fail "no time-limit check in slurmctld.log within 35 s"
frac=0.35
for attempt in 1 2 3; do
  run1="$work/run1-$attempt"
  write_params "$work/p1-$attempt.ini" "$run1"
  lead=$(awk -v s="$t_start" -v t="$t_train" -v f="$frac" \
    'BEGIN { l = 0.4 + s + f * t; if (l < 2.5) l = 2.5; printf "%.2f", l }')
  tick=$(last_tick)
  now=$(date +%s.%N)
  delay=$(awk -v tick="$tick" -v now="$now" -v lead="$lead" \
    'BEGIN { n = tick; while (n - lead - now < 0.3) n += 30; printf "%.2f", n - lead - now }')
  sleep "$delay"
  job=$(cd "$work" && FM_PARAMS="$work/p1-$attempt.ini" sbatch --parsable -p debug --account=fmtest \
    -N 1 --ntasks-per-node=2 --cpus-per-task=1 --time=1 --signal=B:USR1@58 \
    --output="$work/requeue-%j.out" "$src/jobscripts/generic/cpu.sbatch") || fail "sbatch cpu.sbatch"
  ok "attempt $attempt: job $job submitted ${lead} s before Slurm's next time-limit check"
  wait_job "$job" 240 || fail "job $job still in the queue after 240 s"
  out="$work/requeue-$job.out"
  if [ "$attempt" -lt 3 ] && ! grep -q "fmtrain exited with code 75" "$out"; then
    if grep -q "received SIGUSR1" "$out"; then
      # the signal came while fmtrain was still starting (slower than the reference): aim later
      echo "note: job $job got SIGUSR1 before training began; retrying with a later submission"
      t_start=$(awk -v s="$t_start" 'BEGIN { printf "%.2f", s + 1.5 }')
      frac=0.3
    else
      # the job trained faster than the reference and finished before the check: aim earlier
      echo "note: job $job finished before the time-limit check; retrying with an earlier submission"
      t_train=$(awk -v t="$t_train" 'BEGIN { printf "%.2f", t / 2 }')
      frac=0.25
    fi
    continue
  fi
  break
done
state=$(job_field "$job" JobState)
restarts=$(job_field "$job" Restarts)
[ "$state" = COMPLETED ] || fail "job $job ended in state $state"
grep -q "launcher: --mpi=pmix (fmtrain uses Open MPI; the cluster's MpiDefault is none" "$out" ||
  fail "the job script did not choose srun --mpi=pmix for Open MPI by itself"
grep -q "received SIGUSR1: forwarding it to the job step" "$out" || fail "the batch shell did not forward SIGUSR1"
grep -q "fmtrain exited with code 75" "$out" || fail "fmtrain did not exit 75 after the signal"
grep -q "requeuing job $job" "$out" || fail "the script did not requeue the job"
[ "${restarts:-0}" -ge 1 ] || fail "Slurm reports Restarts=$restarts"
grep -q "exit=75 requeue" "$run1/jobs.log" || fail "jobs.log has no 'exit=75 requeue' line"
grep -q "exit=0 complete" "$run1/jobs.log" || fail "jobs.log has no 'exit=0 complete' line"
[ -e "$run1/COMPLETE" ] || fail "no COMPLETE marker in $run1"
# The requeued segment must continue from the checkpoint, not train again from step 1.
first=$(awk '/fmtrain-job: job [0-9]+ \(restart 1\)/ { seg = 1 } seg && /^step +[0-9]+\// {
  split($2, a, "/"); print a[1]; exit }' "$out")
[ -n "$first" ] || fail "no training step logged after the requeue"
[ "$first" -gt 1 ] || fail "the requeued job started again at step $first instead of resuming"
ok "job $job: SIGUSR1 forwarded, exit 75, requeued $restarts time(s), resumed at step $first, COMPLETE"
sed 's/^/    /' "$run1/jobs.log"
ckpt1=$(final_checkpoint "$run1") || fail "$run1 has no checkpoints/latest"
same_params "$ref_ckpt" "$ckpt1" || fail "the requeued run's final parameters differ from the reference"
ok "requeued run: final parameters equal the uninterrupted run's"

# ---- 2. chain.sh: two jobs, the first stopped by the user with a checkpoint ------------------------
write_params "$work/p2.ini" "$work/run2"
chain_out=$(cd "$work" && FM_PARAMS="$work/p2.ini" "$src/jobscripts/chain.sh" -n 2 \
  "$src/jobscripts/generic/cpu.sbatch" -p debug --account=fmtest -N 1 --ntasks-per-node=2 \
  --cpus-per-task=1 --time=5 --signal=B:USR1@10 --output="$work/chain-%j.out" 2>&1) ||
  { echo "$chain_out"; fail "chain.sh"; }
while IFS= read -r line; do echo "    $line"; done <<<"$chain_out"
mapfile -t cj < <(echo "$chain_out" | sed -n 's/^chain.sh: job [0-9]* of 2: \([0-9]*\).*/\1/p')
[ ${#cj[@]} -eq 2 ] || fail "chain.sh did not report two job ids"
[ "$(job_field "${cj[1]}" Dependency)" = "afterany:${cj[0]}(unfulfilled)" ] ||
  fail "job ${cj[1]} does not depend on ${cj[0]} with afterany: $(job_field "${cj[1]}" Dependency)"
for ((i = 0; i < 300; i++)); do # until the first job has trained a few steps
  [ -f "$work/run2/metrics.jsonl" ] && [ "$(grep -c '"type":"train"' "$work/run2/metrics.jsonl")" -ge 5 ] && break
  sleep 0.2
done
[ "$i" -lt 300 ] || fail "the first chain job did not start training within 60 s"
scancel --batch --signal=USR1 "${cj[0]}" || fail "scancel --batch --signal=USR1 ${cj[0]}"
wait_job "${cj[0]}" 120 || fail "chain job ${cj[0]} did not end"
wait_job "${cj[1]}" 180 || fail "chain job ${cj[1]} did not end"
grep -q "exit=75 stopped, chain continues" "$work/run2/jobs.log" || fail "the first chain job did not stop with 75"
grep -q "job=${cj[1]} restart=0 exit=0 complete" "$work/run2/jobs.log" || fail "the second chain job did not complete the run"
[ "$(job_field "${cj[0]}" Restarts)" = 0 ] || fail "the first chain job was requeued inside a chain"
[ -e "$work/run2/COMPLETE" ] || fail "no COMPLETE marker in run2"
sed 's/^/    /' "$work/run2/jobs.log"
same_params "$ref_ckpt" "$(final_checkpoint "$work/run2")" ||
  fail "the chained run's final parameters differ from the reference"
first=$(awk '/^step +[0-9]+\// { split($2, a, "/"); print a[1]; exit }' "$work/chain-${cj[1]}.out")
[ -n "$first" ] || fail "the second chain job logged no training step"
[ "$first" -gt 1 ] || fail "the second chain job started again at step $first instead of resuming"
ok "chain of 2: stopped with USR1 (exit 75), continued by the next job from step $first, same final parameters"

# ---- 3. chain stop conditions: stop file; a configuration error ------------------------------------
write_params "$work/p3.ini" "$work/run3"
mkdir -p "$work/run3" && touch "$work/run3/STOP"
chain_out=$(cd "$work" && FM_PARAMS="$work/p3.ini" "$src/jobscripts/chain.sh" -n 2 \
  "$src/jobscripts/generic/cpu.sbatch" -p debug -N 1 --ntasks-per-node=2 --cpus-per-task=1 \
  --time=5 --signal=B:USR1@10 --output="$work/stop-%j.out" 2>&1) || { echo "$chain_out"; fail "chain.sh (stop file)"; }
mapfile -t sj < <(echo "$chain_out" | sed -n 's/^chain.sh: job [0-9]* of 2: \([0-9]*\).*/\1/p')
wait_job "${sj[0]}" 60 || fail "stop-file chain: job ${sj[0]} did not end"
wait_job "${sj[1]}" 60 || fail "stop-file chain: job ${sj[1]} did not end"
grep -q "stop file .* exists: not starting" "$work/stop-${sj[0]}.out" || fail "the stop file was not honoured"
[ "$(job_field "${sj[1]}" JobState)" = CANCELLED ] || fail "job ${sj[1]} after the stop file: $(job_field "${sj[1]}" JobState)"
[ ! -e "$work/run3/checkpoints" ] || fail "a job trained although the stop file existed"
ok "stop file: the first job did not train and cancelled the rest of the chain"

printf '[run]\ndir = %s\n[model]\nn_layer = two\n' "$work/run4" >"$work/p4.ini"
chain_out=$(cd "$work" && FM_PARAMS="$work/p4.ini" "$src/jobscripts/chain.sh" -n 2 \
  "$src/jobscripts/generic/cpu.sbatch" -p debug -N 1 --ntasks-per-node=2 --cpus-per-task=1 \
  --time=5 --signal=B:USR1@10 --output="$work/bad-%j.out" 2>&1) || { echo "$chain_out"; fail "chain.sh (bad parameters)"; }
mapfile -t bj < <(echo "$chain_out" | sed -n 's/^chain.sh: job [0-9]* of 2: \([0-9]*\).*/\1/p')
wait_job "${bj[0]}" 60 || fail "bad-parameter chain: job ${bj[0]} did not end"
wait_job "${bj[1]}" 60 || fail "bad-parameter chain: job ${bj[1]} did not end"
[ "$(job_field "${bj[0]}" ExitCode)" = "2:0" ] || fail "job ${bj[0]} exit code $(job_field "${bj[0]}" ExitCode), expected 2:0"
grep -q "a restart cannot fix this" "$work/bad-${bj[0]}.out" || fail "no 'cannot fix' message"
[ "$(job_field "${bj[1]}" JobState)" = CANCELLED ] || fail "job ${bj[1]} after exit 2: $(job_field "${bj[1]}" JobState)"
ok "configuration error: exit 2, not retried, rest of the chain cancelled"

# ---- 4. a site script: installed fmtrain loaded with Lmod inside the job -------------------------
# sites/lumi-c.sbatch (a CPU site) with its partition and sizes overridden on the command line: it
# loads the installed modulefile (module use $FMTRAIN_PREFIX/share/modulefiles; module load fmtrain)
# and sources the job logic through $FMTRAIN_JOBSCRIPTS, as on the real system.
LMOD_INIT=${LMOD_INIT:-/usr/share/lmod/lmod/init/bash}
if [ -r "$LMOD_INIT" ]; then
  cmake --install "$FMTRAIN_BINARY_DIR" --prefix "$work/prefix" >"$work/install.log" 2>&1 ||
    { cat "$work/install.log"; fail "cmake --install"; }
  unset MODULEPATH LOADEDMODULES _LMFILES_
  # shellcheck source=/dev/null
  . "$LMOD_INIT" # the batch shell inherits the exported `module` function through sbatch's --export=ALL
  write_params "$work/p5.ini" "$work/run5"
  job=$(cd "$work" && env -u FMTRAIN_EXE FM_PARAMS="$work/p5.ini" FMTRAIN_PREFIX="$work/prefix" \
    sbatch --parsable -p debug -N 1 --ntasks-per-node=2 --cpus-per-task=1 --time=5 \
    --signal=B:USR1@10 --output="$work/site-%j.out" "$src/jobscripts/sites/lumi-c.sbatch") ||
    fail "sbatch sites/lumi-c.sbatch"
  wait_job "$job" 120 || fail "site job $job did not end"
  grep -q "srun --cpu-bind=cores --mpi=pmix $work/prefix/bin/fmtrain train" "$work/site-$job.out" ||
    fail "the site script did not run the installed fmtrain from the module"
  [ -e "$work/run5/COMPLETE" ] || fail "the site script's run did not complete"
  same_params "$ref_ckpt" "$(final_checkpoint "$work/run5")" || fail "the site script's run differs from the reference"
  ok "sites/lumi-c.sbatch: module load fmtrain inside the job, installed fmtrain ran to COMPLETE"
else
  echo "note: Lmod not installed ($LMOD_INIT); the site-script check is skipped"
fi

# ---- 5. scancel stops for good: checkpoint, exit 75, no requeue -----------------------------------
# wait_train RUN_DIR N SECONDS: until RUN_DIR/metrics.jsonl has N train records
wait_train() {
  local i
  for ((i = 0; i < $3 * 5; i++)); do
    [ -f "$1/metrics.jsonl" ] && [ "$(grep -c '"type":"train"' "$1/metrics.jsonl")" -ge "$2" ] && return 0
    sleep 0.2
  done
  return 1
}
write_params "$work/p6.ini" "$work/run6"
sed -i 's/^steps = .*/steps = 100000/' "$work/p6.ini"
job=$(cd "$work" && FM_PARAMS="$work/p6.ini" sbatch --parsable -p debug --account=fmtest -N 1 \
  --ntasks-per-node=2 --cpus-per-task=1 --time=10 --signal=B:USR1@10 --output="$work/cancel-%j.out" \
  "$src/jobscripts/generic/cpu.sbatch") || fail "sbatch cpu.sbatch (scancel)"
wait_train "$work/run6" 5 120 || fail "job $job did not start training within 120 s"
t0=$(date +%s.%N)
scancel "$job" || fail "scancel $job"
wait_job "$job" 120 || fail "job $job still in the queue 120 s after scancel"
t1=$(date +%s.%N)
sleep 15 # a requeued job would be back in the queue by now (cred_expire = 10 s)
out="$work/cancel-$job.out"
[ -z "$(squeue -h -j "$job" -o %T 2>/dev/null)" ] || fail "job $job is back in the queue after scancel"
[ "$(job_field "$job" JobState)" = CANCELLED ] || fail "job $job ended $(job_field "$job" JobState), expected CANCELLED"
[ "$(job_field "$job" Restarts)" = 0 ] || fail "job $job was requeued after scancel (Restarts=$(job_field "$job" Restarts))"
grep -q "SIGTERM received" "$out" || fail "fmtrain did not report SIGTERM"
grep -q "fmtrain exited with code 75" "$out" || fail "fmtrain did not stop with 75 after scancel"
grep -q "because the job was cancelled (scancel): not requeuing" "$out" || fail "the script did not say why it does not requeue"
grep -q "job=$job restart=0 exit=75 cancelled by scancel, not requeued" "$work/run6/jobs.log" || fail "jobs.log has no cancel line"
stopped=$(sed -n 's/.*stopping at step \([0-9]*\)\/.*/\1/p' "$out" | head -n 1)
if [ -z "$stopped" ] || [ ! -f "$work/run6/checkpoints/$(printf 'step-%08d.h5' "$stopped")" ]; then
  fail "no checkpoint of the step where scancel stopped the run"
fi
ok "scancel: checkpoint at step $stopped, exit 75, not requeued; $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }') s from scancel to the job's end"

# ---- 6. preemption: SIGTERM with PreemptTime set -> checkpoint, exit 75, requeue, resume ----------
write_params "$work/p7.ini" "$work/run7"
job=$(cd "$work" && FM_PARAMS="$work/p7.ini" sbatch --parsable -p low --account=fmtest -N 1 \
  --ntasks-per-node=2 --cpus-per-task=1 --time=10 --signal=B:USR1@10 --output="$work/preempt-%j.out" \
  "$src/jobscripts/generic/cpu.sbatch") || fail "sbatch cpu.sbatch (preemption)"
wait_train "$work/run7" 5 120 || fail "job $job did not start training within 120 s"
t0=$(date +%s.%N)
hi=$(cd "$work" && sbatch --parsable -p high -N 1 -n 2 --output="$work/high-%j.out" --wrap "sleep 5") ||
  fail "sbatch the preempting job"
out="$work/preempt-$job.out"
for ((i = 0; i < 300; i++)); do grep -q "fmtrain exited with code" "$out" 2>/dev/null && break; sleep 0.1; done
t1=$(date +%s.%N)
wait_job "$hi" 120 || fail "the preempting job $hi did not end"
for ((i = 0; i < 1200; i++)); do [ "$(job_field "$job" JobState)" = COMPLETED ] && break; sleep 0.2; done
[ "$(job_field "$job" JobState)" = COMPLETED ] || fail "the preempted job $job ended $(job_field "$job" JobState)"
grep -q "fmtrain exited with code 75" "$out" || fail "fmtrain did not stop with 75 on preemption"
grep -q "stopped with a checkpoint (Slurm: preempted)" "$out" || fail "the script did not see the preemption"
grep -q "exit=75 requeue (preempted)" "$work/run7/jobs.log" || fail "jobs.log has no preemption requeue"
[ "$(job_field "$job" Restarts)" -ge 1 ] || fail "the preempted job was not requeued"
[ -e "$work/run7/COMPLETE" ] || fail "the preempted run did not complete"
same_params "$ref_ckpt" "$(final_checkpoint "$work/run7")" || fail "the preempted run's final parameters differ from the reference"
ok "preemption: exit 75 $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }') s after the preemptor was submitted, requeued, resumed, same final parameters"

echo "all Slurm job-script checks passed"
