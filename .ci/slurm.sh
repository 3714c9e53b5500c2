#!/usr/bin/env bash
# A single-node Slurm for the `forgetting` Slurm-launcher test: `.ci/slurm.sh start` installs
# slurm-wlm and munge if missing (apt-get, as root), writes a one-node, one-partition slurm.conf,
# starts munged, slurmctld and slurmd and waits until sinfo shows the node idle;
# `.ci/slurm.sh stop` stops the three daemons it started.
set -euo pipefail
STATE=/var/tmp/forgetting-slurm
CONF_DIR=/etc/slurm
PARTITION=${FORGETTING_SLURM_PARTITION:-ci}

start() {
  # A Slurm already up with this partition (a second CI run on the same machine) is used as it is.
  if command -v sinfo >/dev/null && sinfo -h -p "$PARTITION" -o %t 2>/dev/null | grep -qx idle; then
    echo "slurm.sh: partition $PARTITION is already up; using it"
    return 0
  fi
  if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null; then
    [ "$(id -u)" = 0 ] || { echo "slurm.sh: slurm-wlm and munge are missing and we are not root" >&2; exit 1; }
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
  fi
  mkdir -p "$STATE/munge" "$CONF_DIR" /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/munge /var/lib/munge /var/log/munge
  chown munge:munge "$STATE/munge" /run/munge /var/lib/munge /var/log/munge 2>/dev/null || true
  if [ ! -s /etc/munge/munge.key ]; then
    mkdir -p /etc/munge
    dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
    chown munge:munge /etc/munge/munge.key 2>/dev/null || true
    chmod 400 /etc/munge/munge.key
  fi
  local host cpus mem
  host=$(hostname -s)
  cpus=$(nproc)
  mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 512 ))
  cat > "$CONF_DIR/slurm.conf" <<CONF
ClusterName=forgetting-ci
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/pgid
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
ReturnToService=2
JobRequeue=1
MinJobAge=300
SlurmctldTimeout=30
SlurmdTimeout=30
NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=$PARTITION Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
  # munged runs as the munge user; the two Slurm daemons as root (SlurmUser=root above)
  # (a munged that is already running is used as it is, and left running by `stop`)
  if ! pgrep -x munged >/dev/null; then
    runuser -u munge -- /usr/sbin/munged --pid-file="$STATE/munge/munged.pid" 2>/dev/null \
      || /usr/sbin/munged --force --pid-file="$STATE/munge/munged.pid"
  fi
  /usr/sbin/slurmctld -f "$CONF_DIR/slurm.conf"
  /usr/sbin/slurmd -f "$CONF_DIR/slurm.conf"
  for _ in $(seq 60); do
    if sinfo -h -p "$PARTITION" -o %t 2>/dev/null | grep -qx idle; then
      echo "slurm.sh: partition $PARTITION on $host is idle ($cpus CPUs)"
      return 0
    fi
    sleep 1
  done
  echo "slurm.sh: the node did not become idle; sinfo says: $(sinfo -h 2>&1 | tail -n 1)" >&2
  tail -n 5 /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log >&2 || true
  exit 1
}

stop() {
  local pids=()
  for pidfile in "$STATE/slurmd.pid" "$STATE/slurmctld.pid" "$STATE/munge/munged.pid"; do
    if [ -f "$pidfile" ]; then
      pids+=("$(cat "$pidfile")")
      kill "${pids[-1]}" 2>/dev/null || true
      rm -f "$pidfile"
    fi
  done
  for _ in $(seq 30); do  # wait until they are gone, so that a following `start` starts fresh ones
    local alive=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.5
  done
  echo "slurm.sh: stopped"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: .ci/slurm.sh start|stop" >&2; exit 2 ;;
esac
