# shellcheck shell=bash
# fmtrain-job.sh — the logic that every fmtrain batch script shares. It is SOURCED (not executed) by
# generic/cpu.sbatch, generic/gpu.sbatch and sites/*.sbatch after their #SBATCH lines and module
# loads, so the per-site files stay a handful of lines and the logic lives in one place.
#
# The batch script sets, then calls `fm_job_main` (which exits with the job's exit code):
#   FM_PARAMS        the parameter file (required)
#   FM_SETS          bash array of extra `fmtrain train` arguments, e.g. (--set train.steps=2000)
#   FM_RUN_DIR       the run directory; default: found as fmtrain finds it (`--set run.dir=` in
#                    FM_SETS, `[run] dir` in FM_PARAMS, else runs/<run.name>); relative to the submit dir
#   FM_CPU_BIND      srun --cpu-bind value: "cores" (default; CPU nodes: Slurm binds each rank to its
#                    --cpus-per-task cores) or "none" (GPU nodes: fmtrain binds each rank to the cores
#                    nearest its GPU itself, [runtime] bind = auto; see docs/placement.md)
#   FM_SRUN_ARGS     bash array of extra srun arguments: the site's launcher flags, e.g.
#                    (--mpi=pspmix) on JSC's psslurm, (--mpi=pmix_v3) on Vega; default none
#   FM_SRUN_MPI      srun's MPI plugin when FM_SRUN_ARGS names none: "auto" (default: see
#                    fm_job_mpi_plugin below), "default" (srun's own default, the cluster's
#                    MpiDefault), or a plugin name (pmix, pmix_v4, pmi2, pspmix, cray_shasta...)
#   FM_OMP_RUNTIME_BIND  1: let the OpenMP runtime pin the threads (OMP_PLACES=cores,
#                    OMP_PROC_BIND=close); default: fmtrain pins one thread per core itself.
#                    Only with FM_CPU_BIND=cores: with "none" every rank's threads would land on
#                    the same cores (the runtime computes its places from the starting binding)
#   FM_MAX_REQUEUES  stop requeuing after this many restarts of the same job (default 50)
#   FM_MAX_FAILURES  requeue after a runtime failure (exit 1) at most this many times (default 1)
#   FMTRAIN_EXE      the fmtrain executable (default: `fmtrain` on PATH, e.g. from `module load fmtrain`)
#
# What it does, in order:
#  1. Finds the run directory. If <run dir>/COMPLETE exists (fmtrain writes it after the last step and
#     the final checkpoint) there is nothing to do: exit 0. If the stop file exists (<run dir>/STOP, or
#     FM_STOP_FILE) the user asked the run to stop: exit 0 without starting.
#  2. Exports what srun and OpenMP need: SRUN_CPUS_PER_TASK (srun does not inherit --cpus-per-task
#     from the batch allocation since Slurm 22.05), OMP_NUM_THREADS = cores per rank and
#     OPENBLAS_NUM_THREADS=1 (BLAS runs inside fmtrain's own OpenMP threads). Thread
#     pinning: fmtrain pins one OpenMP thread per core of the rank's share itself (hwloc) unless
#     OMP_PLACES or OMP_PROC_BIND ask the OpenMP runtime to do it, so the scripts set
#     OMP_PROC_BIND=false and unset OMP_PLACES (overriding a site default such as OMP_PROC_BIND=spread,
#     which would pin threads relative to the whole node on GPU nodes). FM_OMP_RUNTIME_BIND=1 sets
#     OMP_PLACES=cores OMP_PROC_BIND=close instead (correct with --cpu-bind=cores: the runtime then
#     places the threads one per core inside the rank's cores; fmtrain notes it in its placement table).
#  3. Chooses srun's MPI plugin when neither FM_SRUN_ARGS nor SLURM_MPI_TYPE nor the cluster's
#     MpiDefault does (fm_job_mpi_plugin: from the MPI library fmtrain was built with and
#     `srun --mpi=list`), and says in the job output which plugin the ranks start with and why.
#     Starts `srun --cpu-bind=cores [FM_SRUN_ARGS] fmtrain train FM_PARAMS ...` in the background and waits for it.
#     `[checkpoint] resume = auto` in the parameter file makes every start continue from the newest
#     complete checkpoint in the run directory.
#  4. Signals. The scripts ask for `#SBATCH --signal=B:USR1@<seconds>`: with the `B:` prefix Slurm
#     signals ONLY the batch shell (this script), not the job steps; without it, ONLY the steps and
#     never the batch shell. We use B: because the shell must know that the stop was requested (to
#     requeue), and we forward the signal to srun (`kill -USR1 <srun pid>`), which passes it on to
#     every task; fmtrain then finishes its step, writes a checkpoint on all ranks and exits 75.
#     SIGTERM is delivered by Slurm to the steps directly, for three different reasons: a user's (or
#     an administrator's) `scancel <jobid>`, preemption by a higher-priority job, and the time limit
#     itself. fmtrain treats them alike (checkpoint, exit 75); this script tells them apart afterwards
#     by asking Slurm about the job (fm_job_stop_cause: `scontrol -o show job`): preemption sets
#     PreemptTime (the job is still RUNNING during the grace time, and the batch shell itself gets
#     no signal), the time limit leaves Reason=TimeLimit, a scancel leaves the job COMPLETING or
#     CANCELLED with neither. A graceful stop that lets the run continue in the next job:
#         scancel --batch --signal=USR1 <jobid>
#     A stop for good: `scancel <jobid>` (the job checkpoints within Slurm's KillWait and is not
#     requeued), or `touch <run dir>/STOP` (nothing starts again) plus the USR1 stop above.
#  5. Decides by fmtrain's exit code (see `fmtrain help`):
#       0   finished: COMPLETE exists; cancel the rest of a chain; exit 0
#       75  stopped and resumable: a user's scancel stops for good (no requeue, the rest of a chain
#           cancelled); otherwise (USR1 at the time limit, the time limit, preemption, fmtrain's own
#           wall-time stop or its hang watchdog) requeue this same job (`scontrol requeue
#           $SLURM_JOB_ID`, which needs `#SBATCH --requeue`) unless the run is complete, the stop file
#           exists, the job is part of a chain (chain.sh: the next job continues), or FM_MAX_REQUEUES
#           is reached
#       2,3,4  configuration/input error or divergence: a restart cannot fix it; cancel the rest of
#           a chain and exit with the code (2 also when another fmtrain holds the run directory)
#       1 (or killed)  runtime failure: requeue at most FM_MAX_FAILURES times (never after a user's
#           scancel), then give up
#
# Files in the run directory used here: COMPLETE (read), STOP (read), jobs.log (one line per job
# segment appended: time, job id, restart count, exit code, decision).

