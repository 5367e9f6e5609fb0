#!/bin/bash
# container.sh - boot a real systemd (as PID 1 of a systemd-nspawn container)
# on a host whose PID 1 is NOT systemd, for tests/test_systemd.py (see
# tests/sysd.py). Also handy by hand: NAME=dev tests/systemd/container.sh boot.
#
# Usage (as root):
#   container.sh build              # debootstrap the cached rootfs (once)
#   container.sh boot [nspawn-args] # build if needed, boot, wait for systemctl
#   container.sh exec CMD...        # run CMD inside the booted container
#   container.sh shell              # interactive shell inside
#   container.sh status             # show leader pid / system state
#   container.sh teardown           # halt, unmount overlay, remove state
#   container.sh destroy            # teardown + delete the cached rootfs
#
# Environment knobs:
#   SYSD_DIR   state dir                (default /tmp/sysd)
#   NAME       container/machine name   (default sysdtest; use distinct names to run several)
#   MIRROR     Debian mirror            (default: the one apt uses, from /etc/apt/sources.list*)
#   SUITE      Debian suite             (default bookworm)
#   INCLUDE    extra packages           (default systemd,systemd-sysv,dbus,python3,python3-venv)
#   BIND       space-separated --bind= specs, e.g. "/src/proj:/opt/proj"
#   BIND_RO    space-separated --bind-ro= specs
#   PRIVATE_NETWORK=1  give the container its own (loopback-only) network namespace
#   HOST_CA=0          don't copy the host's CA bundle into the container (default: copy)
#   BOOT_TIMEOUT       seconds to wait for boot (default 60)
#
# Every boot gets a fresh, throw-away root: an overlayfs whose lower layer is
# the cached rootfs and whose upper layer lives in $SYSD_DIR/run/$NAME.
set -euo pipefail

SYSD_DIR=${SYSD_DIR:-/tmp/sysd}
NAME=${NAME:-sysdtest}
SUITE=${SUITE:-bookworm}
INCLUDE=${INCLUDE:-systemd,systemd-sysv,dbus,python3,python3-venv}
BOOT_TIMEOUT=${BOOT_TIMEOUT:-60}
ROOTFS=$SYSD_DIR/rootfs
RUN=$SYSD_DIR/run/$NAME
MERGED=$RUN/merged
# Per-container host cgroup(s). This host: v1/hybrid (name=systemd v1 + cgroup2 at .../unified).
if mountpoint -q /sys/fs/cgroup/systemd 2>/dev/null; then
    CG_SYSTEMD=/sys/fs/cgroup/systemd/sysd-$NAME
    CG_UNIFIED=""; mountpoint -q /sys/fs/cgroup/unified 2>/dev/null && CG_UNIFIED=/sys/fs/cgroup/unified/sysd-$NAME
else   # pure cgroup2 host (untested here)
    CG_SYSTEMD=/sys/fs/cgroup/sysd-$NAME; CG_UNIFIED=""
fi
STAMP="$SUITE $INCLUDE"

