#!/usr/bin/env bash
# Checks the OpenAPI document against a real server (docs/api.md, "The OpenAPI document"):
# openapi-spec-validator validates /openapi.json, then schemathesis sends generated requests to
# every operation (embedded store, `[auth]` with one token holding every scope, port 0) and fails
# on a 5xx or on an answer outside the document (status code, content type, body schema, ...).
#
#   scripts/openapi-check.sh            # short form (CI): 15 examples per operation
#   scripts/openapi-check.sh 300        # long form
#
# Needs `pip install schemathesis openapi-spec-validator` and a built target/debug/runyard
# (RUNYARD=... for another binary).
set -euo pipefail
cd "$(dirname "$0")/.."
EXAMPLES=${1:-15}
RUNYARD=${RUNYARD:-target/debug/runyard}
WORK=$(mktemp -d)
TOKEN="ry_openapi_check_$(python3 -c 'import secrets; print(secrets.token_hex(16))')"
SHA=$(printf '%s' "$TOKEN" | sha256sum | cut -d' ' -f1)
cat >"$WORK/runyard.toml" <<TOML
data_dir = "$WORK/data"
[[runners]]
kind = "service"
types = ["runyard.*"]
[auth]
[[auth.tokens]]
name = "openapi-check"
sha256 = "$SHA"
scopes = ["jobs:submit", "jobs:read", "jobs:cancel", "schedules:write", "signals:write", "admin"]
TOML
"$RUNYARD" serve --config "$WORK/runyard.toml" --listen 127.0.0.1:0 >"$WORK/server.log" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null || true; rm -rf "$WORK"' EXIT
URL=""
for _ in $(seq 1 200); do
  ADDR=$(grep -o 'addr=[0-9.:]*' "$WORK/server.log" | head -1 | cut -d= -f2 || true)
  if [ -n "$ADDR" ] && curl -fsS "http://$ADDR/health" >/dev/null 2>&1; then
    URL="http://$ADDR"
    break
  fi
  sleep 0.1
done
[ -n "$URL" ] || { echo "server did not start:"; cat "$WORK/server.log"; exit 1; }
curl -fsS "$URL/openapi.json" >"$WORK/openapi.json"
python3 -m openapi_spec_validator "$WORK/openapi.json"
# Streams never end and are left out: the WebSocket (101) and SSE routes (the long poll waits up
# to 30 s: hence the 40 s request timeout). Checks: all but
# positive_data_acceptance (a valid-looking request may still name a job or type that does not
# exist: 404/422 are right answers) and use_after_free / ensure_resource_availability (they
# follow links the document does not declare). The long poll answers after up to 30 s by design:
# hence the 40 s response time bound. No `coverage` phase: schemathesis 4.32 crashes in it on the
# submit body (a KeyError in its own schema canonicalisation, not an answer of the server).
status=0
schemathesis run "$WORK/openapi.json" --url "$URL" \
  -H "Authorization: Bearer $TOKEN" \
  --checks all \
  --exclude-checks positive_data_acceptance,use_after_free,ensure_resource_availability \
  --exclude-path /async/events/ws --exclude-path /async/events/sse \
  --max-examples "$EXAMPLES" --phases examples,fuzzing \
  --request-timeout 40 --max-response-time 40 --workers 2 --no-color \
  --seed 1 || status=$?
if [ $status -ne 0 ]; then
  echo "server log (tail):"; tail -40 "$WORK/server.log"
fi
exit $status