# Prints a line prefixed with the time and "fmtrain-job:".
fm_job_say() {
  printf '%s fmtrain-job: %s\n' "$(date '+%Y-%m-%dT%H:%M:%S')" "$*"
}

# Prints the value of key $2 of section [run] in the INI file $1 (comments after '#' or ';'
# removed, double quotes around the value removed); prints nothing when absent.
fm_job_ini_run_key() {
  awk -v key="$2" '
    { sub(/[ \t]+[#;].*$/, ""); sub(/^[ \t]*[#;].*$/, "") }
    /^[ \t]*\[/ { sec = $0; gsub(/[][ \t]/, "", sec); next }
    sec == "run" && $0 ~ ("^[ \t]*" key "[ \t]*=") {
      v = $0; sub(/^[^=]*=[ \t]*/, "", v); sub(/[ \t]+$/, "", v)
      if (v ~ /^".*"$/) v = substr(v, 2, length(v) - 2)
      val = v
    }
    END { if (val != "") print val }' "$1"
}

# Prints the value of the last `--set run.$1=...` in FM_SETS; returns 1 when there is none (an
# empty value, `--set run.dir=`, is a value: it clears the file's setting).
fm_job_set_value() {
  local a prev="" v="" found=1
  for a in "${FM_SETS[@]}"; do
    case "$prev|$a" in
      "--set|run.$1="*) v=${a#run."$1"=}; found=0 ;;
      *"|--set=run.$1="*) v=${a#--set=run."$1"=}; found=0 ;;
    esac
    prev=$a
  done
  printf '%s' "$v"
  return $found
}

# Sets FM_RUN_DIR (absolute) the way fmtrain does: FM_RUN_DIR if set, else run.dir (from --set, then
# the parameter file), else runs/<run.name>, where run.name defaults to the parameter file's name
# without its extension (characters outside [A-Za-z0-9._-] replaced by '_'). Relative paths are
# relative to the submit directory (the job's working directory, where fmtrain runs).
# tests/shell/test_run_dir.sh checks this against `fmtrain train --dry-run`.
fm_job_find_run_dir() {
  local d="${FM_RUN_DIR:-}" name base
  if [ -z "$d" ]; then
    d=$(fm_job_set_value dir) || d=$(fm_job_ini_run_key "$FM_PARAMS" dir)
  fi
  if [ -z "$d" ]; then
    name=$(fm_job_set_value name) || name=$(fm_job_ini_run_key "$FM_PARAMS" name)
    if [ -z "$name" ]; then
      base=${FM_PARAMS##*/}
      name=$(printf '%s' "${base%.*}" | tr -c 'A-Za-z0-9._-' '_')
    fi
    d="runs/$name"
  fi
  case "$d" in
    /*) FM_RUN_DIR=$d ;;
    *) FM_RUN_DIR="${SLURM_SUBMIT_DIR:-$PWD}/$d" ;;
  esac
}

# Cancels the other jobs of a chain (chain.sh writes their ids, one per line, to FM_CHAIN_FILE).
fm_job_cancel_chain() {
  local id
  [ -n "${FM_CHAIN_FILE:-}" ] && [ -f "$FM_CHAIN_FILE" ] || return 0
  while read -r id; do
    if [ -z "$id" ] || [ "$id" = "${SLURM_JOB_ID:-}" ]; then continue; fi
    if [ -n "$(squeue -h -j "$id" -t PENDING -o %i 2>/dev/null)" ]; then
      fm_job_say "cancelling job $id of the chain ($1)"
      scancel "$id" 2>/dev/null || true
    fi
  done <"$FM_CHAIN_FILE"
}

fm_job_record() { # $1 exit code, $2 decision
  printf '%s job=%s restart=%s exit=%s %s\n' "$(date '+%Y-%m-%dT%H:%M:%S')" "${SLURM_JOB_ID:-none}" \
    "${SLURM_RESTART_COUNT:-0}" "$1" "$2" >>"$FM_RUN_DIR/jobs.log" 2>/dev/null || true
}

# Requeues this job. scontrol requeue ends this script (Slurm terminates the job and puts it back
# in the queue), so it is the last thing done; it returns only when the requeue was refused.
fm_job_requeue() {
  fm_job_record "$1" "requeue ($2)"
  fm_job_say "requeuing job $SLURM_JOB_ID ($2); it continues from the newest checkpoint in $FM_RUN_DIR"
  if ! scontrol requeue "$SLURM_JOB_ID"; then
    fm_job_say "scontrol requeue was refused (is '#SBATCH --requeue' set and requeue allowed here?);" \
               "submit the script again, or use jobscripts/chain.sh, to continue the run"
    return 1
  fi
  # Slurm now terminates this script; wait for it rather than report a misleading exit code.
  sleep 300
}

# Chooses srun's MPI plugin (its --mpi flag) for the fmtrain executable $1 and appends it to
# FM_SRUN_ARGS when one is needed; sets FM_JOB_MPI_NOTE to what was decided and why.
# An MPI job step needs the plugin that serves the MPI library's process-management interface (PMI):
# with the wrong one, or none, every rank fails in MPI_Init ("PMI", "PMIx" or "OPAL" errors). In
# order, the first that applies decides:
#   FM_SRUN_ARGS has --mpi=...      the site's or the user's choice;
#   FM_SRUN_MPI=NAME | default       --mpi=NAME, or srun's default unchanged;
#   SLURM_MPI_TYPE is set            srun reads it itself;
#   MpiDefault (scontrol show config) is not "none": the site configured a plugin for its MPI;
#   otherwise (MpiDefault=none, Slurm's own default) the MPI library in `fmtrain --version` and the
#   plugins `srun --mpi=list` offers: Open MPI -> pmix (or the newest pmix_vN), else pmi2;
#   ParaStation MPI -> pspmix; Cray MPICH -> cray_shasta; MPICH, MVAPICH, Intel MPI -> pmi2.
# When nothing fits, srun's default is kept and the note says how to choose (docs/onboarding.md).
fm_job_mpi_plugin() {
  local exe=$1 a def lib family want w p="" have
  FM_JOB_MPI_NOTE=""
  for a in "${FM_SRUN_ARGS[@]}"; do
    case "$a" in
      --mpi=* | --mpi) FM_JOB_MPI_NOTE="the MPI plugin of FM_SRUN_ARGS (the site's launcher flag)"; return 0 ;;
    esac
  done
  case "${FM_SRUN_MPI:-auto}" in
    auto) ;;
    default) FM_JOB_MPI_NOTE="srun's default MPI plugin (FM_SRUN_MPI=default)"; return 0 ;;
    *) FM_SRUN_ARGS+=("--mpi=$FM_SRUN_MPI"); FM_JOB_MPI_NOTE="--mpi=$FM_SRUN_MPI (FM_SRUN_MPI)"; return 0 ;;
  esac
  if [ -n "${SLURM_MPI_TYPE:-}" ]; then
    FM_JOB_MPI_NOTE="--mpi=$SLURM_MPI_TYPE (SLURM_MPI_TYPE)"
    return 0
  fi
  def=$(scontrol show config 2>/dev/null | sed -n 's/^MpiDefault *= *//p' | head -n 1)
  if [ -n "$def" ] && [ "$def" != none ]; then
    FM_JOB_MPI_NOTE="the cluster's default MPI plugin, $def (MpiDefault)"
    return 0
  fi
  lib=$("$exe" --version 2>/dev/null | sed -n 's/^ *MPI: *//p' | head -n 1)
  case "$lib" in
    *"Open MPI"*) family="Open MPI"; want="pmix pmi2" ;;
    *ParaStation*) family="ParaStation MPI"; want="pspmix pmix" ;;
    *CRAY*MPICH* | *[Cc]ray*MPICH*) family="Cray MPICH"; want="cray_shasta pmi2" ;;
    *Intel*MPI*) family="Intel MPI"; want="pmi2" ;;
    *MVAPICH* | *MPICH*) family="MPICH"; want="pmi2" ;;
    *)
      FM_JOB_MPI_NOTE="srun's default MPI plugin (MpiDefault=${def:-unknown}; the MPI library of $exe is not known here)"
      return 0 ;;
  esac
  have=" $(srun --mpi=list 2>&1 | grep -oE '(pmix(_v[0-9]+)?|pmi2|pspmix|cray_shasta)' | sort -u | tr '\n' ' ')"
  for w in $want; do
    case "$have" in *" $w "*) p=$w; break ;; esac
    if [ "$w" = pmix ]; then # only versioned names offered: the newest
      p=$(tr ' ' '\n' <<<"$have" | grep -E '^pmix_v[0-9]+$' | sort -V | tail -n 1)
      [ -n "$p" ] && break
    fi
  done
  if [ -z "$p" ]; then
    FM_JOB_MPI_NOTE="srun's default MPI plugin, ${def:-none} (MpiDefault), but fmtrain uses $family and srun offers none of: $want (srun --mpi=list:${have% }); if the ranks fail in MPI_Init, set FM_SRUN_MPI=<plugin> in the script (docs/onboarding.md, 6. Submit)"
    return 0
  fi
  FM_SRUN_ARGS+=("--mpi=$p")
  FM_JOB_MPI_NOTE="--mpi=$p (fmtrain uses $family; the cluster's MpiDefault is ${def:-none}; set FM_SRUN_MPI to choose another)"
}

