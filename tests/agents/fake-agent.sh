#!/usr/bin/env bash
# A stand-in for an AI coding agent, for marvel's tests: it works (prints),
# goes quiet, shows a prompt, says what it does, and crashes when told.
#
# It reads one command per line:
#   work N      print N lines, 50 ms apart, then go quiet
#   ask         show a permission prompt: "Allow edit of main.rs? (y/n)"
#   say STATE   run `marvel heartbeat --state STATE` (busy, idle, waiting)
#   crash N     exit with status N
#   anything else is echoed back as "got: TEXT"
#
# FAKE_AGENT_START holds a command to run first; MARVEL_BIN the marvel
# binary (else `marvel` on PATH).
#
# `fake-agent.sh paste` is another program: it asks for bracketed paste,
# reads one paste and says how it arrived ("pasted 3 lines in 1 paste"),
# then whether Enter followed it.

set -u
marvel=${MARVEL_BIN:-marvel}

work() {
    local i
    for ((i = 1; i <= $1; i++)); do
        echo "working: step $i of $1"
        sleep 0.05
    done
    echo "work done"
}

run() {
    case "$1" in
        work\ *) work "${1#work }" ;;
        ask) printf 'Allow edit of main.rs? (y/n)\n' ;;
        say\ *) "$marvel" heartbeat --state "${1#say }" && echo "said ${1#say }" ;;
        crash\ *) echo "crashing with ${1#crash }"; exit "${1#crash }" ;;
        *) echo "got: $1" ;;
    esac
}

paste() {
    stty raw -echo
    printf '\033[?2004h'
    printf 'ready for a paste\r\n'
    local buf="" c
    while IFS= read -r -s -n1 -d '' c; do
        buf+="$c"
        [[ $buf == *$'\e[201~'* ]] && break
    done
    local body=${buf#*$'\e[200~'}
    body=${body%$'\e[201~'*}
    local starts=${buf//[^$'\e']/}
    # (bash's read may turn a CR into a newline: either ends a line.)
    local lines=${body//[^$'\r\n']/}
    printf 'pasted %d lines in %d paste\r\n' $((${#lines} + 1)) $((${#starts} / 2))
    body=${body//$'\r'/|}
    printf 'body: %s\r\n' "${body//$'\n'/|}"
    if IFS= read -r -s -n1 -d '' c && [[ $c == $'\r' || $c == $'\n' ]]; then
        printf 'enter\r\n'
    fi
    exec sleep 3600
}

if [[ ${1:-} == paste ]]; then
    paste
fi

[[ -n ${FAKE_AGENT_START:-} ]] && run "$FAKE_AGENT_START"
while IFS= read -r line; do
    run "$line"
done
