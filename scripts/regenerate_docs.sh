#!/usr/bin/env bash
# Regenerate the figures the README quotes from committed artifacts, so every number can be re-made.
#
#   scripts/regenerate_docs.sh [quickstart|scan|report|all]     (default: all)
#
#   quickstart  runs the quickstart study into a scratch folder (about 7-15 min on 2 CPU cores) and copies its
#               trials.csv, manifest.json and study.yaml to docs/quickstart/
#   report      rebuilds docs/quickstart/report/ (table.md, pareto.png, ...) from those three files alone
#   scan        runs `python -m blocks.bench_scan --repeat 5` and writes docs/benchmarks/scan.md with the
#               CPU, threads, load and date it ran with
#
# Speed figures depend on the machine and on what else runs on it: the scripts print ratios measured side by
# side in one process, and the files say what the machine was doing.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
what="${1:-all}"

machine() {
    local cpu
    cpu="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//' || true)"
    echo "- Machine: ${cpu:-unknown CPU}, $(nproc) cores; $(python3 -c 'import torch; print("torch", torch.__version__)')"
    echo "- Date: $(date -u '+%Y-%m-%d %H:%M UTC'); load average before the run: $(cut -d' ' -f1-3 /proc/loadavg)"
}

quickstart() {
    local scratch
    scratch="$(mktemp -d)"
    python3 -m hybridlab.cli run quickstart --results-dir "$scratch" --no-report
    mkdir -p docs/quickstart
    cp "$scratch/quickstart/trials.csv" "$scratch/quickstart/manifest.json" "$scratch/quickstart/study.yaml" docs/quickstart/
    rm -rf "$scratch"
}

report() {
    python3 -m hybridlab.cli report docs/quickstart --out docs/quickstart/report
    cp docs/quickstart/report/pareto.png docs/images/quickstart-pareto.png
}

scan() {
    mkdir -p docs/benchmarks
    {
        echo "# Selective scan on CPU: backends side by side"
        echo
        echo "Regenerate with \`scripts/regenerate_docs.sh scan\` (runs \`python -m blocks.bench_scan --repeat 5\`)."
        echo
        machine
        echo
        echo '```'
        python3 -m blocks.bench_scan --repeat 5
        echo '```'
    } > docs/benchmarks/scan.md.tmp
    mv docs/benchmarks/scan.md.tmp docs/benchmarks/scan.md
}

case "$what" in
    quickstart) quickstart ;;
    report) report ;;
    scan) scan ;;
    all) quickstart; report; scan ;;
    *) echo "regenerate_docs: unknown part '$what' (quickstart, report, scan or all)" >&2; exit 2 ;;
esac
