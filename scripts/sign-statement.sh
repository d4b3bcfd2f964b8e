#!/usr/bin/env bash
# Signs a software statement (RFC 7591 §2.3) the way a directory does, for development:
# reads the statement's claims (a JSON object) on stdin and prints the compact JWS, signed
# with EdDSA (Ed25519). Needs only openssl (1.1.1 or later).
#
#   scripts/sign-statement.sh [KEY] [KID] < claims.json
#
# KEY defaults to certs/directory-key.pem, the dev directory's key (public: development only);
# KID to dev-directory-1, the kid of its public key in certs/directory-jwks.json. The claims
# should carry "iss" (the directory, as listed in registration.software_statement_issuers)
# and "iat"; the script adds neither.
set -euo pipefail
cd "$(dirname "$0")/.."
key=${1:-certs/directory-key.pem}
kid=${2:-dev-directory-1}

b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }

claims=$(cat)
header=$(printf '{"alg":"EdDSA","typ":"JWT","kid":"%s"}' "$kid" | b64url)
payload=$(printf '%s' "$claims" | b64url)
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
printf '%s.%s' "$header" "$payload" > "$tmp"
signature=$(openssl pkeyutl -sign -inkey "$key" -rawin -in "$tmp" | b64url)
printf '%s.%s.%s\n' "$header" "$payload" "$signature"
