#!/usr/bin/env bash
# Installs the programs the feature-gated tests run, from Debian/Ubuntu packages: nginx,
# HAProxy and curl (tests/real_proxies.rs, feature real-proxies) and the PostgreSQL server
# (tests/postgres.rs, feature postgres: each test starts a throwaway cluster with initdb and
# pg_ctl, no systemd). Idempotent: for CI (.ci/run) and for developers, once.
#
#   scripts/install-test-deps.sh
#   cargo test --features real-proxies,postgres
set -euo pipefail

missing=()
for program in nginx haproxy curl; do
  # Debian puts nginx and haproxy in /usr/sbin, off an ordinary user's PATH.
  command -v "$program" >/dev/null || [ -x "/usr/sbin/$program" ] || missing+=("$program")
done
# The server binaries live under /usr/lib/postgresql/<version>/bin.
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(postgresql)
command -v psql >/dev/null || missing+=(postgresql-client)
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-test-deps: nginx, haproxy, curl and postgresql are installed"
  exit 0
fi

command -v apt-get >/dev/null || {
  echo "install-test-deps: no apt-get here; install ${missing[*]} with your package manager" >&2
  exit 1
}
sudo=()
[ "$(id -u)" -eq 0 ] || sudo=(sudo)
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
echo "install-test-deps: installed ${missing[*]}"
