#!/usr/bin/env bash
# README command (1): the practical end to end on the built-in toy dataset, on the CPU.
# Each step is a command from tutorial/README.md; DATA=/some/dir changes where the data goes.
source "$(dirname "${BASH_SOURCE[0]}")/setup_env.sh"
DATA="${DATA:-data}"
step() { printf '\n== %s\n$ %s\n' "$1" "${*:2}"; "${@:2}"; }

step "1a. make the toy Market-1501" python toy_data.py --out "$DATA" --dataset market --seed 0
step "1b. arrange it for training" python prepare.py --download_path "$DATA/Market"
step "1c. make the toy DukeMTMC-reID" python toy_data.py --out "$DATA" --dataset duke --seed 0
step "1d. arrange it too" python prepare_Duke.py --download_path "$DATA/DukeMTMC-reID"
