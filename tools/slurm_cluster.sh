#!/usr/bin/env bash
# A single-node Slurm cluster on this machine, for the study's Slurm test (tests/test_slurm.py) and for trying
# `study.py --executor slurm` without a cluster. Needs root and Debian's packages:
#
#   bash tools/slurm_cluster.sh install   # apt-get install slurm-wlm munge (about 20 s once apt's lists exist)
#   bash tools/slurm_cluster.sh start     # munged, slurmctld, slurmd; waits until the node takes jobs
#   bash tools/slurm_cluster.sh stop      # stops the three daemons by their own pid files
#   bash tools/slurm_cluster.sh status
#
# One partition ("study") of one node with this machine's cores, each core a consumable resource, so jobs of one
# CPU run side by side. Jobs may be requeued (what a preemption or submitit's time-limit handling does).
# The configuration is written to /etc/slurm/slurm.conf (where every Slurm command looks), and refused if a file
# that this script did not write is there. State, logs and pid files live in $SLURM_STATE (default
# /var/tmp/study-slurm).
set -euo pipefail

STATE=${SLURM_STATE:-/var/tmp/study-slurm}
CONF=/etc/slurm/slurm.conf
MARK="# written by tools/slurm_cluster.sh"
MUNGE_PID=/run/munge/munged.pid

die() { echo "slurm_cluster.sh: $*" >&2; exit 1; }

write_conf() {
    local host cpus mem
    host=$(hostname -s)
    cpus=$(nproc)
    mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 * 9 / 10 ))
    if [[ -e $CONF ]] && ! grep -qF "$MARK" "$CONF"; then
        die "$CONF exists and was not written by this script; not touching it"
    fi
    mkdir -p /etc/slurm "$STATE/ctld" "$STATE/d" "$STATE/log"
    cat > "$CONF" <<EOF
$MARK
ClusterName=study
SlurmctldHost=$host
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
JobRequeue=1
# scancel and requeue: SIGTERM (which a submitit job ignores, waiting for its own signal), SIGKILL 2 s later
KillWait=2
SchedulerType=sched/backfill
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=study Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
}

start() {
    command -v slurmctld >/dev/null && command -v munged >/dev/null || die "slurm-wlm and munge are not installed (run: bash $0 install)"
    [[ $(id -u) == 0 ]] || die "start needs root"
    write_conf
    # slurmd finds its node by the host name: make sure it resolves (a fresh container may not list itself)
    getent hosts "$(hostname -s)" >/dev/null || echo "127.0.0.1 $(hostname -s)" >> /etc/hosts
    if [[ ! -s /etc/munge/munge.key ]]; then
        mungekey --create --force >/dev/null 2>&1 || dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=128 2>/dev/null
        chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
    fi
    mkdir -p /run/munge /var/log/munge /var/lib/munge && chown munge:munge /run/munge /var/log/munge /var/lib/munge
    if ! { [[ -f $MUNGE_PID ]] && kill -0 "$(cat $MUNGE_PID)" 2>/dev/null; }; then
        runuser -u munge -- /usr/sbin/munged
    fi
    for d in slurmctld slurmd; do
        pidfile=$STATE/$d.pid
        if [[ -f $pidfile ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then continue; fi
        /usr/sbin/$d
    done
    for _ in $(seq 60); do  # the node registers within a few seconds
        if sinfo -h -o %t 2>/dev/null | grep -qE '^(idle|mix|alloc)$'; then
            echo "slurm: one node ($(nproc) CPUs), partition 'study', up"; return 0
        fi
        sleep 0.5
    done
    die "the node did not come up; see $STATE/log/"
}

stop() {
    for pidfile in "$STATE/slurmd.pid" "$STATE/slurmctld.pid" "$MUNGE_PID"; do
        [[ -f $pidfile ]] || continue
        pid=$(cat "$pidfile")
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    done
    echo "slurm: stopped"
}

case ${1:-} in
    install) apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null ;;
    start) start ;;
    stop) stop ;;
    status) sinfo ;;
    -h | --help) echo "usage: $0 install|start|stop|status"; sed -n '2,/^set -/{/^set -/d;s/^# \{0,1\}//;p}' "$0" ;;
    *) die "usage: $0 install|start|stop|status" ;;
esac
