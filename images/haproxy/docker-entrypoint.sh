#!/bin/sh
# As the official image's: `docker run IMAGE -f cfg` means `haproxy -f cfg`.
set -e
# With HTTPS the bind needs the certificates haproxy-tls checks and puts in
# place (the edge pod's next container): wait for them, bounded.
if [ -n "${HALB_TLS_READY:-}" ]; then
    i=0
    while [ ! -e "$HALB_TLS_READY" ] && [ $i -lt 600 ]; do
        sleep 0.1
        i=$((i + 1))
    done
    [ -e "$HALB_TLS_READY" ] || echo "docker-entrypoint: $HALB_TLS_READY not there after 60 s; starting anyway" >&2
fi
if [ "${1#-}" != "$1" ]; then
    set -- haproxy "$@"
fi
exec "$@"
