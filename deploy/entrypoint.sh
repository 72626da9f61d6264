#!/bin/sh
# Adds the image's model export and indexes to the data volume where they are missing (a first
# start, or a new model after an upgrade) and keeps what is there, then runs the command.
set -eu
seed="${IPBOT_SEED_DIR:-/opt/ipbot/seed}"
data="${IPBOT_DATA_DIR}"
copy_if_missing() {  # whole folders, renamed into place: a stop mid-copy leaves no half export
    [ -e "$2" ] && return 0
    rm -rf "$2.partial"
    cp -R "$1" "$2.partial"
    mv "$2.partial" "$2"
}
mkdir -p "$data/models"
for export in "$seed"/models/*/; do
    copy_if_missing "$export" "$data/models/$(basename "$export")"
done
copy_if_missing "$seed/index" "$data/index"
exec "$@"
