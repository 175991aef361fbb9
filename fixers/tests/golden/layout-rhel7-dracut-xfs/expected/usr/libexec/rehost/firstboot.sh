#!/bin/sh
# Written by rehost: removes the guest tools of the hypervisor this VM was moved from,
# once, on its first boot on KVM, then deletes itself. Safe to delete by hand.
PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PATH
LOG=/var/log/rehost-firstboot.log
DONE=/var/lib/rehost/firstboot.done
TRIES=/var/lib/rehost/firstboot.tries
MAX_TRIES=3
PACKAGES='open-vm-tools open-vm-tools-desktop open-vm-tools-sdmp open-vm-tools-containerinfo open-vm-tools-salt-minion VMwareTools'
UNINSTALLERS=''
MASKED='vmtoolsd.service'
SELF_FILES='/etc/systemd/system/multi-user.target.wants/rehost-firstboot.service /etc/systemd/system/rehost-firstboot.service /usr/libexec/rehost/firstboot.sh'
SELF_DIRS='/usr/libexec/rehost'

exec >>"$LOG" 2>&1 </dev/null
log() { echo "rehost-firstboot: $(date '+%Y-%m-%d %H:%M:%S') $*"; }
log "start"
mkdir -p "${DONE%/*}"

installed=
if [ -f /var/lib/dpkg/status ] && command -v dpkg-query >/dev/null 2>&1; then
    for p in $PACKAGES; do
        case $(dpkg-query -W -f='${Status}' "$p" 2>/dev/null) in
            *" installed") installed="$installed $p" ;;
        esac
    done
elif command -v rpm >/dev/null 2>&1; then
    for p in $PACKAGES; do
        rpm -q "$p" >/dev/null 2>&1 && installed="$installed $p"
    done
fi

status=0
if [ -n "$installed" ]; then
    log "removing:$installed"
    if command -v apt-get >/dev/null 2>&1; then
        DEBIAN_FRONTEND=noninteractive apt-get purge -y -o DPkg::Lock::Timeout=300 $installed || status=$?
    elif command -v dnf >/dev/null 2>&1; then
        dnf remove -y --disablerepo='*' $installed || status=$?
    elif command -v yum >/dev/null 2>&1; then
        yum remove -y --disablerepo='*' $installed || status=$?
    elif command -v zypper >/dev/null 2>&1; then
        zypper --non-interactive --no-refresh remove $installed || status=$?
    else
        log "no apt-get, dnf, yum or zypper to remove the packages with"
        status=127
    fi
else
    log "no package to remove is installed"
fi
for u in $UNINSTALLERS; do
    [ -x "$u" ] || continue
    log "running $u"
    "$u" || status=$?
done

if [ "$status" -ne 0 ]; then
    tries=$(cat "$TRIES" 2>/dev/null)
    case $tries in ''|*[!0-9]*) tries=0 ;; esac
    tries=$((tries + 1))
    echo "$tries" >"$TRIES"
    if [ "$tries" -lt "$MAX_TRIES" ]; then
        log "failed with status $status (try $tries of $MAX_TRIES); trying again next boot"
        exit 1
    fi
    log "failed with status $status $tries times; giving up, the masks stay"
else
    # A mask whose unit file left with its package has nothing left to hide.
    for u in $MASKED; do
        m=/etc/systemd/system/$u
        [ -L "$m" ] && [ "$(readlink "$m")" = /dev/null ] || continue
        if [ ! -e "/usr/lib/systemd/system/$u" ] && [ ! -e "/lib/systemd/system/$u" ]; then
            rm -f "$m" && log "unmasked $u"
        fi
    done
fi

touch "$DONE"
rm -f "$TRIES" $SELF_FILES
for d in $SELF_DIRS; do
    rmdir "$d" 2>/dev/null
done
log "done"
exit 0
