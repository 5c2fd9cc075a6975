#!/usr/bin/env bash
# chain.sh — submits N batch jobs that continue ONE training run, one after the other.
#
#   jobscripts/chain.sh [-n N] [--singleton] [--stop-file PATH] SCRIPT.sbatch [sbatch options...]
#
#   -n N            number of jobs in the chain (default 4)
#   --singleton     chain with --dependency=singleton (jobs of the same name and user run one at a
#                   time, in submission order) instead of --dependency=afterany:<previous job>
#   --stop-file F   the file whose existence stops the chain (default: <run dir>/STOP)
#   sbatch options  passed to every sbatch call, e.g. --time=12:00:00 -A myproject
#
# Each job is the usual batch script (generic/*.sbatch or sites/*.sbatch) with FM_CHAIN_FILE in its
# environment: a file in the current directory listing the chain's job ids. In a chain, a job that
# stops with a checkpoint (exit 75, e.g. at its time limit) does not requeue itself; the next job of
# the chain starts (afterany: whatever the previous job's end) and resumes from the newest checkpoint.
# The chain stops early:
#   - when the run is complete (<run dir>/COMPLETE): the job that finishes cancels the rest, and a
#     job that starts after completion exits at once;
#   - when fmtrain fails for a reason a restart cannot fix (exit 2: configuration, 3: input file,
#     4: diverged): the failing job cancels the rest;
#   - when the user creates the stop file (touch <run dir>/STOP): the next job exits without starting
#     and cancels the rest. To stop the running job too, with a checkpoint:
#         scancel --batch --signal=USR1 <running job id>
#   - when the user cancels the running job (scancel <running job id>): it writes a checkpoint on the
#     SIGTERM and cancels the rest (a preemption, which also sends SIGTERM, does not: the job is
#     requeued; see docs/training.md, "Which signal does what").
# Exit status: 0 when all N jobs were submitted, 1 when sbatch failed (the jobs already submitted
# are listed), 2 for a usage error.
set -euo pipefail

usage() { sed -n '2,28p' "$0" | sed 's/^# \{0,1\}//'; }

n=4
mode=afterany
stop_file=""
while [ $# -gt 0 ]; do
  case "$1" in
    -n) [ $# -ge 2 ] || { echo "chain.sh: -n needs a number" >&2; exit 2; }; n=$2; shift 2 ;;
    -n*) n=${1#-n}; shift ;;
    --singleton) mode=singleton; shift ;;
    --stop-file) [ $# -ge 2 ] || { echo "chain.sh: --stop-file needs a path" >&2; exit 2; }
                 stop_file=$2; shift 2 ;;
    --stop-file=*) stop_file=${1#--stop-file=}; shift ;;
    -h|--help) usage; exit 0 ;;
    --) shift; break ;;
    -*) echo "chain.sh: unknown option '$1' (see chain.sh --help)" >&2; exit 2 ;;
    *) break ;;
  esac
done
case "$n" in
  ''|*[!0-9]*) echo "chain.sh: -n expects a positive whole number, got '$n'" >&2; exit 2 ;;
esac
if [ "$n" -lt 1 ]; then echo "chain.sh: -n expects at least 1, got $n" >&2; exit 2; fi
if [ $# -lt 1 ]; then echo "chain.sh: no batch script given (see chain.sh --help)" >&2; exit 2; fi
script=$1
shift
if [ ! -r "$script" ]; then echo "chain.sh: cannot read batch script '$script'" >&2; exit 2; fi
command -v sbatch >/dev/null || { echo "chain.sh: sbatch not found (not on a Slurm login node?)" >&2; exit 2; }

if [ -n "$stop_file" ]; then
  case "$stop_file" in /*) ;; *) stop_file="$PWD/$stop_file" ;; esac
  if [ -e "$stop_file" ]; then
    echo "chain.sh: the stop file $stop_file exists; remove it first to start a chain" >&2
    exit 2
  fi
fi

chain_file="$PWD/fmtrain-chain-$(date +%Y%m%d-%H%M%S)-$$.jobs"
: >"$chain_file"
export FM_CHAIN_FILE="$chain_file"
if [ -n "$stop_file" ]; then export FM_STOP_FILE="$stop_file"; fi

prev=""
for ((i = 1; i <= n; i++)); do
  dep=()
  if [ "$mode" = singleton ]; then
    dep=(--dependency=singleton)
  elif [ -n "$prev" ]; then
    dep=(--dependency="afterany:$prev")
  fi
  # --export=ALL is sbatch's default; it carries FM_CHAIN_FILE (and FM_STOP_FILE) to the job.
  if ! out=$(sbatch --parsable --export=ALL "${dep[@]}" "$@" "$script"); then
    echo "chain.sh: sbatch failed for job $i of $n; submitted so far: $(tr '\n' ' ' <"$chain_file")" >&2
    exit 1
  fi
  prev=${out%%;*}
  echo "$prev" >>"$chain_file"
  echo "chain.sh: job $i of $n: $prev${dep[0]:+ (${dep[0]})}"
done
echo "chain.sh: job ids in $chain_file"
echo "chain.sh: to end the chain after the running job: touch ${stop_file:-<run dir>/STOP}"
echo "chain.sh: to stop the running job now with a checkpoint: scancel --batch --signal=USR1 <job id>"
echo "chain.sh: to stop the whole chain now (checkpoint, no requeue, the rest cancelled): scancel <running job id>"
