# shellcheck shell=bash
# What bench.sh (DHCPv4) and bench6.sh (DHCPv6) share; sourced, never run.
# They keep the server they started in server_pid and their burst output
# lines in runs[SERVER,WINDOW].

# Stops the server; one still running 30 s later (the daemon drains for up
# to 15 s) is killed.
stop_server() {
    if [[ -n $server_pid ]]; then
        kill -INT "$server_pid" 2>/dev/null || true
        for _ in $(seq 300); do
            kill -0 "$server_pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
        server_pid=
    fi
}

# write_profiles SITE COUNT REPO: the shipped OS definitions and defaults,
# and COUNT hosts, MACs 52:54:00:00:00:00 + i, which the bursts send from.
write_profiles() {
    mkdir -p "$1/hosts"
    cp "$3"/profiles/os/*.yaml "$1/"
    cp "$3/profiles/groups.yaml" "$1/"
    {
        echo "hosts:"
        for ((i = 0; i < $2; i++)); do
            printf '  "52:54:00:00:%02x:%02x":\n    hostname: bench%05d\n' $((i >> 8)) $((i & 255)) "$i"
        done
    } >"$1/hosts/bench.yaml"
}

# write_config SITE ADDRESS BIND REPO STATE_DIR [POSTGRES_URL]: the
# daemon's config, the shipped settings apart from ports, paths and
# addresses: boot answers on the bridge, unknown machines ignored. The
# mirrors are a closed local port: nothing here downloads.
write_config() {
    cat >"$1/kickstand.yaml" <<YAML
server:
  address: "$2"
  bind: "$3"
  interfaces: [ksbr0]
  http_port: 8080
  tftp_port: 6969
  syslog_port: 5514
dhcp:
  mode: proxy
  unknown: ignore
  uefi_loader: ipxe.efi
tftp:
  root: ../tftp
mirrors:
  centos: [http://127.0.0.1:9/]
  rocky: [http://127.0.0.1:9/]
  alma: [http://127.0.0.1:9/]
cache:
  dir: ../var/cache
  max_size: 20GiB
  revalidate_after: 30s
paths:
  templates: $4/templates
  state: $5
YAML
    if [[ -n ${6:-} ]]; then
        printf 'state:\n  url: "%s"\n' "$6" >>"$1/kickstand.yaml"
    fi
}

# field NAME LINE -> the value of NAME=value in LINE
field() { { grep -o "\b$1=[^ ]*" <<<"$2" || true; } | head -n 1 | cut -d= -f2; }
# stats VALUES... -> "median (min-max)", or "-" with no values
stats() {
    printf '%s\n' "$@" | { grep . || true; } | sort -g |
        awk '{ v[NR] = $1 } END { if (!NR) { print "-"; exit }
              printf "%s (%s-%s)", v[int((NR + 1) / 2)], v[1], v[NR] }'
}
ms() { awk -v us="$1" 'BEGIN { printf "%.1f", us / 1000 }'; }

# column SERVER WINDOW FIELD [us] -> "median (min-max)" of FIELD over the runs
column() {
    local values=() line v
    while IFS= read -r line; do
        [[ -n ${line// /} ]] || continue
        v=$(field "$3" "$line")
        [[ ${4:-} == us ]] && v=$(ms "$v")
        values+=("$v")
    done <<<"${runs[$1,$2]:-}"
    stats "${values[@]}"
}
