#!/usr/bin/env bash
# System packages the tests drive for real: Debian's chromium (the lineage UI in a browser,
# through Playwright; no browser is ever downloaded), PostgreSQL (a throwaway cluster for
# the production storage path), faketime (libfaketime: commands run at a date of a test's
# choosing; scripts/test-on-date.sh runs the whole suite under it), nginx (the load balancer in
# front of several inference-server replicas) and prometheus (the rollout's analysis over every
# replica's metrics). The tests start nginx and prometheus themselves on loopback, never the
# system services. Installs only what is missing; needs root or sudo for that.
set -euo pipefail

missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
if ! command -v initdb >/dev/null && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  missing+=(postgresql)
fi
command -v faketime >/dev/null || missing+=(faketime)
[ -x /usr/sbin/nginx ] || command -v nginx >/dev/null || missing+=(nginx)
command -v prometheus >/dev/null || missing+=(prometheus)
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=""
if [ "$(id -u)" != 0 ]; then
  if ! command -v sudo >/dev/null; then
    echo "test-deps: missing ${missing[*]}; install them (apt-get install ${missing[*]}) as root" >&2
    exit 1
  fi
  sudo=sudo
fi
echo "test-deps: installing ${missing[*]} (apt-get)"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
