#!/usr/bin/env bash
# README command (2): the test suite, on CPU, on data the tests generate.
# Extra arguments go to pytest, e.g.  bash scripts/run_tests.sh -k prepare
# The end-to-end run of command (1) takes minutes: it is left out here, and
# `bash scripts/run_tests.sh -m practical` runs it (CI does both); `-m slow` runs the exports of the
# larger backbones (minutes each; not in CI).
source "$(dirname "${BASH_SOURCE[0]}")/setup_env.sh"
python -m pytest -ra -m "not practical and not slow" "$@" tests
