#!/bin/bash
# How long a magnet download takes when its peer list holds 64 dead
# addresses ahead of one seeder: each holds one of the torrent's dial slots
# for as long as the dialer takes to give up on it.
#
#   benches/scripts/dead_peers.sh refused|silent [BIN...]
#
# refused: nothing listens at the dead addresses, so TCP and UDP are
#          refused at once (as by a host that is up);
# silent:  every packet to them is dropped (as by a host that is down, or a
#          firewall), so only the connect timeout ends a dial.
#
# Each BIN (default: target/release/lodestone) downloads 4 MiB from a
# lodestone seeder three times, the binaries taking turns; the wall time of
# each round is printed. It runs in a fresh network namespace with loopback
# only, re-entering itself under `unshare` (as root, or in a user namespace
# of its own), and needs python3-libtorrent to make the torrent.
set -euo pipefail

mode=${1:-}
case "$mode" in
    refused | silent) shift ;;
    *) echo "usage: $0 refused|silent [BIN...]" >&2; exit 2 ;;
esac

if [ "${DEAD_PEERS_ISOLATED:-}" != 1 ]; then
    export DEAD_PEERS_ISOLATED=1
    # As root a network namespace is enough; otherwise a user namespace
    # maps us to root inside it.
    if [ "$(id -u)" = 0 ]; then
        exec unshare -n "$0" "$mode" "$@"
    fi
    exec unshare -rn "$0" "$mode" "$@"
fi
ip link set lo up
if [ "$mode" = silent ]; then
    # Dropped on the way in, so the sender hears nothing at all.
    nft add table inet dead_peers
    nft add chain inet dead_peers input '{ type filter hook input priority 0; }'
    nft add rule inet dead_peers input ip daddr 127.0.3.0/24 drop
fi

bins=("$@")
[ ${#bins[@]} -gt 0 ] || bins=(target/release/lodestone)
for b in "${bins[@]}"; do [ -x "$b" ] || { echo "not executable: $b" >&2; exit 2; }; done

work=$(mktemp -d /tmp/dead-peers.XXXXXX)
seeder=""
cleanup() {
    if [ -n "$seeder" ]; then
        kill "$seeder" 2>/dev/null || true
        wait "$seeder" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

mkdir -p "$work/seed"
head -c $((4 << 20)) /dev/urandom > "$work/seed/file.bin"
/usr/bin/python3 - "$work" <<'EOF'
import sys
import libtorrent as lt
work = sys.argv[1]
fs = lt.file_storage()
lt.add_files(fs, f"{work}/seed/file.bin")
t = lt.create_torrent(fs, 262144)
lt.set_piece_hashes(t, f"{work}/seed")
open(f"{work}/t.torrent", "wb").write(lt.bencode(t.generate()))
EOF

# The seeder is the first binary, seeding for as long as the script runs.
"${bins[0]}" download "$work/t.torrent" -o "$work/seed" --bind 127.0.0.1 --port 7000 \
    --no-dht --no-trackers --seed-ratio 1000000 --state-dir "$work/seeder-state" \
    > "$work/seeder.log" 2>&1 &
seeder=$!
hash=$("${bins[0]}" inspect --json "$work/t.torrent" |
    /usr/bin/python3 -c 'import json, sys; print(json.load(sys.stdin)["info_hash"])')
# The seeder is ready once it listens; until then a download would just
# wait for it, so this only keeps the first round's time honest.
for _ in $(seq 300); do
    grep -q "127.0.0.1:7000 " < <(ss -ltn) && break
    kill -0 "$seeder" 2>/dev/null || { echo "the seeder exited:" >&2; tail -5 "$work/seeder.log" >&2; exit 1; }
    sleep 0.1
done
grep -q "127.0.0.1:7000 " < <(ss -ltn) || { echo "the seeder never listened" >&2; exit 1; }

peers=()
for i in $(seq 1 64); do peers+=(--peer "127.0.3.$i:6881"); done
peers+=(--peer 127.0.0.1:7000)

for round in 1 2 3; do
    for b in "${bins[@]}"; do
        rm -rf "$work/dl" "$work/state"
        start=$(date +%s.%N)
        if "$b" download "magnet:?xt=urn:btih:$hash" -o "$work/dl" --no-seed --no-dht \
            --no-trackers "${peers[@]}" --bind 127.0.0.2 --port 7001 --metadata-timeout 120 \
            --state-dir "$work/state" > "$work/download.log" 2>&1; then
            end=$(date +%s.%N)
            seconds=$(/usr/bin/python3 -c "print(f'{$end - $start:.2f}')")
            printf 'round %d  %-40s %6s s\n' "$round" "$b" "$seconds"
        else
            printf 'round %d  %-40s failed: %s\n' "$round" "$b" "$(tail -1 "$work/download.log")"
        fi
    done
done
