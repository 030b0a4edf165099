#!/usr/bin/env bash
# Installs packages into INSTALLROOT with dnf, from BASEURL only: no host repos,
# no host config, no GPG (the bed's RPMs are unsigned), no environment proxy.
#   dnf-install.sh INSTALLROOT BASEURL PKG...
# Optional: KS_DNF_PROXY=http://127.0.0.1:PORT, KS_DNF_PROXY_USER, KS_DNF_PROXY_PASSWORD
# (used to validate the bed straight through squid; Kickstand needs none),
# KS_DNF_SSLCACERT=CA.pem for an https BASEURL signed by the bed's test CA,
# KS_DNF_EXTRA_REPOS="name=URL name2=URL2" for more repositories (an OS's AppStream).
set -euo pipefail
if [[ $# -lt 3 ]]; then
    echo "usage: $0 INSTALLROOT BASEURL PKG..." >&2
    exit 2
fi
command -v dnf >/dev/null || { echo "missing peer: dnf" >&2; exit 1; }
mkdir -p "$1"
root=$(cd "$1" && pwd)
baseurl=$2
shift 2

# Everything dnf writes stays inside the install root.
mkdir -p "$root/.dnf/cache" "$root/.dnf/log" "$root/.dnf/persist" "$root/.dnf/reposdir"
cat >"$root/.dnf/dnf.conf" <<CONF
[main]
gpgcheck=0
install_weak_deps=0
keepcache=0
skip_if_unavailable=0
# A failing fetch must fail the test, not be retried against a stale mirror list.
retries=1
timeout=60
CONF
proxy_opts=()
for extra in ${KS_DNF_EXTRA_REPOS:-}; do
    proxy_opts+=(--repofrompath="${extra%%=*},${extra#*=}" --enablerepo="${extra%%=*}")
done
if [[ -n "${KS_DNF_SSLCACERT:-}" ]]; then
    proxy_opts+=(--setopt="sslcacert=$KS_DNF_SSLCACERT")
fi
if [[ -n "${KS_DNF_PROXY:-}" ]]; then
    proxy_opts+=(--setopt="proxy=$KS_DNF_PROXY")
    [[ -n "${KS_DNF_PROXY_USER:-}" ]] && proxy_opts+=(--setopt="proxy_username=$KS_DNF_PROXY_USER")
    [[ -n "${KS_DNF_PROXY_PASSWORD:-}" ]] && proxy_opts+=(--setopt="proxy_password=$KS_DNF_PROXY_PASSWORD")
fi

# dnf (librepo/curl) honours *_proxy variables: the only route must be BASEURL.
env -u http_proxy -u https_proxy -u HTTP_PROXY -u HTTPS_PROXY -u all_proxy -u ALL_PROXY -u no_proxy -u NO_PROXY \
    dnf -y -q \
    --config="$root/.dnf/dnf.conf" \
    --installroot="$root" \
    --releasever=9 \
    --forcearch=x86_64 \
    --nogpgcheck \
    --noplugins \
    --setopt=reposdir="$root/.dnf/reposdir" \
    --setopt=cachedir="$root/.dnf/cache" \
    --setopt=logdir="$root/.dnf/log" \
    --setopt=persistdir="$root/.dnf/persist" \
    --setopt=varsdir=/dev/null \
    --disablerepo='*' \
    --repofrompath="ks,$baseurl" \
    --enablerepo=ks \
    "${proxy_opts[@]}" \
    install "$@"
