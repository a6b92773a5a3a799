#!/usr/bin/env bash
# The action's one step, also runnable by hand (and by Berth's tests): reads REPORT_* and BERTH_* variables,
# gets a token, posts the report, retries transient failures, and fails with the portal's reason otherwise.
set -euo pipefail

fail() { echo "::error::$*" >&2; exit 1; }
[ -n "${BERTH_URL:-}" ] || fail "base-url is empty"
[ -n "${BERTH_CLIENT_ID:-}" ] && [ -n "${BERTH_CLIENT_SECRET:-}" ] || fail "client-id and client-secret are required"
base="${BERTH_URL%/}"

status="${REPORT_STATUS:-success}"
case "$status" in cancelled|canceled) status=failure ;; esac
finished="${REPORT_FINISHED_AT:-}"
if [ -z "$finished" ] && [ "$status" != "in_progress" ]; then finished="$(date -u +%Y-%m-%dT%H:%M:%SZ)"; fi
commit_time="${REPORT_COMMIT_TIME:-}"
if [ -z "$commit_time" ] && [ -n "${REPORT_COMMIT:-}" ] && git cat-file -e "${REPORT_COMMIT}^{commit}" 2>/dev/null; then
  commit_time="$(git show -s --format=%cI "$REPORT_COMMIT")"
fi

# Empty values are left out of the body (the portal defaults them).
body="$(jq -n \
  --arg service "${REPORT_SERVICE:-}" --arg environment "${REPORT_ENVIRONMENT:-}" --arg version "${REPORT_VERSION:-}" \
  --arg status "$status" --arg commit "${REPORT_COMMIT:-}" --arg commitTime "$commit_time" \
  --arg url "${REPORT_URL:-}" --arg startedAt "${REPORT_STARTED_AT:-}" --arg finishedAt "$finished" \
  --arg actor "${REPORT_ACTOR:-}" --arg summary "${REPORT_SUMMARY:-}" --arg identifier "${REPORT_IDENTIFIER:-}" \
  '{service: $service, environment: $environment, version: $version, status: $status, commit: $commit,
    commitTime: $commitTime, url: $url, startedAt: $startedAt, finishedAt: $finishedAt, actor: $actor,
    summary: $summary, identifier: $identifier} | with_entries(select(.value != ""))')"

# POST with retries on connection errors, 429 and 5xx gateways; prints the answer body.
post() {
  local url="$1" data="$2" auth="${3:-}" attempt=0 wait=1 code out
  out="$(mktemp)"
  while :; do
    if [ -n "$auth" ]; then
      code="$(curl -sS -o "$out" -w '%{http_code}' -X POST "$url" -H 'content-type: application/json' \
        -H "authorization: Bearer $auth" --data "$data" || echo 000)"
    else
      code="$(curl -sS -o "$out" -w '%{http_code}' -X POST "$url" -H 'content-type: application/json' \
        --data "$data" || echo 000)"
    fi
    case "$code" in
      2??) cat "$out"; rm -f "$out"; return 0 ;;
      000|429|502|503|504)
        attempt=$((attempt + 1))
        [ "$attempt" -le 5 ] || { rm -f "$out"; fail "the portal did not answer ($code) after $attempt attempts"; }
        echo "retrying in ${wait}s ($code)" >&2; sleep "$wait"; wait=$((wait * 2)) ;;
      *) local reason; reason="$(jq -r '.message // empty' "$out" 2>/dev/null || true)"
         [ -n "$reason" ] || reason="$(cat "$out")"
         rm -f "$out"; fail "the portal refused the report ($code): $reason" ;;
    esac
  done
}

token="$(post "$base/v1/auth/access_token" \
  "$(jq -n --arg id "$BERTH_CLIENT_ID" --arg secret "$BERTH_CLIENT_SECRET" '{clientId: $id, clientSecret: $secret}')" \
  | jq -r '.accessToken')"
[ -n "$token" ] && [ "$token" != "null" ] || fail "the portal answered no access token"
answer="$(post "$base/v1/deployments" "$body" "$token")"
page="$base$(jq -r '.url' <<<"$answer")"
id="$(jq -r '.entity.identifier' <<<"$answer")"
echo "Reported deployment $id: $page"
if [ -n "${GITHUB_OUTPUT:-}" ]; then
  { echo "url=$page"; echo "identifier=$id"; } >>"$GITHUB_OUTPUT"
fi
