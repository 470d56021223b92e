#!/usr/bin/env bash
# Time and peak memory of the default study (experiments/fragility.toml) as the number of
# images grows, and its thread scaling. Not part of the test suite; run by hand:
#
#     cargo build --release && benches/scaling.sh [N ...]        # default N: 200 1000 5000
#
# Every run is the default study with `count = N` and the data switched to the full
# Fashion-MNIST test set (Debian's dataset-fashion-mnist, /usr/share/datasets/fashion-mnist;
# override with FMNIST=dir), written to a temporary folder. With THREADS="1 2" each N runs
# once per thread count (RAYON_NUM_THREADS), and the samples tables of the runs of one N
# are compared: they must be identical, whatever the thread count.
# Prints one line per run: images, threads, wall seconds, user seconds, peak RSS (MB).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${BIN:-$root/target/release/fragility}
data=${FMNIST:-/usr/share/datasets/fashion-mnist}
threads=${THREADS:-2}
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(200 1000 5000)
[ -x "$bin" ] || { echo "no binary at $bin: run cargo build --release (or set BIN)" >&2; exit 2; }
[ -f "$data/t10k-images-idx3-ubyte.gz" ] || {
    echo "no Fashion-MNIST test set in $data (apt-get install dataset-fashion-mnist, or set FMNIST)" >&2
    exit 2
}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "images threads wall_s user_s peak_mb"
for n in "${sizes[@]}"; do
    first=""
    for t in $threads; do
        dir="$work/n$n-t$t"
        mkdir -p "$dir"
        sed -e "s|^out = .*|out = \"out\"|" \
            -e "s|^weights = .*|weights = \"$root/assets/models/fmnist_cnn.safetensors\"|" \
            -e "s|^images = .*|images = \"$data/t10k-images-idx3-ubyte.gz\"|" \
            -e "s|^labels = .*|labels = \"$data/t10k-labels-idx1-ubyte.gz\"|" \
            -e "s|^count = .*|count = $n|" \
            "$root/experiments/fragility.toml" > "$dir/exp.toml"
        grep -q "^count = $n\$" "$dir/exp.toml" || { echo "could not set count in $dir/exp.toml" >&2; exit 1; }
        RAYON_NUM_THREADS=$t /usr/bin/time -f "%e %U %M" -o "$dir/time" \
            "$bin" run "$dir/exp.toml" --quiet > "$dir/log" 2>&1 || { cat "$dir/log" >&2; exit 1; }
        read -r wall user rss < "$dir/time"
        echo "$n $t $wall $user $((rss / 1024))"
        if [ -z "$first" ]; then
            first="$dir"
        elif ! "$bin" compare "$first/out" "$dir/out" --tolerance 0 --all > "$dir/compare.log" 2>&1 \
            || ! cmp -s "$first/out/summary.parquet" "$dir/out/summary.parquet"; then
            echo "  results differ between thread counts ($first vs $dir): see $dir/compare.log" >&2
            exit 1
        else
            echo "  identical to $(basename "$first") (summary.parquet byte for byte)"
        fi
    done
done
