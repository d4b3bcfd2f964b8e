#!/usr/bin/env bash
# The registration guide (docs/open-banking.md), run end to end with curl --cert against a
# running `cargo run -- --config config/certgate-open-banking.toml`: a statement signed by the
# dev directory, registration with client1's certificate, a token by tls_client_auth, and
# each refusal the guide explains. Fails loudly on any unexpected answer.
set -euo pipefail
cd "$(dirname "$0")/.."

BASE=${CERTGATE_URL:-https://localhost:8443}
CURL=(curl -sS --cacert certs/ca.pem)
CLIENT1=(--cert certs/client1.pem --key certs/client1-key.pem)

fail() { echo "open-banking-demo: FAILED: $*" >&2; exit 1; }
json() { python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }
# call EXPECTED_STATUS curl-args... : prints the body, checks the status.
call() {
  local want=$1; shift
  local out status
  out=$("${CURL[@]}" -w '\n%{http_code}' "$@") || fail "curl $*"
  status=${out##*$'\n'}
  body=${out%$'\n'*}
  echo "$body"
  [ "$status" = "$want" ] || fail "expected HTTP $want, got $status: $body"
}
# expect_error STATUS ERROR curl-args...
expect_error() {
  local want=$1 error=$2; shift 2
  call "$want" "$@"
  [ "$(json error <<<"$body")" = "$error" ] || fail "expected error $error: $body"
}
step() { printf '\n== %s\n' "$*"; }

command -v python3 >/dev/null || fail "python3 is needed to read JSON"
"${CURL[@]}" -o /dev/null "$BASE/.well-known/oauth-authorization-server" \
  || fail "certgate is not running at $BASE (start it with: cargo run -- --config config/certgate-open-banking.toml)"

step "the directory signs a statement about the software"
SSA=$(scripts/sign-statement.sh <<JSON
{
  "iss": "https://directory.dev.example",
  "iat": $(date +%s),
  "jti": "$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')",
  "software_id": "example-tpp-app",
  "software_version": "1.0",
  "client_name": "Example TPP",
  "token_endpoint_auth_method": "tls_client_auth",
  "tls_client_auth_subject_dn": "CN=client1,O=certgate dev",
  "grant_types": ["client_credentials"],
  "scope": "accounts payments"
}
JSON
)
echo "$SSA"

step "register with the certificate the statement names"
call 201 "${CLIENT1[@]}" -H 'Content-Type: application/json' \
  -d "{\"software_statement\": \"$SSA\"}" "$BASE/register"
CLIENT_ID=$(json client_id <<<"$body")
[ "$(json software_statement <<<"$body")" = "$SSA" ] || fail "the statement was not repeated"
[ "$(json software_id <<<"$body")" = "example-tpp-app" ] || fail "the statement's claims were not registered"

step "the client gets an access token with its certificate (tls_client_auth)"
call 200 "${CLIENT1[@]}" -d grant_type=client_credentials -d "client_id=$CLIENT_ID" \
  -d scope=accounts "$BASE/token"

step "the statement's claims win over the request's: a scope the statement does not grant stays out"
call 201 "${CLIENT1[@]}" -H 'Content-Type: application/json' \
  -d "{\"software_statement\": \"$SSA\", \"scope\": \"accounts payments admin\"}" "$BASE/register"
[ "$(json scope <<<"$body")" = "accounts payments" ] || fail "the request's scope won: $body"

step "refused: no statement (require_software_statement = true)"
expect_error 400 invalid_software_statement "${CLIENT1[@]}" -H 'Content-Type: application/json' \
  -d '{"client_name": "no statement", "grant_types": ["client_credentials"]}' "$BASE/register"

step "refused: a statement whose payload was changed after signing"
IFS=. read -r H P S <<<"$SSA"
FORGED_PAYLOAD=$(printf '%s' "$P" | tr -- '-_' '+/' | python3 -c 'import sys,base64,json; p=sys.stdin.read(); c=json.loads(base64.b64decode(p+"="*(-len(p)%4))); c["scope"]="accounts payments admin"; sys.stdout.write(base64.urlsafe_b64encode(json.dumps(c).encode()).decode().rstrip("="))')
expect_error 400 invalid_software_statement "${CLIENT1[@]}" -H 'Content-Type: application/json' \
  -d "{\"software_statement\": \"$H.$FORGED_PAYLOAD.$S\"}" "$BASE/register"

step "refused: a statement from a directory certgate does not trust"
ELSEWHERE=$(scripts/sign-statement.sh <<JSON
{"iss": "https://directory.elsewhere.example", "iat": $(date +%s), "software_id": "x",
 "token_endpoint_auth_method": "tls_client_auth",
 "tls_client_auth_subject_dn": "CN=client1,O=certgate dev", "grant_types": ["client_credentials"]}
JSON
)
expect_error 400 unapproved_software_statement "${CLIENT1[@]}" -H 'Content-Type: application/json' \
  -d "{\"software_statement\": \"$ELSEWHERE\"}" "$BASE/register"

step "refused: a valid statement presented with another certificate"
expect_error 400 invalid_client_metadata --cert certs/client2.pem --key certs/client2-key.pem \
  -H 'Content-Type: application/json' -d "{\"software_statement\": \"$SSA\"}" "$BASE/register"

printf '\nopen-banking-demo: all steps passed\n'
