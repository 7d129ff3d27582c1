#!/usr/bin/env bash
# A libtorrent downloader (uTP only) fetches 256 MiB from a lodestone seeder:
# the upload direction, which the scenario benchmark does not race. Prints
# libtorrent's time from metadata to the last piece, and the seeder's CPU.
# Runs itself in a fresh loopback-only network namespace (needs root):
#   benches/utp_upload.sh [tcp|utp]    (after cargo build --release -p lodestone-cli)
set -euo pipefail
transport=${1:-utp}
root=$(cd "$(dirname "$0")/.." && pwd)
if [[ -z "${UTP_UPLOAD_NETNS:-}" ]]; then
    exec env UTP_UPLOAD_NETNS=1 unshare -n "$0" "$transport"
fi
ip link set lo up
bin=$root/target/release/lodestone
work=$(mktemp -d /dev/shm/utp-upload.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
mkdir -p "$work/seed" "$work/dl"
head -c $((256 << 20)) /dev/urandom > "$work/seed/content"
mktorrent -l 18 -o "$work/c.torrent" "$work/seed/content" > /dev/null
hash=$("$bin" inspect "$work/c.torrent" | awk '/^infohash:/ {print $2}')
"$bin" download "$work/c.torrent" -o "$work/seed" --no-dht --no-trackers --transport "$transport" \
    --port 7000 --bind 127.0.0.1 --seed-ratio 1000 --state-dir "$work/state" --json > "$work/seed.log" &
seeder=$!
# Polling a log for the phase change: the seeder prints it once its check is done.
until grep -q '"seeding"' "$work/seed.log"; do sleep 0.1; done
only=(--utp-only)
[[ $transport == tcp ]] && only=()
# The downloader exits at the end, or when its stdin closes after 10 minutes.
# The sleep holding stdin open must not hold our stderr too: a caller
# reading this script through a pipe would wait for the sleep.
/usr/bin/python3 "$root/tests/py/downloader.py" --ip 127.0.0.2 --no-dht "${only[@]}" --exit-when-done \
    --magnet "magnet:?xt=urn:btih:$hash&x.pe=127.0.0.1:7000" --save-path "$work/dl" \
    < <(exec sleep 600 2>/dev/null) \
    | awk -F'"t": ' '/"metadata"/ {m = $2 + 0} /"finished"/ {printf "libtorrent over %s: %.3f s from metadata to done\n", "'"$transport"'", ($2 + 0) - m}'
awk '{printf "lodestone seeder CPU: %.2f s\n", ($14 + $15) / 100}' "/proc/$seeder/stat"
cmp "$work/seed/content" "$work/dl/content" && echo "content identical"
