# Shell helpers of services.sh and kafka.sh, sourced by both. Set ME (the
# script's name, for messages) and APT_LOG (where apt-get writes) first.
# shellcheck shell=bash

log() { printf '%s: %s\n' "$ME" "$*" >&2; }
die() { printf '%s: ERROR: %s\n' "$ME" "$*" >&2; exit 1; }
# show the end of a log file on stderr (for failure messages)
tail_log() { [[ -s $1 ]] && { printf -- '--- last lines of %s ---\n' "$1"; tail -n 20 "$1"; } >&2 || true; }
have() { command -v "$1" >/dev/null 2>&1; }

# apt_install PACKAGE...: from Debian's packages. `apt-get update` runs once per
# run, the scripts this one starts included (DATABUS_APT_UPDATED is exported).
apt_install() {
	have apt-get || die "need to install $*, but apt-get is not available"
	export DEBIAN_FRONTEND=noninteractive
	mkdir -p "$(dirname "$APT_LOG")"
	if [[ ${DATABUS_APT_UPDATED:-0} != 1 ]]; then
		log "apt-get update (log: $APT_LOG)"
		apt-get update >>"$APT_LOG" 2>&1 || { tail_log "$APT_LOG"; die "apt-get update failed (log: $APT_LOG)"; }
		export DATABUS_APT_UPDATED=1
	fi
	log "apt-get install $* (log: $APT_LOG)"
	apt-get install -y --no-install-recommends "$@" >>"$APT_LOG" 2>&1 ||
		{ tail_log "$APT_LOG"; die "apt-get install $* failed (log: $APT_LOG)"; }
}
