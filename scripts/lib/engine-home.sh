# Sourced by es-local and os-local: where a local engine keeps its distribution, data and logs.
#
# Not under the checkout: as root the engine runs as an unprivileged system user, which cannot enter a
# checkout inside a 0700 directory (root's home, a `mktemp -d` folder). /var/tmp is world-traversable and
# survives reboots; one folder per user and checkout, so two checkouts never share a node's data.
engine_home() {
    local checkout_id
    checkout_id="$(printf '%s' "$ROOT" | sha256sum | cut -c1-10)"
    echo "${KB_ENGINE_STATE:-/var/tmp/kb-service-$(id -un)}/$1-$checkout_id"
}

# The folder chain down to $1 made traversable (not readable) for the engine user.
make_reachable() {
    mkdir -p "$1"
    chmod 0711 "$(dirname "$1")"
}