log() { printf '[%s] %s\n' "$(date +%T.%N | cut -c1-12)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN{printf "%.2f", b-a}'; }

[ "$(id -u)" = 0 ] || die "must run as root"

detect_mirror() {
    if [ -n "${MIRROR:-}" ]; then echo "$MIRROR"; return; fi
    local m
    m=$(awk '/^URIs:/ && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
    [ -n "$m" ] || m=$(awk '/^deb / && $0 !~ /security/ {for(i=2;i<=NF;i++) if ($i ~ /^https?:/) {print $i; exit}}' /etc/apt/sources.list 2>/dev/null || true)
    [ -n "$m" ] || die "no Debian mirror found in apt sources; set MIRROR"
    echo "$m"
}

ensure_host_tools() {
    command -v systemd-nspawn >/dev/null && command -v debootstrap >/dev/null && return
    log "installing systemd-container + debootstrap on the host"
    apt-get update -qq
    # --no-install-recommends: avoids libnss-mymachines, which would edit /etc/nsswitch.conf.
    # NB: systemd-container pins systemd to the same version, so apt may upgrade the host systemd pkg.
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends systemd-container debootstrap >/dev/null
}

build_rootfs() {
    if [ -f "$ROOTFS/.sysd-built" ] && [ "$(cat "$ROOTFS/.sysd-built")" = "$STAMP" ]; then
        log "rootfs cached at $ROOTFS"; return
    fi
    [ -n "$(ls "$SYSD_DIR/run" 2>/dev/null)" ] && die "rootfs needs (re)build but containers are running: $(ls "$SYSD_DIR/run")"
    local t0 mirror; t0=$(now); mirror=$(detect_mirror)
    rm -rf "$ROOTFS"; mkdir -p "$SYSD_DIR"
    log "debootstrap $SUITE from $mirror (minbase + $INCLUDE)"
    debootstrap --variant=minbase --include="$INCLUDE" "$SUITE" "$ROOTFS" "$mirror" \
        >"$SYSD_DIR/debootstrap.log" 2>&1 || die "debootstrap failed, see $SYSD_DIR/debootstrap.log"
    # Per-boot machine id (systemd then derives a transient one from nspawn's random container
    # UUID). dbus' copy must go too, or systemd falls back to it and every boot gets the same id.
    : > "$ROOTFS/etc/machine-id"; rm -f "$ROOTFS/var/lib/dbus/machine-id"
    # No surprise background jobs during tests.
    for u in apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer e2scrub_all.timer \
             fstrim.timer e2scrub_reap.service systemd-pstore.service getty@tty1.service; do
        ln -sf /dev/null "$ROOTFS/etc/systemd/system/$u"
    done
    rm -f "$ROOTFS/etc/hostname"          # written per boot (= $NAME)
    chroot "$ROOTFS" apt-get clean
    echo "$STAMP" > "$ROOTFS/.sysd-built"
    log "rootfs built in $(since "$t0")s, size $(du -sh "$ROOTFS" | cut -f1)"
}

cmd_build() {
    ensure_host_tools
    # One build at a time: a second run waits, then finds the rootfs cached.
    mkdir -p "$SYSD_DIR"
    ( flock 9; build_rootfs ) 9>"$SYSD_DIR/.build.lock"
}

alive() {   # running (exists and is not a zombie)
    local st; st=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
    [ -n "$st" ] && [ "$st" != Z ] && [ "$st" != X ]
}

cg_pids() {  # every process of this container (nspawn --keep-unit puts them under our cgroup)
    [ -d "$CG_SYSTEMD" ] && find "$CG_SYSTEMD" -name cgroup.procs -exec cat {} + 2>/dev/null | sort -un
}

leader_pid() {
    # PID of the container's systemd (PID 1 inside) = the child of systemd-nspawn.
    local np; np=$(cat "$RUN/nspawn.pid" 2>/dev/null) || return 1
    alive "$np" || return 1
    # (early on, the child is nspawn's short-lived "outer child" still in the host
    #  namespaces, so require that it is PID 1 in its own pid namespace: NSpid "<host> 1")
    local l; for l in $(ps -o pid= --ppid "$np"); do
        if awk '/^NSpid:/ { exit !(NF == 3 && $3 == 1) }' "/proc/$l/status" 2>/dev/null; then
            echo "$l"; return 0
        fi
    done
    return 1
}

in_ct() {   # run a command inside the container's namespaces with a clean env
    local l; l=$(leader_pid) || die "container $NAME not running"
    nsenter -t "$l" -a -- /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        TERM="${TERM:-dumb}" LANG=C.UTF-8 HOME=/root SYSTEMD_PAGER= SYSTEMD_COLORS=0 "$@"
}

cmd_boot() {
    cmd_build
    { leader_pid || [ -n "$(cg_pids)" ]; } >/dev/null 2>&1 && die "container $NAME already running (teardown first)"
    mountpoint -q "$MERGED" 2>/dev/null && umount "$MERGED"
    rm -rf "$RUN"; mkdir -p "$RUN/upper" "$RUN/work" "$MERGED"
    mount -t overlay "overlay-$NAME" -o "lowerdir=$ROOTFS,upperdir=$RUN/upper,workdir=$RUN/work" "$MERGED"

    # Trust the same CAs as the host (this VM's egress goes through a TLS-intercepting proxy whose
    # CA lives in /usr/local/share/ca-certificates; without this, pip fails CERTIFICATE_VERIFY_FAILED).
    if [ "${HOST_CA:-1}" = 1 ] && [ -f /etc/ssl/certs/ca-certificates.crt ]; then
        cp /etc/ssl/certs/ca-certificates.crt "$MERGED/etc/ssl/certs/ca-certificates.crt"
    fi
    echo "$NAME" > "$MERGED/etc/hostname"

    # Own cgroup per container (nspawn --keep-unit then creates <cg>/payload + <cg>/supervisor),
    # so several containers don't collide at the root of the host hierarchies.
    mkdir -p "$CG_SYSTEMD"; [ -n "$CG_UNIFIED" ] && mkdir -p "$CG_UNIFIED"

    local args=(-D "$MERGED" -M "$NAME" -b --register=no --keep-unit --console=pipe -q
                --resolv-conf=copy-host --timezone=off)
    [ "${PRIVATE_NETWORK:-0}" = 1 ] && args+=(--private-network)
    local b; for b in ${BIND:-}; do args+=("--bind=$b"); done
    for b in ${BIND_RO:-}; do args+=("--bind-ro=$b"); done
    args+=("$@")

    local t0; t0=$(now)
    log "booting: systemd-nspawn ${args[*]}"
    (
        echo "$BASHPID" > "$CG_SYSTEMD/cgroup.procs"
        [ -n "$CG_UNIFIED" ] && echo "$BASHPID" > "$CG_UNIFIED/cgroup.procs"
        exec setsid systemd-nspawn "${args[@]}" </dev/null >"$RUN/nspawn.log" 2>&1
    ) &
    echo $! > "$RUN/nspawn.pid"

    local l="" deadline=$(( $(date +%s) + BOOT_TIMEOUT ))
    until l=$(leader_pid); do
        alive "$(cat "$RUN/nspawn.pid")" || { cat "$RUN/nspawn.log" >&2; die "nspawn exited"; }
        [ "$(date +%s)" -lt $deadline ] || die "no leader pid"
        sleep 0.05
    done
    echo "$l" > "$RUN/leader.pid"
    # Wait until PID 1 answers on its private socket and boot is finished.
    local st=""
    # ('offline' = systemctl could not reach PID 1 yet; 'starting' = boot jobs still running)
    until st=$(in_ct timeout 10 systemctl is-system-running --wait 2>/dev/null || true)
          case "$st" in running|degraded|maintenance) true ;; *) false ;; esac; do
        leader_pid >/dev/null || { cat "$RUN/nspawn.log" >&2; die "container died during boot"; }
        [ "$(date +%s)" -lt $deadline ] || die "boot timeout (state=$st)"
        sleep 0.1
    done
    log "container $NAME up: leader pid $l, system state '$st', $(since "$t0")s since nspawn start"
    [ "$st" = running ] || in_ct systemctl --failed --no-pager >&2 || true
}

