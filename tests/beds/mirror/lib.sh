# Shared helpers for the mirror bed scripts; sourced, never run.

# Resolves WORKDIR to an absolute path, refusing paths the env file cannot carry.
bed_workdir() {
    mkdir -p "$1"
    local dir
    dir=$(cd "$1" && pwd)
    if [[ "$dir" =~ [[:space:]\'\"\$\\] ]]; then
        echo "WORKDIR must not contain whitespace, quotes, \$ or \\: $dir" >&2
        return 1
    fi
    printf '%s\n' "$dir"
}

# Prints a TCP port on 127.0.0.1 that was free a moment ago; the kernel picks it.
bed_free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Waits until something accepts TCP connections on 127.0.0.1:$1 (at most ~10 s).
bed_wait_port() {
    local port=$1 i
    for i in $(seq 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    echo "nothing listens on 127.0.0.1:$port" >&2
    return 1
}

# True when the pid file names a live process.
bed_alive() {
    [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null
}

# Stops the daemon in pid file $1 with TERM (squid needs ~4 s to wind down),
# then KILLs it and its direct children (squid's kid, nginx's workers) after 15 s.
bed_kill_pidfile() {
    local pidfile=$1 pid i
    [[ -f "$pidfile" ]] || return 0
    pid=$(cat "$pidfile")
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for i in $(seq 150); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            pkill -KILL -P "$pid" 2>/dev/null || true
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    rm -f "$pidfile"
}

bed_require() {
    local tool
    for tool in "$@"; do
        command -v "$tool" >/dev/null || { echo "missing peer: $tool" >&2; return 1; }
    done
}
