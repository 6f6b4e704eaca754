#!/bin/sh
# A notification command for marvel's tests: writes the MARVEL_EVENT_*
# variables it was run with, and its arguments after DIR as HOOK_ARGS, to
# DIR/KIND-PID.env, then fails or sleeps if asked to (HOOK_EXIT, HOOK_SLEEP).
dir=$1
shift
{
    env | grep '^MARVEL_EVENT_' | sort
    printf 'HOOK_ARGS=%s\n' "$*"
} > "$dir/.$MARVEL_EVENT_KIND-$$.tmp"
mv "$dir/.$MARVEL_EVENT_KIND-$$.tmp" "$dir/$MARVEL_EVENT_KIND-$$.env"
[ -n "${HOOK_SLEEP:-}" ] && sleep "$HOOK_SLEEP"
if [ -n "${HOOK_EXIT:-}" ]; then
    echo "no route to host" >&2
    echo "second line" >&2
    exit "$HOOK_EXIT"
fi
exit 0
