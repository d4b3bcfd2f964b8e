#!/usr/bin/env bash
# Installs what tests/real_proxies.rs runs: nginx, HAProxy and curl, from Debian/Ubuntu
# packages. Idempotent: for CI (.ci/run) and for developers, once.
#
#   scripts/install-proxies.sh
#   cargo test --features real-proxies --test real_proxies
set -euo pipefail

missing=()
for program in nginx haproxy curl; do
  # Debian puts nginx and haproxy in /usr/sbin, off an ordinary user's PATH.
  command -v "$program" >/dev/null || [ -x "/usr/sbin/$program" ] || missing+=("$program")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-proxies: nginx, haproxy and curl are installed"
  exit 0
fi

command -v apt-get >/dev/null || {
  echo "install-proxies: no apt-get here; install ${missing[*]} with your package manager" >&2
  exit 1
}
sudo=()
[ "$(id -u)" -eq 0 ] || sudo=(sudo)
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
echo "install-proxies: installed ${missing[*]}"
