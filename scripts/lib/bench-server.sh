# Shared by the benchmark scripts (source it): logging, a free loopback port, waiting
# for a server to listen, stopping it, and cleaning up on exit. The caller keeps the
# server's pid in SERVER_PID and its data directory in DATA_DIR.

SERVER_PID=""
DATA_DIR=""

log() { printf '\n### %s\n' "$*" >&2; }

# Stops the server (if still running) and deletes its data directory. Installed as the
# EXIT trap below; a script with more to undo installs its own trap that calls this.
cleanup_server() {
    if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    if [[ -n "$DATA_DIR" ]]; then rm -rf "$DATA_DIR"; fi
}
trap cleanup_server EXIT

# A free TCP port on 127.0.0.1.
free_port() {
    if command -v python3 >/dev/null; then
        python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
    else
        node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'
    fi
}

# Waits until something accepts connections on 127.0.0.1:$1 while $2 lives.
wait_for_port() {
    local port=$1 pid=$2 i
    for ((i = 0; i < 300; i++)); do
        if ! kill -0 "$pid" 2>/dev/null; then return 1; fi
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    return 1
}

# Sends SIGTERM to the server in SERVER_PID and waits (up to 15 s, then SIGKILL).
stop_server() {
    local pid=${SERVER_PID:-} i
    [[ -n "$pid" ]] || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 150; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        echo "server $pid did not exit after SIGTERM; killing it" >&2
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
    SERVER_PID=""
}
