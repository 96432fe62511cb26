#!/usr/bin/env bash
# Install the aiorch hub on a Debian 12 host with no network, from a site tree (the tree an
# aiorch bundle holds: hub/wheels/*.whl, hub/requirements.txt, repo/debs/ with its signed InRelease and keyring).
# Never reaches the network: pip runs with --no-index, apt reads only the site's file: source.
# Idempotent: a second run changes nothing; a run from a newer site tree moves the venv to its
# locked versions and reinstalls aiorch's own wheel.
#
#   hub/install-hub.sh [--venv DIR]        (as root when system packages are missing)
#
# Environment: AIORCH_SITE (default: the folder above this script), AIORCH_HUB_VENV (default
# /opt/aiorch/venv), AIORCH_HUB_DEBS (default "python3-venv openssh-client").
set -euo pipefail

site=${AIORCH_SITE:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
venv=${AIORCH_HUB_VENV:-/opt/aiorch/venv}
debs=${AIORCH_HUB_DEBS:-python3-venv openssh-client}
while [ $# -gt 0 ]; do
  case "$1" in
    --venv) venv=$2; shift 2 ;;
    --site) site=$2; shift 2 ;;
    *) echo "install-hub.sh: unknown argument $1 (expected --venv DIR, --site DIR)" >&2; exit 2 ;;
  esac
done
wheels=$site/hub/wheels
repo=$site/repo/debs
keyring=$repo/aiorch-archive-keyring.gpg

die() { echo "install-hub.sh: $*" >&2; exit 1; }
[ -d "$wheels" ] || die "no $wheels: run me from an unpacked bundle's site tree (or set AIORCH_SITE)"

# 1. System packages the hub needs, from the bundle's signed apt repository only.
missing=""
for p in $debs; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  [ "$(id -u)" = 0 ] || die "needs root to install:$missing"
  [ -f "$repo/InRelease" ] && [ -f "$keyring" ] || die "missing:$missing, and no signed $repo"
  state=$(mktemp -d)
  trap 'rm -rf "$state"' EXIT
  mkdir -p "$state/lists/partial" "$state/cache/archives/partial"
  echo "deb [signed-by=$keyring] file:$repo ./" >"$state/aiorch.list"
  apt_opts=(
    -o "Dir::Etc::SourceList=$state/aiorch.list" -o "Dir::Etc::SourceParts=/dev/null"
    -o "Dir::State::Lists=$state/lists" -o "Dir::Cache=$state/cache"
    -o "APT::Sandbox::User=root" -o "Acquire::Languages=none" -o "DPkg::Lock::Timeout=120"
  )
  echo "installing from $repo:$missing"
  apt-get "${apt_opts[@]}" update -qq
  # shellcheck disable=SC2086
  DEBIAN_FRONTEND=noninteractive apt-get "${apt_opts[@]}" install -y -qq --no-install-recommends $missing
fi

# 2. The venv, on Debian's python3 (the wheels are built for CPython 3.11).
python3 -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' \
  || die "the bundle's wheels are for CPython 3.11; this host's python3 is $(python3 -V 2>&1)"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"

# 3. The hub's locked closure from the bundle's wheels alone, each checked against its sha256
#    in hub/requirements.txt (a copy of constraints/hub.txt), at exactly its versions (up or
#    down), then aiorch's own wheel (its version does not move between builds: reinstalled).
pip=("$venv/bin/python" -m pip --disable-pip-version-check -q)
shopt -s nullglob
own=("$wheels"/aiorch-*.whl)
[ ${#own[@]} = 1 ] || die "expected one aiorch wheel in $wheels, found ${#own[@]}"
export PIP_CONFIG_FILE=/dev/null  # no index, find-links or constraint from the host's pip.conf
"${pip[@]}" install --no-index --find-links "$wheels" --no-deps --require-hashes \
  --requirement "$site/hub/requirements.txt"
"${pip[@]}" install --no-index --find-links "$wheels" --no-deps --force-reinstall "${own[0]}[hub]"
"${pip[@]}" check >/dev/null || die "the installed hub is inconsistent: $("${pip[@]}" check)"
"$venv/bin/aiorch" --help >/dev/null

cat <<EOF
aiorch hub installed in $venv. Start it with:
  $venv/bin/aiorch hub serve --data-dir /var/lib/aiorch --host 0.0.0.0
(the admin token is then in /var/lib/aiorch/admin.token); import this bundle into it with
  $venv/bin/aiorch --data-dir /var/lib/aiorch bundle import BUNDLE_DIR
and provision from it.
EOF
