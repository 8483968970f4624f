#!/bin/sh
# Entry point of the mqtt service: write Mosquitto's password file from the environment, then
# run the broker. Passwords never appear on a command line: the file is written in plain text
# (user:password lines, private to the broker) and hashed in place by `mosquitto_passwd -U`.
#
# MQTT_INGEST_1_PASSWORD, MQTT_INGEST_2_PASSWORD, MQTT_WEB_PASSWORD, MQTT_WORKER_PASSWORD and
# MQTT_HEALTH_PASSWORD are required; MQTT_DEVICE_CREDENTIALS is "name:password,name:password"
# (each name also needs its block in mosquitto.acl).
set -eu

passwd_file="${MOSQUITTO_PASSWORD_FILE:-/mosquitto/data/passwd}"
umask 077
tmp="${passwd_file}.new"
: > "$tmp"

add() {
    [ -n "$2" ] || { echo "mosquitto-init: no password for $1" >&2; exit 1; }
    printf '%s:%s\n' "$1" "$2" >> "$tmp"
}

add opstwin-ingest-1 "${MQTT_INGEST_1_PASSWORD:-}"
add opstwin-ingest-2 "${MQTT_INGEST_2_PASSWORD:-}"
add opstwin-web "${MQTT_WEB_PASSWORD:-}"
add opstwin-worker "${MQTT_WORKER_PASSWORD:-}"
add opstwin-health "${MQTT_HEALTH_PASSWORD:-}"

old_ifs="$IFS"
IFS=','
for entry in ${MQTT_DEVICE_CREDENTIALS:-}; do
    case "$entry" in
        "") ;;
        ?*:?*) add "${entry%%:*}" "${entry#*:}" ;;
        *) echo "mosquitto-init: MQTT_DEVICE_CREDENTIALS entry is not name:password" >&2; exit 1 ;;
    esac
done
IFS="$old_ifs"

mosquitto_passwd -U "$tmp"
# The broker drops root and reads the file as its own user.
if id mosquitto >/dev/null 2>&1; then chown mosquitto:mosquitto "$tmp"; fi
mv "$tmp" "$passwd_file"

exec mosquitto -c "${MOSQUITTO_CONFIG:-/mosquitto/config/mosquitto.conf}"