cmd_teardown() {
    local np t0 i p; t0=$(now)
    np=$(cat "$RUN/nspawn.pid" 2>/dev/null || true)
    if [ -n "$np" ] && alive "$np"; then
        kill -TERM "$np"                         # nspawn: 1st SIGTERM = clean halt of the container
        for i in $(seq 1 200); do alive "$np" || break; sleep 0.05; done
        if alive "$np"; then
            log "clean halt took >10s, 2nd SIGTERM (immediate termination)"; kill -TERM "$np" || true
            for i in $(seq 1 40); do alive "$np" || break; sleep 0.05; done
            alive "$np" && kill -KILL "$np"
        fi
        log "container stopped in $(since "$t0")s"
    fi
    # Leftovers, e.g. if nspawn itself was SIGKILLed its container keeps running (orphaned to
    # PID 1). Everything the container ran is in our cgroup, so kill exactly those PIDs.
    for i in $(seq 1 50); do
        p=$(cg_pids); [ -z "$p" ] && break
        [ "$i" = 1 ] && log "killing leftover container processes: $(echo $p)"
        kill -KILL $p 2>/dev/null || true; sleep 0.1
    done
    mountpoint -q "$MERGED" 2>/dev/null && umount "$MERGED"
    rm -rf "$RUN"
    # nspawn refuses to rm this on a non-tmpfs /run ("Attempted to remove disk file system ...")
    rm -rf "/run/systemd/nspawn/propagate/$NAME"
    local cg; for cg in "$CG_SYSTEMD" "$CG_UNIFIED"; do
        [ -n "$cg" ] && [ -d "$cg" ] && find "$cg" -depth -type d -exec rmdir {} \; 2>/dev/null || true
    done
    log "teardown done in $(since "$t0")s"
}

case "${1:-}" in
    build)    cmd_build ;;
    boot)     shift; cmd_boot "$@" ;;
    exec)     shift; in_ct "$@" ;;
    shell)    in_ct /bin/bash -l ;;
    status)   l=$(leader_pid) || { echo "not running"; exit 1; }
              echo "leader pid $l"; in_ct systemctl is-system-running || true ;;
    teardown|stop) cmd_teardown ;;
    destroy)  cmd_teardown; [ -z "$(ls "$SYSD_DIR/run" 2>/dev/null)" ] || die "other containers still running"
              rm -rf "$ROOTFS" ;;
    *) sed -n '2,25p' "$0"; exit 2 ;;
esac
