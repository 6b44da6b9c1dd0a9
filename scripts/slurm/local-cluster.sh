#!/usr/bin/env bash
# A real single-node Slurm cluster on this machine (localhost, all its CPUs), for CI and for
# trying scripts/slurm/ before a real cluster: installs Debian's slurm-wlm and munge when they
# are missing (needs root and apt), writes a minimal slurm.conf, starts munged, slurmctld and
# slurmd, and waits until the node is idle. Idempotent: a running cluster is left as it is.
#
#   scripts/slurm/local-cluster.sh          # start (prints the node line)
#   scripts/slurm/local-cluster.sh stop     # stop the daemons
set -euo pipefail

conf=/etc/slurm/slurm.conf
if [[ "${1:-start}" == stop ]]; then
    pkill -x slurmd || true
    pkill -x slurmctld || true
    pkill -x munged || true
    exit 0
fi

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    echo "local-cluster: installing slurm-wlm and munge (Debian packages)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
fi

if scontrol ping 2>/dev/null | grep -q 'is UP' && sinfo -h -o '%T' 2>/dev/null | grep -qx idle; then
    echo "local-cluster: already running"
    sinfo -N -o '%N %c %T'
    exit 0
fi

host=$(hostname -s)
# slurmd's own reading of the machine (CPUs, sockets, memory) is the node's line.
# Addresses are given, so nothing depends on the machine's name resolving.
node="$(slurmd -C | head -1) NodeAddr=127.0.0.1"
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/munge
cat > "$conf" <<CONF
# Written by scripts/slurm/local-cluster.sh: one node, this machine; no accounting, no cgroups
# (containers rarely delegate them), root as Slurm's user (a throw-away CI machine).
ClusterName=gatys-local
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmdSpoolDir=/var/spool/slurmd
StateSaveLocation=/var/spool/slurmctld
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MinJobAge=3600
$node State=UNKNOWN
PartitionName=local Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF

if [[ ! -s /etc/munge/munge.key ]]; then
    mkdir -p /etc/munge
    dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
    chown munge:munge /etc/munge/munge.key
    chmod 400 /etc/munge/munge.key
fi
chown munge:munge /run/munge
pgrep -x munged >/dev/null || runuser -u munge -- /usr/sbin/munged
pgrep -x slurmctld >/dev/null || slurmctld
pgrep -x slurmd >/dev/null || slurmd

for _ in $(seq 60); do
    if sinfo -h -o '%T' 2>/dev/null | grep -qx idle; then
        sinfo -N -o '%N %c %T'
        exit 0
    fi
    sleep 1
done
echo "local-cluster: the node did not become idle within 60 s" >&2
sinfo -N -o '%N %c %T %E' >&2 || true
tail -n 20 /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log >&2 || true
exit 1
