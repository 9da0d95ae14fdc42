#!/usr/bin/env bash
# The scripted peers of the wan profile, each doing the whole job: list every page of the
# fake Vobiz API, download every recording_url, verify the byte counts.
#
#   wan_scripts.sh MODE API_BASE AUTH_ID AUTH_TOKEN OUT_DIR N WORK_DIR
#
# MODE sequential: what most people write: curl pages the list one page at a time
#      (following meta.next until null), jq takes the URLs out, then
#      `curl --parallel --parallel-max N` fetches them.
# MODE expert: the first page gives meta.total_count, the remaining pages come at once with
#      `curl --parallel`, one jq over all pages, then the media with `curl --parallel`.
# MODE aria2: the expert's listing, then `aria2c -j N` fetches the media.
#
# curl's byte counts are verified from its own report (-w: status, bytes received and the
# Content-Length header of every transfer, one line each); aria2c checks Content-Length
# itself and exits non-zero on a short file. The harness re-checks every file's sha256.
set -euo pipefail

mode="$1" api="$2" auth_id="$3" auth_token="$4" out="$5" n="$6" work="$7"
headers=(-H "X-Auth-ID: $auth_id" -H "X-Auth-Token: $auth_token")
list_url="${api}Account/${auth_id}/Recording/?limit=100"
mkdir -p "$work"
rm -f "$work"/page-*.json "$work/media.cfg" "$work/aria2.txt" "$work/report.txt"

# jq program: one curl config entry (url, output) per recording of a page.
to_curl_config='.objects[] | "url = \"\(.recording_url)\"\noutput = \"\($out)/\(.recording_id).\(.recording_format)\""'

list_sequentially() {
    local offset=0 page
    while :; do
        page="$(curl -sf "${headers[@]}" "${list_url}&offset=${offset}")"
        jq -r --arg out "$out" "$to_curl_config" <<<"$page" >>"$work/media.cfg"
        [[ "$(jq -r '.meta.next' <<<"$page")" == null ]] && break
        offset=$((offset + 100))
    done
}

list_in_parallel() {
    local total offset
    curl -sf "${headers[@]}" -o "$work/page-0.json" "${list_url}&offset=0"
    total="$(jq -r '.meta.total_count' "$work/page-0.json")"
    for ((offset = 100; offset < total; offset += 100)); do
        printf 'url = "%s&offset=%d"\noutput = "%s/page-%d.json"\n' \
            "$list_url" "$offset" "$work" "$offset"
    done >"$work/pages.cfg"
    if [[ -s "$work/pages.cfg" ]]; then
        curl -sf --parallel --parallel-max 64 "${headers[@]}" -K "$work/pages.cfg"
    fi
}

fetch_with_curl() {
    curl -s --fail --parallel --parallel-immediate --parallel-max "$n" "${headers[@]}" \
        -w '%{http_code} %{size_download} %header{content-length}\n' \
        -K "$work/media.cfg" >"$work/report.txt"
    # Every transfer answered 200 with as many bytes as its Content-Length, and all came.
    local expected
    expected="$(grep -c '^url = ' "$work/media.cfg")"
    awk -v want="$expected" '
        $1 != 200 || $2 != $3 { bad++ }
        END { if (NR != want || bad) { printf "%d of %d transfers, %d bad\n", NR, want, bad > "/dev/stderr"; exit 1 } }
    ' "$work/report.txt"
}

case "$mode" in
sequential)
    list_sequentially
    fetch_with_curl
    ;;
expert)
    list_in_parallel
    jq -r --arg out "$out" "$to_curl_config" "$work"/page-*.json >"$work/media.cfg"
    fetch_with_curl
    ;;
aria2)
    list_in_parallel
    jq -r '.objects[] | "\(.recording_url)\n  out=\(.recording_id).\(.recording_format)"' \
        "$work"/page-*.json >"$work/aria2.txt"
    aria2c -q -j "$n" -x 1 -s 1 -d "$out" -i "$work/aria2.txt" \
        --header="X-Auth-ID: $auth_id" --header="X-Auth-Token: $auth_token" \
        --allow-overwrite=true --auto-file-renaming=false --file-allocation=none \
        --console-log-level=warn --summary-interval=0
    ;;
*)
    echo "unknown mode $mode" >&2
    exit 2
    ;;
esac
