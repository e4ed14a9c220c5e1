# Sourced by the compatibility checks: one way to get a client into a virtualenv.
#
# compat_venv VENV "IMPORTS" PACKAGE...
#   Makes VENV hold PACKAGE... unless IMPORTS (a Python import line) already works.
#   The check may be skipped only when the package registry itself is unreachable,
#   which is probed explicitly; any other install failure fails the run.

registry_reachable() {
  python3 - "${PIP_INDEX_URL:-https://pypi.org/simple/}" <<'PY'
import sys, urllib.request
try:
    urllib.request.urlopen(sys.argv[1].rstrip('/') + '/pip/', timeout=20)
except Exception as e:
    print(f"registry probe: {e}", file=sys.stderr)
    sys.exit(1)
PY
}

compat_venv() {
  local venv=$1 imports=$2
  shift 2
  if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c "$imports" 2>/dev/null; then
    return 0
  fi
  python3 -m venv "$venv"
  if "$venv/bin/pip" install -q "$@"; then
    return 0
  fi
  if ! registry_reachable; then
    echo "WARNING: the package registry is unreachable; third-party client check ($*) SKIPPED" >&2
    exit 0
  fi
  echo "ERROR: installing $* failed although the package registry is reachable" >&2
  exit 1
}