# Prints why Slurm told this job's processes to stop, from its view of the job
# (`scontrol -o show job`; tested on a one-node cluster in tests/slurm/test_jobs.sh):
#   preempted  PreemptTime is set: a higher-priority job preempts this one (during the grace time the
#              job is still RUNNING; Slurm sends SIGTERM to the steps only)
#   timelimit  Reason=TimeLimit or JobState=TIMEOUT: the time limit itself (no --signal, or too late)
#   cancelled  COMPLETING or CANCELLED for any other reason: scancel by the user or an administrator
#   running    still RUNNING: the stop came from SIGUSR1 (--signal at the time limit, or
#              `scancel --signal=USR1`) or from fmtrain itself (wall-time margin, hang watchdog)
#   unknown    Slurm could not be asked
fm_job_stop_cause() {
  local info state reason preempt
  info=$(scontrol -o show job "${SLURM_JOB_ID:-0}" 2>/dev/null) || { echo unknown; return 0; }
  state=$(tr ' ' '\n' <<<"$info" | sed -n 's/^JobState=//p' | head -n 1)
  reason=$(tr ' ' '\n' <<<"$info" | sed -n 's/^Reason=//p' | head -n 1)
  preempt=$(tr ' ' '\n' <<<"$info" | sed -n 's/^PreemptTime=//p' | head -n 1)
  case "$preempt" in
    '' | None | Unknown | N/A) ;;
    *) echo preempted; return 0 ;;
  esac
  case "$state|$reason" in
    PREEMPTED\|*) echo preempted ;;
    TIMEOUT\|* | *\|TimeLimit) echo timelimit ;;
    COMPLETING\|* | CANCELLED\|*) echo cancelled ;;
    RUNNING\|* | CONFIGURING\|*) echo running ;;
    *) echo unknown ;;
  esac
}

