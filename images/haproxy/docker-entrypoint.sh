#!/bin/sh
# As the official image's: `docker run IMAGE -f cfg` means `haproxy -f cfg`.
set -e
if [ "${1#-}" != "$1" ]; then
    set -- haproxy "$@"
fi
exec "$@"
