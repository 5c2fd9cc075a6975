#!/usr/bin/env bash
# cluster.sh — starts and stops a private one-node Slurm cluster on this machine, for the tests in
# tests/slurm/. Source it, then call:
#
#   fm_cluster_start DIR      # munged + slurmctld + slurmd, all state under DIR; exports SLURM_CONF
#   fm_cluster_stop           # stops the three daemons by the process ids they were started with
#
# Nothing outside DIR is touched: munge gets its own key and socket, Slurm its own slurm.conf, ports,
# spool and state directories, so several copies (the release and the asan build) can run at once and
# the machine's own /etc/slurm and /etc/munge are not used. fm_cluster_start returns 77 (the CTest
# "skipped" code) when the daemons are not installed or cannot be started here (not root, munged,
# slurmctld or slurmd refusing to start, the node never becoming idle: the daemons' logs are printed
# so a skip can be told apart from a configuration mistake), and 1 when no TCP port is free.
#
# Configuration, chosen to run in a container without cgroups or a real node:
#   ProctrackType=proctrack/linuxproc, TaskPlugin=task/none, JobAcctGatherType=jobacct_gather/none,
#   SlurmUser=root, one node named after `hostname` with CPUs=2 (SlurmdParameters=config_overrides lets
#   the node register whatever it has), partition "debug" (the default), and for preemption tests
#   "low" (PriorityTier=1, PreemptMode=REQUEUE, GraceTime=30) and "high" (PriorityTier=5), with
#   PreemptType=preempt/partition_prio: a job in "high" that needs the node preempts the jobs of
#   "low" (SIGTERM to their steps, 30 s grace); sched_interval=1 and cred_expire=10 so that
#   a requeued job starts again after ~10 s instead of the default 120 s; TmpFS and mpi.conf's
#   PMIxCliTmpDirBase inside DIR, so that two clusters (two builds' tests) never share PMIx files.

FM_CLUSTER_DIR=""
FM_CLUSTER_PIDS=()