fm_job_forward() { # $1 signal name
  FM_JOB_SIGNAL=$1
  if [ -n "${FM_JOB_SRUN_PID:-}" ] && kill -0 "$FM_JOB_SRUN_PID" 2>/dev/null; then
    fm_job_say "received SIG$1: forwarding it to the job step (srun pid $FM_JOB_SRUN_PID)"
    kill "-$1" "$FM_JOB_SRUN_PID" 2>/dev/null || true
  else
    fm_job_say "received SIG$1 before the job step started"
  fi
}

fm_job_main() {
  local exe rc restarts stop failures cause
  FM_JOB_SIGNAL=""
  FM_JOB_SRUN_PID=""
  if [ -z "${FM_PARAMS:-}" ] || [ ! -r "$FM_PARAMS" ]; then
    fm_job_say "error: parameter file '${FM_PARAMS:-}' is not readable (set FM_PARAMS in the script)"
    exit 2
  fi
  if [ -z "${FM_SETS+x}" ]; then FM_SETS=(); fi
  if [ -z "${FM_SRUN_ARGS+x}" ]; then FM_SRUN_ARGS=(); fi
  exe=${FMTRAIN_EXE:-$(command -v fmtrain || true)}
  if [ -z "$exe" ] || [ ! -x "$exe" ]; then
    fm_job_say "error: no fmtrain executable: 'module load fmtrain' (or set FMTRAIN_EXE) in the script"
    exit 2
  fi
  fm_job_find_run_dir || exit 2
  mkdir -p "$FM_RUN_DIR" || exit 1
  stop=${FM_STOP_FILE:-$FM_RUN_DIR/STOP}
  restarts=${SLURM_RESTART_COUNT:-0}
  fm_job_say "job ${SLURM_JOB_ID:-?} (restart $restarts) on ${SLURM_JOB_NUM_NODES:-?} node(s):" \
             "${SLURM_NTASKS:-?} ranks x ${SLURM_CPUS_PER_TASK:-?} cores; run dir $FM_RUN_DIR"

  if [ -e "$FM_RUN_DIR/COMPLETE" ]; then
    fm_job_say "the run is already complete ($FM_RUN_DIR/COMPLETE); nothing to do"
    fm_job_record 0 "already complete"
    fm_job_cancel_chain "run complete"
    exit 0
  fi
  if [ -e "$stop" ]; then
    fm_job_say "stop file $stop exists: not starting (remove it to continue the run)"
    fm_job_record 0 "stop file"
    fm_job_cancel_chain "stop file"
    exit 0
  fi

  export SRUN_CPUS_PER_TASK=${SLURM_CPUS_PER_TASK:-1}
  export OMP_NUM_THREADS=$SRUN_CPUS_PER_TASK
  # fmtrain's CPU backend runs BLAS single-threaded inside its own OpenMP pool; this keeps a
  # pthreads OpenBLAS from starting idle workers for every core at load time (docs/performance.md).
  export OPENBLAS_NUM_THREADS=1
  if [ "${FM_OMP_RUNTIME_BIND:-0}" = 1 ]; then
    export OMP_PLACES=cores OMP_PROC_BIND=close
  else
    unset OMP_PLACES
    export OMP_PROC_BIND=false
  fi

  trap 'fm_job_forward USR1' USR1
  trap 'fm_job_forward USR2' USR2
  trap 'FM_JOB_SIGNAL=TERM; fm_job_say "received SIGTERM (job cancelled or at its time limit; fmtrain checkpoints within KillWait)"' TERM

  fm_job_mpi_plugin "$exe"
  fm_job_say "launcher: $FM_JOB_MPI_NOTE"
  fm_job_say "srun --cpu-bind=${FM_CPU_BIND:-cores}${FM_SRUN_ARGS[*]:+ ${FM_SRUN_ARGS[*]}} $exe train $FM_PARAMS ${FM_SETS[*]}"
  srun --cpu-bind="${FM_CPU_BIND:-cores}" "${FM_SRUN_ARGS[@]}" "$exe" train "$FM_PARAMS" "${FM_SETS[@]}" &
  FM_JOB_SRUN_PID=$!
  # `wait` returns early (status > 128) whenever a trapped signal arrives; wait again until srun ends.
  while :; do
    rc=0
    wait "$FM_JOB_SRUN_PID" || rc=$?
    kill -0 "$FM_JOB_SRUN_PID" 2>/dev/null || break
  done
  trap - USR1 USR2 TERM
  fm_job_say "fmtrain exited with code $rc${FM_JOB_SIGNAL:+ (after SIG$FM_JOB_SIGNAL)}"

  case "$rc" in
    0)
      if [ -e "$FM_RUN_DIR/COMPLETE" ]; then
        fm_job_say "training complete"
        fm_job_record 0 "complete"
      else
        fm_job_say "fmtrain finished but wrote no $FM_RUN_DIR/COMPLETE marker"
        fm_job_record 0 "finished without marker"
      fi
      fm_job_cancel_chain "run complete"
      exit 0 ;;
    75)
      if [ -e "$FM_RUN_DIR/COMPLETE" ]; then
        fm_job_record 75 "complete"; fm_job_cancel_chain "run complete"; exit 0
      fi
      cause=$(fm_job_stop_cause)
      if [ "$cause" = cancelled ]; then
        fm_job_say "stopped with a checkpoint because the job was cancelled (scancel): not requeuing;" \
                   "submit the script again to continue the run"
        fm_job_record 75 "cancelled by scancel, not requeued"
        fm_job_cancel_chain "job cancelled"
        exit 75
      fi
      fm_job_say "stopped with a checkpoint (Slurm: $cause)"
      if [ -e "$stop" ]; then
        fm_job_say "stopped with a checkpoint; stop file $stop exists, so not continuing"
        fm_job_record 75 "stopped by stop file"; fm_job_cancel_chain "stop file"; exit 0
      fi
      if [ -n "${FM_CHAIN_FILE:-}" ]; then
        fm_job_say "stopped with a checkpoint; the next job of the chain continues the run"
        fm_job_record 75 "stopped, chain continues"; exit 75
      fi
      if [ "$cause" = preempted ]; then
        fm_job_requeue 75 "preempted" || exit 75
        exit 75
      fi
      if [ "$restarts" -ge "${FM_MAX_REQUEUES:-50}" ]; then
        fm_job_say "stopped with a checkpoint; restart limit FM_MAX_REQUEUES=${FM_MAX_REQUEUES:-50}" \
                   "reached: submit again to continue"
        fm_job_record 75 "restart limit"; exit 75
      fi
      fm_job_requeue 75 "stopped with a checkpoint" || exit 75
      exit 75 ;;
    2|3|4)
      fm_job_say "exit code $rc: a restart cannot fix this (2: usage/configuration, 3: input file," \
                 "4: diverged); see the messages above and docs/troubleshooting.md"
      fm_job_record "$rc" "fatal, not retried"
      fm_job_cancel_chain "fatal error $rc"
      exit "$rc" ;;
    *)
      if [ "$(fm_job_stop_cause)" = cancelled ]; then
        fm_job_say "fmtrain exited $rc after the job was cancelled (scancel): not requeuing"
        fm_job_record "$rc" "cancelled by scancel, not requeued"
        fm_job_cancel_chain "job cancelled"
        exit "$rc"
      fi
      failures=$(grep -c "job=${SLURM_JOB_ID:-none} .* failure retry" "$FM_RUN_DIR/jobs.log" 2>/dev/null || true)
      if [ -z "${FM_CHAIN_FILE:-}" ] && [ "${failures:-0}" -lt "${FM_MAX_FAILURES:-1}" ] &&
         [ ! -e "$stop" ]; then
        fm_job_requeue "$rc" "runtime failure retry $((failures + 1)) of ${FM_MAX_FAILURES:-1}" || exit "$rc"
      fi
      fm_job_say "runtime failure (exit $rc); not retrying further"
      fm_job_record "$rc" "failure"
      exit "$rc" ;;
  esac
}
