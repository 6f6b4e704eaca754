#!/bin/sh
# A stand-in for an AI coding agent, to try marvel's agent features without
# installing one (see roles/agents.ron). It works for a while (prints),
# goes quiet, then asks for permission and waits for an answer:
#
#   y            it "edits" notes.txt in its directory and works again
#   n            it works on something else
#   crash N      it exits with status N (marvel restarts it with --resume)
#   anything     it answers "got: TEXT" and asks again
#
# Started with --resume (the role's `resume`), it says it picks up where
# the last run ended; MARVEL_RESTARTS and MARVEL_PREVIOUS_EXIT say why.

steps=${FAKE_AGENT_STEPS:-8}

if [ "${1:-}" = "--resume" ]; then
    echo "fake agent: resuming after restart ${MARVEL_RESTARTS:-?} (${MARVEL_PREVIOUS_EXIT:-no previous exit})"
else
    echo "fake agent: starting fresh"
fi
echo "in $(pwd)"

work() {
    i=1
    while [ "$i" -le "$steps" ]; do
        echo "working: step $i of $steps ($1)"
        sleep 0.5
        i=$((i + 1))
    done
    echo "work done: $1"
}

task=1
while :; do
    work "task $task"
    while :; do
        printf 'Allow edit of notes.txt? (y/n) '
        IFS= read -r answer || exit 0
        case "$answer" in
        y | yes)
            echo "task $task edited by ${MARVEL_SESSION:-a fake agent}" >>notes.txt
            echo "edited notes.txt"
            break
            ;;
        n | no)
            echo "leaving notes.txt alone"
            break
            ;;
        crash\ *)
            echo "crashing with ${answer#crash }"
            exit "${answer#crash }"
            ;;
        *) echo "got: $answer" ;;
        esac
    done
    task=$((task + 1))
done
