#!/usr/bin/env bash
# Walks the whole flow against a running `cargo run --release` with `curl --cert`:
# register → read (rotation) → update → delete, then the administrator's dcrm flow, then an
# API behind the shipped /api/ edge route (a throwaway upstream on 127.0.0.1:9000).
# Fails loudly on any unexpected status.
set -euo pipefail
cd "$(dirname "$0")/.."

BASE=${CERTGATE_URL:-https://localhost:8443}
CURL=(curl -sS --cacert certs/ca.pem)
CLIENT=(--cert certs/client1.pem --key certs/client1-key.pem)
ADMIN=(--cert certs/admin.pem --key certs/admin-key.pem)

fail() { echo "demo: FAILED: $*" >&2; exit 1; }
json() { python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }
# call EXPECTED_STATUS curl-args... : prints the body, checks the status.
call() {
  local want=$1; shift
  local out status
  out=$("${CURL[@]}" -w '\n%{http_code}' "$@") || fail "curl $*"
  status=${out##*$'\n'}
  body=${out%$'\n'*}
  [ "$status" = "$want" ] || fail "expected HTTP $want, got $status: $body"
}
step() { printf '\n== %s\n' "$*"; }

command -v python3 >/dev/null || fail "python3 is needed to read JSON"
"${CURL[@]}" -o /dev/null "$BASE/healthz" || fail "certgate is not running at $BASE (start it with: cargo run --release)"

step "register with client1's certificate (the registration token is bound to it)"
call 201 "${CLIENT[@]}" -H 'Content-Type: application/json' \
  -d '{"client_name":"demo","grant_types":["client_credentials"],"scope":"api"}' "$BASE/register"
echo "$body"
CLIENT_ID=$(json client_id <<<"$body")
TOKEN=$(json registration_access_token <<<"$body")
SECRET=$(json client_secret <<<"$body")

step "read: GET rotates the registration_access_token and the client_secret"
call 200 "${CLIENT[@]}" -H "Authorization: Bearer $TOKEN" "$BASE/register/$CLIENT_ID"
echo "$body"
NEW_TOKEN=$(json registration_access_token <<<"$body")
NEW_SECRET=$(json client_secret <<<"$body")
[ "$NEW_TOKEN" != "$TOKEN" ] || fail "token did not rotate"
[ "$NEW_SECRET" != "$SECRET" ] || fail "secret did not rotate"

step "the old token is dead at once"
call 401 "${CLIENT[@]}" -H "Authorization: Bearer $TOKEN" "$BASE/register/$CLIENT_ID"
echo "$body"

step "update: PUT replaces the metadata (and rotates again)"
call 200 "${CLIENT[@]}" -H "Authorization: Bearer $NEW_TOKEN" -H 'Content-Type: application/json' -X PUT \
  -d "{\"client_id\":\"$CLIENT_ID\",\"client_name\":\"demo, renamed\",\"grant_types\":[\"client_credentials\"],\"scope\":\"api\"}" \
  "$BASE/register/$CLIENT_ID"
echo "$body"
TOKEN=$(json registration_access_token <<<"$body")
SECRET=$(json client_secret <<<"$body")

step "the client gets an access token with its current secret"
call 200 -u "$CLIENT_ID:$SECRET" -d grant_type=client_credentials "$BASE/token"
echo "$body"

step "delete"
call 204 "${CLIENT[@]}" -H "Authorization: Bearer $TOKEN" -X DELETE "$BASE/register/$CLIENT_ID"
call 401 "${CLIENT[@]}" -H "Authorization: Bearer $TOKEN" "$BASE/register/$CLIENT_ID"
echo "deleted; its token answers 401"

step "admin: a dcrm token from the static 'admin' client (tls_client_auth, admin certificate)"
call 200 "${ADMIN[@]}" -d grant_type=client_credentials -d client_id=admin -d scope=dcrm "$BASE/token"
echo "$body"
DCRM=$(json access_token <<<"$body")

step "admin: register another client, then read it with the dcrm token (no rotation)"
call 201 "${CLIENT[@]}" -H 'Content-Type: application/json' \
  -d '{"client_name":"managed","grant_types":["client_credentials"]}' "$BASE/register"
CLIENT_ID=$(json client_id <<<"$body")
TOKEN=$(json registration_access_token <<<"$body")
call 200 "${ADMIN[@]}" -H "Authorization: Bearer $DCRM" "$BASE/register/$CLIENT_ID"
echo "$body"
call 200 "${CLIENT[@]}" -H "Authorization: Bearer $TOKEN" "$BASE/register/$CLIENT_ID"
echo "the client's own token still works after the admin read"

step "admin: delete it with the dcrm token"
call 204 "${ADMIN[@]}" -H "Authorization: Bearer $DCRM" -X DELETE "$BASE/register/$CLIENT_ID"
call 404 "${ADMIN[@]}" -H "Authorization: Bearer $DCRM" "$BASE/register/$CLIENT_ID"
echo "deleted"

step "protect an API: a local upstream on 127.0.0.1:9000 behind the shipped /api/ route"
API_DIR=$(mktemp -d)
echo '{"orders":[]}' > "$API_DIR/orders.json"
python3 -m http.server 9000 --bind 127.0.0.1 --directory "$API_DIR" >/dev/null 2>&1 &
API_PID=$!
trap 'kill $API_PID 2>/dev/null || true; rm -rf "$API_DIR"' EXIT
for _ in $(seq 1 50); do curl -s -o /dev/null http://127.0.0.1:9000/ && break; sleep 0.1; done
call 201 "${CLIENT[@]}" -H 'Content-Type: application/json' \
  -d '{"grant_types":["client_credentials"],"scope":"api","token_endpoint_auth_method":"tls_client_auth","tls_client_auth_subject_dn":"CN=client1,O=certgate dev"}' \
  "$BASE/register"
CLIENT_ID=$(json client_id <<<"$body")
call 200 "${CLIENT[@]}" -d grant_type=client_credentials -d client_id="$CLIENT_ID" "$BASE/token"
API_TOKEN=$(json access_token <<<"$body")
call 200 "${CLIENT[@]}" -H "Authorization: Bearer $API_TOKEN" "$BASE/api/orders.json"
echo "$body"
call 401 -H "Authorization: Bearer $API_TOKEN" "$BASE/api/orders.json"
echo "without the certificate the token is bound to: $body"
call 401 --cert certs/client2.pem --key certs/client2-key.pem -H "Authorization: Bearer $API_TOKEN" "$BASE/api/orders.json"
echo "with another certificate: refused too"

printf '\ndemo: all steps passed\n'
