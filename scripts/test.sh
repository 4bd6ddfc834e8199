#!/usr/bin/env bash
# THE test command: install what the tests need, then lint, type-check and run every test.
#
#   bash scripts/test.sh                 everything (what CI runs)
#   bash scripts/test.sh -k elf -x       extra arguments go to pytest
#   bash scripts/test.sh --no-install    skip the install phases (or KDUMPER_QUICK=1)
#
# On a fresh Debian 12 machine (root, no stdin) it installs the Debian packages, the Python
# package with its test extras and the reference tools; on a machine that has them every install
# phase takes about a second. Prints one timing line per phase; exits non-zero if any phase fails
# (the checks after a failed lint phase still run, so one run shows every problem).
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
PYTHON="${PYTHON:-python3}"
INSTALL=1
[[ ${KDUMPER_QUICK:-0} == 1 ]] && INSTALL=0
PYTEST_ARGS=()
for arg in "$@"; do
    if [[ $arg == --no-install ]]; then INSTALL=0; else PYTEST_ARGS+=("$arg"); fi
done
export PYTHONDONTWRITEBYTECODE=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
export DEBIAN_FRONTEND=noninteractive

FAILED=()
START_ALL=$SECONDS

# phase NAME COMMAND...: run one phase, print its timing line, remember a failure.
phase() {
    local name=$1 start=$SECONDS rc
    shift
    printf '==> %s\n' "$name"
    "$@" </dev/null
    rc=$?
    if ((rc == 0)); then
        printf '==> %-22s ok      %4ds\n' "$name" $((SECONDS - start))
    else
        printf '==> %-22s FAILED  %4ds (exit %d)\n' "$name" $((SECONDS - start)) "$rc"
        FAILED+=("$name")
    fi
    return "$rc"
}

# install phases: a failure here stops the run (nothing after it would mean anything)
install_python() {
    "$PYTHON" -m pip install -q -e '.[test,fuzz]'
}
if ((INSTALL)); then
    if [[ $(id -u) != 0 ]]; then
        echo "scripts/test.sh: the install phases need root (apt-get); use --no-install" >&2
        exit 1
    fi
    phase "debian packages" bash scripts/tools.sh apt || exit 1
    phase "vm dependencies" bash scripts/vm-deps.sh || exit 1
    phase "ssh dependencies" bash scripts/ssh-deps.sh || exit 1
    phase "python packages" install_python || exit 1
    phase "makedumpfile 1.7.6" bash scripts/tools.sh makedumpfile || exit 1
fi

LINT_DIRS=()
for d in src tests vmharness benchmarks; do
    [[ -d $d ]] && LINT_DIRS+=("$d")
done
phase "ruff check" "$PYTHON" -m ruff check "${LINT_DIRS[@]}"
phase "ruff format" "$PYTHON" -m ruff format --check "${LINT_DIRS[@]}"
phase "mypy" "$PYTHON" -m mypy

run_pytest() {
    "$PYTHON" -m pytest -q --durations=15 "${PYTEST_ARGS[@]}"
    local rc=$?
    if ((rc == 5)); then
        # pytest's "no tests collected": a failure unless a selection (-k, a path) asked for it
        if ((${#PYTEST_ARGS[@]})) && [[ ${KDUMPER_ALLOW_NO_TESTS:-0} == 1 ]]; then
            return 0
        fi
        echo "pytest collected no tests" >&2
    fi
    return "$rc"
}
phase "pytest" run_pytest

printf '==> total                  %4ds\n' $((SECONDS - START_ALL))
if ((${#FAILED[@]})); then
    printf '==> FAILED: %s\n' "${FAILED[*]}"
    exit 1
fi
echo "==> all phases passed"
