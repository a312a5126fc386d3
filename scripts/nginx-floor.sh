#!/usr/bin/env bash
# Installs nginx, the benchmark's second floor, when it is missing: Debian's nginx-light (or
# nginx where this Debian has no nginx-light), and only when running as root. The bench itself
# never installs anything nor needs the network: it looks for an `nginx` binary, writes its own
# config to a temporary folder, and says "nginx floor: not available (why)" when there is none.
# (Where an init system runs package services, the package's own nginx service is left as the
# package sets it up; the bench does not use it.)
#   ./scripts/nginx-floor.sh && cargo run -p bench --release -- all
set -euo pipefail

ready() {
    local nginx
    nginx=$(command -v nginx 2>/dev/null) || { [ -x /usr/sbin/nginx ] && nginx=/usr/sbin/nginx; } || return 1
    echo "nginx floor: $("$nginx" -v 2>&1 | sed 's/^nginx version: //') at $nginx"
}

if ready; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "nginx floor: nginx is not installed and this is not root: install nginx-light (or nginx)" >&2
    exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "nginx floor: nginx is not installed and there is no apt-get here: install nginx" >&2
    exit 1
fi
apt-get update -qq
for package in nginx-light nginx; do
    # Read whole before it is searched: `grep -q` leaving early would end apt-cache with
    # SIGPIPE, which pipefail turns into "no candidate".
    policy=$(apt-cache policy "$package" 2>/dev/null || true)
    if grep -q '^ *Candidate: [^(]' <<<"$policy"; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$package"
        break
    fi
done
ready || { echo "nginx floor: neither nginx-light nor nginx could be installed" >&2; exit 1; }