# Prints the daemons' logs (for a failing test).
fm_cluster_logs() {
  local f
  for f in "$FM_CLUSTER_DIR"/log/*.log; do
    [ -f "$f" ] || continue
    echo "----- $f (last 40 lines)"
    tail -n 40 "$f"
  done
}

# Picks a free TCP port pair starting near a number derived from the process id.
fm_cluster_ports() {
  local base=$((20000 + ($$ % 2000) * 7)) p
  for ((p = base; p < base + 200; p += 2)); do
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null &&
       ! (exec 3<>"/dev/tcp/127.0.0.1/$((p + 1))") 2>/dev/null; then
      echo "$p"
      return 0
    fi
  done
  return 1
}

fm_cluster_start() {
  FM_CLUSTER_DIR=$1
  local d=$FM_CLUSTER_DIR
  local tool
  for tool in munged slurmctld slurmd sbatch squeue scontrol srun; do
    if ! command -v "$tool" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$tool" ]; then
      echo "cluster.sh: $tool is not installed (apt-get install slurmctld slurmd slurm-client munge); skipping"
      return 77
    fi
  done
  if [ "$(id -u)" -ne 0 ]; then
    echo "cluster.sh: a private Slurm cluster needs root (slurmd runs jobs as their user); skipping"
    return 77
  fi
  export PATH="$PATH:/usr/sbin"
  mkdir -p "$d/munge" "$d/state" "$d/spool" "$d/log" "$d/run" "$d/tmp"
  chmod 0700 "$d" "$d/munge"

  # munge: private key, socket and pid file
  dd if=/dev/urandom of="$d/munge/munge.key" bs=1024 count=1 status=none
  chmod 0400 "$d/munge/munge.key"
  local sock="$d/munge/munge.socket"
  munged --force --key-file="$d/munge/munge.key" --socket="$sock" \
         --pid-file="$d/munge/munged.pid" --log-file="$d/log/munged.log" \
         --seed-file="$d/munge/munged.seed" >"$d/log/munged.out" 2>&1 || {
    echo "cluster.sh: munged does not start here; skipping"
    cat "$d/log/munged.out" "$d/log/munged.log" 2>/dev/null
    return 77
  }
  local i
  for ((i = 0; i < 50; i++)); do [ -s "$d/munge/munged.pid" ] && break; sleep 0.1; done
  FM_CLUSTER_PIDS+=("$(cat "$d/munge/munged.pid")")

  local port node
  port=$(fm_cluster_ports) || { echo "cluster.sh: no free TCP port pair found"; return 1; }
  node=$(hostname -s)
  cat >"$d/slurm.conf" <<EOF
ClusterName=fmtest$$
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=$port
SlurmdPort=$((port + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$sock,cred_expire=10
StateSaveLocation=$d/state
SlurmdSpoolDir=$d/spool
TmpFS=$d/tmp
SlurmctldPidFile=$d/run/slurmctld.pid
SlurmdPidFile=$d/run/slurmd.pid
SlurmctldLogFile=$d/log/slurmctld.log
SlurmdLogFile=$d/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
PlugStackConfig=$d/plugstack.conf
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
SwitchType=switch/none
ReturnToService=2
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1,bf_interval=1
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
KillWait=5
MinJobAge=3600
InactiveLimit=0
JobRequeue=1
NodeName=$node NodeAddr=127.0.0.1 CPUs=2 RealMemory=1000 State=UNKNOWN
PartitionName=debug Nodes=$node Default=YES MaxTime=INFINITE State=UP
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
PartitionName=low Nodes=$node PriorityTier=1 PreemptMode=REQUEUE GraceTime=30 MaxTime=INFINITE State=UP
PartitionName=high Nodes=$node PriorityTier=5 PreemptMode=OFF MaxTime=INFINITE State=UP
EOF
  : >"$d/plugstack.conf"
  # PMIx client directories (spmix_appdir_<uid>_<job>.<step>) go under TmpFS, /tmp by default, where
  # the job ids of two private clusters running at once would collide.
  printf 'PMIxCliTmpDirBase=%s\n' "$d/tmp" >"$d/mpi.conf"
  export SLURM_CONF="$d/slurm.conf"

  slurmctld -c -f "$SLURM_CONF" >"$d/log/slurmctld.out" 2>&1 || {
    echo "cluster.sh: slurmctld failed to start; skipping"; cat "$d/log/slurmctld.out"; fm_cluster_logs; return 77; }
  for ((i = 0; i < 100; i++)); do [ -s "$d/run/slurmctld.pid" ] && break; sleep 0.1; done
  [ -s "$d/run/slurmctld.pid" ] || { echo "cluster.sh: slurmctld wrote no pid file; skipping"; fm_cluster_logs; return 77; }
  FM_CLUSTER_PIDS+=("$(cat "$d/run/slurmctld.pid")")

  slurmd -f "$SLURM_CONF" -N "$node" >"$d/log/slurmd.out" 2>&1 || {
    echo "cluster.sh: slurmd failed to start; skipping"; cat "$d/log/slurmd.out"; fm_cluster_logs; return 77; }
  for ((i = 0; i < 100; i++)); do [ -s "$d/run/slurmd.pid" ] && break; sleep 0.1; done
  [ -s "$d/run/slurmd.pid" ] || { echo "cluster.sh: slurmd wrote no pid file; skipping"; fm_cluster_logs; return 77; }
  FM_CLUSTER_PIDS+=("$(cat "$d/run/slurmd.pid")")

  # wait until the node is idle
  local state=""
  for ((i = 0; i < 300; i++)); do
    state=$(sinfo -h -N -o '%T' 2>/dev/null | head -n 1)
    [ "$state" = "idle" ] && return 0
    sleep 0.1
  done
  echo "cluster.sh: the node did not become idle (state '$state'); skipping"
  fm_cluster_logs
  return 77
}

fm_cluster_stop() {
  local pid i alive
  [ -n "$FM_CLUSTER_DIR" ] || return 0
  # Cancel whatever is left so slurmd's steps end before the daemons do.
  scancel --quiet --user="$(id -un)" 2>/dev/null || true
  # Stop in reverse order of start: slurmd, slurmctld, munged.
  for ((i = ${#FM_CLUSTER_PIDS[@]} - 1; i >= 0; i--)); do
    pid=${FM_CLUSTER_PIDS[i]}
    kill -TERM "$pid" 2>/dev/null || continue
    for ((alive = 0; alive < 50; alive++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
  done
  FM_CLUSTER_PIDS=()
}
