#!/usr/bin/env bash
# Build a stand-in for the Dockerfile's base image (python:3.11-slim-bookworm) from Debian's own
# packages, for machines that reach Debian's mirror and PyPI but no container registry.
#
#   sudo scripts/build_base_image.sh          # needs root (debootstrap), debootstrap and a dockerd
#
# 1. `debootstrap --variant=minbase <suite>` from the Debian mirror apt already uses on this host
#    (/etc/apt/sources.list*), imported with `docker import` as servewatch-debian:<suite>;
# 2. on it: Debian's python3 (3.11 in bookworm), python3-venv, python3-pip, with `python`, `pip`
#    and `python3` linked into /usr/local/bin as in the official image; the host's CA bundle and
#    pip's index settings (index-url, extra-index-url over http(s), cert), so that pip in a build
#    trusts and asks what pip on the host does; tagged with the Dockerfile's base name.
#
# Nothing is rebuilt while the tag carries the same key (Debian release of the mirror's suite,
# the Dockerfile's FROM line, this script). An image of that name that this script did not make
# (the real one, pulled) is left alone. SERVEWATCH_BASE_REBUILD=1 forces a rebuild.
set -euo pipefail
cd "$(dirname "$0")/.."

base=$(awk 'toupper($1) == "FROM" { print $2; exit }' Dockerfile)        # python:3.11-slim-bookworm
suite=${base##*-}                                                        # bookworm
pyver=$(sed -E 's/^python:([0-9]+\.[0-9]+).*/\1/' <<<"$base")            # 3.11
docker=${DOCKER:-docker}

# The Debian mirror and the release apt knows for the suite (e.g. 12.15).
mirror=$(grep -rhoE "https?://[^ ]+/debian/?( |$)" /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null \
    | head -1 | tr -d ' ' || true)
mirror=${mirror:-http://deb.debian.org/debian}
mirror=${mirror%/}
security=${mirror%/debian}/debian-security
release=$(grep -h '^Version:' /var/lib/apt/lists/*_dists_"${suite}"_InRelease 2>/dev/null | head -1 | awk '{print $2}' || true)
release=${release:-unknown}
key=$(printf '%s\n' "$base" "$suite" "$release" "$(sha256sum "$0" | cut -c1-16)" | sha256sum | cut -c1-16)

label() { "$docker" image inspect -f "{{ index .Config.Labels \"$2\" }}" "$1" 2>/dev/null || true; }
if "$docker" image inspect "$base" >/dev/null 2>&1 && [ -z "${SERVEWATCH_BASE_REBUILD:-}" ]; then
    have=$(label "$base" servewatch.base-key)
    if [ -z "$have" ] || [ "$have" = "<no value>" ]; then
        echo "base image $base exists and is not a stand-in: using it"
        exit 0
    fi
    if [ "$have" = "$key" ]; then
        echo "stand-in $base is current (Debian $suite $release, key $key)"
        exit 0
    fi
fi

start=$(date +%s)
work=$(mktemp -d /var/tmp/servewatch-base.XXXXXX)
trap 'rm -rf "$work"' EXIT
minbase="servewatch-debian:$suite-$release-$key"
if ! "$docker" image inspect "$minbase" >/dev/null 2>&1; then
    echo "debootstrap --variant=minbase $suite from $mirror ..."
    debootstrap --variant=minbase "$suite" "$work/rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 \
        || { tail -20 "$work/debootstrap.log"; exit 1; }
    cat >"$work/rootfs/etc/apt/sources.list" <<EOF
deb $mirror $suite main
deb $mirror $suite-updates main
deb $security $suite-security main
EOF
    rm -rf "$work/rootfs/var/cache/apt/"* "$work/rootfs/var/lib/apt/lists/"*
    tar -C "$work/rootfs" -c . | "$docker" import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'CMD ["bash"]' - "$minbase" >/dev/null
    rm -rf "$work/rootfs"
fi

# pip's settings on the host, carried into the image: the CA bundle pip trusts and the index it
# asks (local file:// indexes and find-links cannot be reached from a build and are left out).
host_pip() { python3 -m pip config get "$1" 2>/dev/null || true; }
cert=${PIP_CERT:-$(host_pip global.cert)}
cert=${cert:-/etc/ssl/certs/ca-certificates.crt}
cp "$cert" "$work/ca-certificates.crt"
index=${PIP_INDEX_URL:-$(host_pip global.index-url)}
extra=$(for u in ${PIP_EXTRA_INDEX_URL:-$(host_pip global.extra-index-url)}; do
    case $u in http://* | https://*) printf '%s ' "$u" ;; esac
done)
{
    echo "[global]"
    echo "cert = /etc/ssl/certs/ca-certificates.crt"
    [ -n "$index" ] && echo "index-url = $index"
    [ -n "$extra" ] && echo "extra-index-url = $extra"
} >"$work/pip.conf"

cat >"$work/Dockerfile" <<EOF
FROM $minbase
ENV LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive
RUN apt-get update \\
    && apt-get install -y --no-install-recommends ca-certificates python$pyver python3-venv python3-pip \\
    && apt-get upgrade -y \\
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/* \\
    && rm -f /usr/lib/python$pyver/EXTERNALLY-MANAGED \\
    && ln -s /usr/bin/python3 /usr/local/bin/python3 \\
    && ln -s /usr/bin/python3 /usr/local/bin/python \\
    && ln -s /usr/bin/pip3 /usr/local/bin/pip3 \\
    && ln -s /usr/bin/pip3 /usr/local/bin/pip \\
    && python --version | grep -q "^Python $pyver\\."
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY pip.conf /etc/pip.conf
ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
LABEL servewatch.base-key="$key" servewatch.base-of="$base" servewatch.debian="$suite $release"
CMD ["python3"]
EOF
"$docker" build --network host -q -t "$base" "$work" >/dev/null
size=$("$docker" image inspect -f '{{ .Size }}' "$base")
echo "built stand-in $base: Debian $suite $release, $("$docker" run --rm "$base" python --version)," \
    "$((size / 1000000)) MB, in $(($(date +%s) - start)) s"
