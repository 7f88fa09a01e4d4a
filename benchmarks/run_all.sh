#!/usr/bin/env bash
# Every speed figure in the README, in one go (about 25 minutes on 2 cores). Run on an idle machine.
set -euo pipefail
cd "$(dirname "$0")"
py="${PYTHON:-python}"
"$py" bench_fill.py
"$py" bench_chunks.py
"$py" bench_vocab.py
"$py" bench_hub.py
"$py" bench_train.py
"$py" bench_train.py --precision bf16
"$py" bench_train.py --precision default
"$py" bench_startup.py
"$py" bench_train_memory.py
"$py" bench_runstore.py
