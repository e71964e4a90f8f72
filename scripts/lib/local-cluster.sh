# Sourced by es-local and os-local: the life of a local engine cluster of $NODES nodes on loopback ports.
#
# The caller sets ENGINE (a label), DIST (the unpacked distribution), BIN (its start script, relative to
# DIST), CONF (the settings file name), VAR_PREFIX (ES or OPENSEARCH: the distribution's *_JAVA_HOME,
# *_JAVA_OPTS and *_PATH_CONF variables), RUN_AS, PORT, TRANSPORT_OFFSET, NODES, HEAP, HOME_DIR, and defines
# `fetch` and `extra_settings` (lines added to every node's settings); optionally SCHEME (http) and CURL_OPTS
# (how curl reaches a node: a CA and a user for a secured one). Node i answers HTTP on PORT+i-1 and talks to
# the others on PORT+TRANSPORT_OFFSET+i-1.

# Where a local engine keeps its distribution, data and logs. Not under the checkout: as root the engine runs
# as an unprivileged system user, which cannot enter a checkout inside a 0700 directory (root's home, a
# `mktemp -d` folder). /var/tmp is world-traversable and survives reboots; one folder per user, checkout and
# port, so two checkouts or two clusters never share a node's data.
engine_home() {
    local checkout_id
    checkout_id="$(printf '%s' "$ROOT" | sha256sum | cut -c1-10)"
    echo "${KB_ENGINE_STATE:-/var/tmp/kb-service-$(id -un)}/$1-$checkout_id"
}

SCHEME="${SCHEME:-http}"
[[ -v CURL_OPTS ]] || CURL_OPTS=()
say() { echo "$ENGINE: $*" >&2; }
url() { echo "$SCHEME://127.0.0.1:$PORT"; }
node_curl() { curl -fsS "${CURL_OPTS[@]}" "$@"; }
answers() { node_curl -m 2 "$(url)/_cluster/health" >/dev/null 2>&1; }
node_dir() { echo "$HOME_DIR/node-$1"; }
node_pid() { cat "$(node_dir "$1")/node.pid" 2>/dev/null || echo 0; }
urls() { local i; for i in $(seq 1 "$NODES"); do printf '%s://127.0.0.1:%d\n' "$SCHEME" $((PORT + i - 1)); done; }

java_home() {
    local named="${VAR_PREFIX}_JAVA_HOME"
    if [[ -n "${!named:-}" ]]; then echo "${!named}"; return; fi
    if [[ -n "${JAVA_HOME:-}" ]]; then echo "$JAVA_HOME"; return; fi
    local java
    java="$(command -v java)" || { say "no java on PATH"; exit 1; }
    dirname "$(dirname "$(readlink -f "$java")")"
}

configure() {
    local i dir seeds="" masters=""
    for i in $(seq 1 "$NODES"); do
        seeds+="${seeds:+, }127.0.0.1:$((PORT + TRANSPORT_OFFSET + i - 1))"
        masters+="${masters:+, }kb-local-$i"
    done
    for i in $(seq 1 "$NODES"); do
        dir="$(node_dir "$i")"
        mkdir -p "$dir/data" "$dir/logs"
        rm -rf "$dir/config" && cp -r "$DIST/config" "$dir/config"
        {
            echo "cluster.name: kb-local-$PORT"
            echo "node.name: kb-local-$i"
            echo "path.data: $dir/data"
            echo "path.logs: $dir/logs"
            echo "network.host: 127.0.0.1"
            echo "http.port: $((PORT + i - 1))"
            echo "transport.port: $((PORT + TRANSPORT_OFFSET + i - 1))"
            if [[ "$NODES" == 1 ]]; then
                echo "discovery.type: single-node"
            else
                echo "discovery.seed_hosts: [$seeds]"
                echo "cluster.initial_master_nodes: [$masters]"
            fi
            echo "cluster.routing.allocation.disk.threshold_enabled: false"
            echo "action.destructive_requires_name: false"
            extra_settings
        } > "$dir/config/$CONF"
    done
}

# The folder chain down to $1 made traversable (not readable) for the engine user.
make_reachable() {
    mkdir -p "$1"
    chmod 0711 "$(dirname "$1")"
}

launch_node() {
    local dir
    dir="$(node_dir "$1")"
    local -a launch=(env "${VAR_PREFIX}_JAVA_HOME=$(java_home)" "${VAR_PREFIX}_PATH_CONF=$dir/config"
                     "${VAR_PREFIX}_JAVA_OPTS=-Xms$HEAP -Xmx$HEAP" "$DIST/$BIN" -d -p "$dir/node.pid")
    rm -f "$dir/node.pid"
    if [[ "$(id -u)" == 0 ]]; then
        id "$RUN_AS" >/dev/null 2>&1 || useradd --system --no-create-home "$RUN_AS"
        make_reachable "$HOME_DIR"
        chown -R "$RUN_AS" "$HOME_DIR"
        runuser -u "$RUN_AS" -- "${launch[@]}" >"$dir/start.log" 2>&1
    else
        "${launch[@]}" >"$dir/start.log" 2>&1
    fi
    say "started node $1 (its pid goes to $dir/node.pid once it has daemonised)"
}

wait_green() {
    local i
    for _ in $(seq 1 180); do
        for i in $(seq 1 "$NODES"); do
            if [[ -f "$(node_dir "$i")/node.pid" ]] && ! kill -0 "$(node_pid "$i")" 2>/dev/null; then
                say "node $i exited during start; see $(node_dir "$i")/logs and start.log"
                tail -20 "$(node_dir "$i")/start.log" >&2 || true
                exit 1
            fi
        done
        if node_curl -m 3 "$(url)/_cluster/health?wait_for_status=green&wait_for_nodes=$NODES&timeout=2s" \
                >/dev/null 2>&1; then
            return
        fi
        if [[ "$NODES" == 1 ]]; then
            # indices left by an earlier multi-node run keep replicas one node cannot hold (yellow forever)
            node_curl -m 3 -X PUT -H 'Content-Type: application/json' "$(url)/_all/_settings" \
                -d '{"index": {"number_of_replicas": 0}}' >/dev/null 2>&1 || true
        fi
        sleep 1
    done
    say "no green cluster of $NODES node(s) at $(url) after 180 s; see $HOME_DIR/node-*/logs"
    exit 1
}

start() {
    if answers; then urls; return; fi
    fetch
    configure
    local i
    for i in $(seq 1 "$NODES"); do launch_node "$i"; done
    say "waiting for a green cluster of $NODES node(s)"
    wait_green
    urls
}

stop_node() {
    local pid
    pid="$(node_pid "$1")"
    [[ "$pid" != 0 ]] || return 0
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 60); do
        kill -0 "$pid" 2>/dev/null || { rm -f "$(node_dir "$1")/node.pid"; return; }
        sleep 1
    done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$(node_dir "$1")/node.pid"
}

stop() {
    local i
    for i in $(seq 1 "$NODES"); do stop_node "$i"; done
    say "stopped"
}

main() {
    case "${1:-}" in
        start) start ;;
        stop) stop ;;
        status) if answers; then urls; else say "no node at $(url)"; exit 1; fi ;;
        kill-node) kill -9 "$(node_pid "${2:?node number}")" && say "killed node $2 (SIGKILL)" ;;
        start-node) launch_node "${2:?node number}"; wait_green; say "node $2 is back, cluster green" ;;
        *) echo "usage: $0 start|stop|status|kill-node N|start-node N" >&2; exit 2 ;;
    esac
}
