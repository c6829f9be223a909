#!/usr/bin/env bash
# README command (2): the test suite, on CPU, on data the tests generate.
# Extra arguments go to pytest, e.g.  bash scripts/run_tests.sh -k prepare
source "$(dirname "${BASH_SOURCE[0]}")/setup_env.sh"
python -m pytest -ra "$@" tests
