# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_marvel_global_optspecs
    string join \n state-dir= context= no-color h/help V/version
end

function __fish_marvel_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_marvel_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_marvel_using_subcommand
    set -l cmd (__fish_marvel_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c marvel -n "__fish_marvel_needs_command" -l state-dir -d 'State directory: daemon socket, state, logs [default: per-user data directory]' -r -F
complete -c marvel -n "__fish_marvel_needs_command" -l context -d 'Talk to this context\'s daemon (see marvel context) [default: the current one]' -r
complete -c marvel -n "__fish_marvel_needs_command" -l no-color -d 'Never colour the output (NO_COLOR is honoured too)'
complete -c marvel -n "__fish_marvel_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c marvel -n "__fish_marvel_needs_command" -s V -l version -d 'Print version'
complete -c marvel -n "__fish_marvel_needs_command" -f -a "run" -d 'Validate a team manifest and apply it'
complete -c marvel -n "__fish_marvel_needs_command" -f -a "get" -d 'List sessions, roles or teams'
complete -c marvel -n "__fish_marvel_needs_command" -f -a "describe" -d 'Show everything known about a session, role or team'
complete -c marvel -n "__fish_marvel_needs_command" -f -a "inject" -d 'Type text or keys into a session\'s pane'
complete -c marvel -n "__fish_marvel_needs_command" -f -a "capture" -d 'Print what a session\'s pane shows now'
complete -c marvel -n "__fish_marvel_needs_command" -f -a "logs" -d 'Print what a session printed, also for a crashed one'
complete -c marvel -n "__fish_marvel_needs_command" -f -a "reset" -d 'Clear a role\'s crash-loop history and frozen state'
complete -c marvel -n "__fish_marvel_needs_command" -f -a "scale" -d 'Change how many replicas a role keeps'
complete -c marvel -n "__fish_marvel_needs_command" -f -a "shift" -d 'Replace every session of a team with a fresh one, one at a time'
complete -c marvel -n "__fish_marvel_needs_command" -f -a "kill" -d 'Stop one session (not counted as a crash)'
complete -c marvel -n "__fish_marvel_needs_command" -f -a "delete" -d 'Delete a team and stop its sessions'
complete -c marvel -n "__fish_marvel_needs_command" -f -a "attach" -d 'Open a session\'s pane in tmux'
complete -c marvel -n "__fish_marvel_needs_command" -f -a "events" -d 'Show the event log: crashes, backoffs, freezes, resets'
complete -c marvel -n "__fish_marvel_needs_command" -f -a "heartbeat" -d 'Report from inside a session\'s pane that its program is alive'
complete -c marvel -n "__fish_marvel_needs_command" -f -a "status" -d 'Show daemon and tmux health'
complete -c marvel -n "__fish_marvel_needs_command" -f -a "daemon" -d 'Run or stop the daemon'
complete -c marvel -n "__fish_marvel_needs_command" -f -a "context" -d 'Name marvel daemons on other hosts (over ssh) and pick one'
complete -c marvel -n "__fish_marvel_needs_command" -f -a "completions" -d 'Print a shell completion script'
complete -c marvel -n "__fish_marvel_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c marvel -n "__fish_marvel_using_subcommand run" -l timeout -d 'How long --wait waits before giving up (30s, 2m, ...)' -r
complete -c marvel -n "__fish_marvel_using_subcommand run" -l state-dir -d 'State directory: daemon socket, state, logs [default: per-user data directory]' -r -F
complete -c marvel -n "__fish_marvel_using_subcommand run" -l context -d 'Talk to this context\'s daemon (see marvel context) [default: the current one]' -r
complete -c marvel -n "__fish_marvel_using_subcommand run" -l wait -d 'Wait until every role is ready or has succeeded; fail if one freezes'
complete -c marvel -n "__fish_marvel_using_subcommand run" -l dry-run -d 'Validate and print what would be created, without the daemon or tmux'
complete -c marvel -n "__fish_marvel_using_subcommand run" -l no-color -d 'Never colour the output (NO_COLOR is honoured too)'
complete -c marvel -n "__fish_marvel_using_subcommand run" -s h -l help -d 'Print help'
complete -c marvel -n "__fish_marvel_using_subcommand get" -s o -l output -d 'Output format' -r -f -a "table\t''
wide\t''
json\t''"
complete -c marvel -n "__fish_marvel_using_subcommand get" -l workspace -d 'Only this workspace' -r
complete -c marvel -n "__fish_marvel_using_subcommand get" -l team -d 'Only this team (a name, or a workspace/team key)' -r
complete -c marvel -n "__fish_marvel_using_subcommand get" -l timeout -d 'With --all-contexts: how long each context may take to answer' -r
complete -c marvel -n "__fish_marvel_using_subcommand get" -l state-dir -d 'State directory: daemon socket, state, logs [default: per-user data directory]' -r -F
complete -c marvel -n "__fish_marvel_using_subcommand get" -l context -d 'Talk to this context\'s daemon (see marvel context) [default: the current one]' -r
complete -c marvel -n "__fish_marvel_using_subcommand get" -s w -l watch -d 'Redraw every second until interrupted'
complete -c marvel -n "__fish_marvel_using_subcommand get" -s A -l all-contexts -d 'Ask every context at once and add a CONTEXT column; exit 8 if some did not answer'
complete -c marvel -n "__fish_marvel_using_subcommand get" -l no-color -d 'Never colour the output (NO_COLOR is honoured too)'
complete -c marvel -n "__fish_marvel_using_subcommand get" -s h -l help -d 'Print help'
complete -c marvel -n "__fish_marvel_using_subcommand describe" -s o -l output -d 'Output format' -r -f -a "text\t''
json\t''"
complete -c marvel -n "__fish_marvel_using_subcommand describe" -l state-dir -d 'State directory: daemon socket, state, logs [default: per-user data directory]' -r -F
complete -c marvel -n "__fish_marvel_using_subcommand describe" -l context -d 'Talk to this context\'s daemon (see marvel context) [default: the current one]' -r
complete -c marvel -n "__fish_marvel_using_subcommand describe" -l no-color -d 'Never colour the output (NO_COLOR is honoured too)'
complete -c marvel -n "__fish_marvel_using_subcommand describe" -s h -l help -d 'Print help'
complete -c marvel -n "__fish_marvel_using_subcommand inject" -l state-dir -d 'State directory: daemon socket, state, logs [default: per-user data directory]' -r -F
complete -c marvel -n "__fish_marvel_using_subcommand inject" -l context -d 'Talk to this context\'s daemon (see marvel context) [default: the current one]' -r
complete -c marvel -n "__fish_marvel_using_subcommand inject" -s e -l enter -d 'Press Enter after the text'
complete -c marvel -n "__fish_marvel_using_subcommand inject" -s k -l keys -d 'Treat the words as tmux key names, not literal text'
complete -c marvel -n "__fish_marvel_using_subcommand inject" -l no-color -d 'Never colour the output (NO_COLOR is honoured too)'
complete -c marvel -n "__fish_marvel_using_subcommand inject" -s h -l help -d 'Print help'
complete -c marvel -n "__fish_marvel_using_subcommand capture" -l state-dir -d 'State directory: daemon socket, state, logs [default: per-user data directory]' -r -F
complete -c marvel -n "__fish_marvel_using_subcommand capture" -l context -d 'Talk to this context\'s daemon (see marvel context) [default: the current one]' -r
complete -c marvel -n "__fish_marvel_using_subcommand capture" -l no-color -d 'Never colour the output (NO_COLOR is honoured too)'
complete -c marvel -n "__fish_marvel_using_subcommand capture" -s h -l help -d 'Print help'
complete -c marvel -n "__fish_marvel_using_subcommand logs" -s n -l lines -d 'How many of the last lines to print' -r
complete -c marvel -n "__fish_marvel_using_subcommand logs" -l state-dir -d 'State directory: daemon socket, state, logs [default: per-user data directory]' -r -F
complete -c marvel -n "__fish_marvel_using_subcommand logs" -l context -d 'Talk to this context\'s daemon (see marvel context) [default: the current one]' -r
complete -c marvel -n "__fish_marvel_using_subcommand logs" -l raw -d 'Print the text exactly as received, control characters included'
complete -c marvel -n "__fish_marvel_using_subcommand logs" -l no-color -d 'Never colour the output (NO_COLOR is honoured too)'
complete -c marvel -n "__fish_marvel_using_subcommand logs" -s h -l help -d 'Print help'
complete -c marvel -n "__fish_marvel_using_subcommand reset; and not __fish_seen_subcommand_from role help" -l state-dir -d 'State directory: daemon socket, state, logs [default: per-user data directory]' -r -F
complete -c marvel -n "__fish_marvel_using_subcommand reset; and not __fish_seen_subcommand_from role help" -l context -d 'Talk to this context\'s daemon (see marvel context) [default: the current one]' -r
complete -c marvel -n "__fish_marvel_using_subcommand reset; and not __fish_seen_subcommand_from role help" -l no-color -d 'Never colour the output (NO_COLOR is honoured too)'
complete -c marvel -n "__fish_marvel_using_subcommand reset; and not __fish_seen_subcommand_from role help" -s h -l help -d 'Print help'
complete -c marvel -n "__fish_marvel_using_subcommand reset; and not __fish_seen_subcommand_from role help" -f -a "role" -d 'Forget a role\'s crashes and backoff, un-freeze it and spawn at once'
complete -c marvel -n "__fish_marvel_using_subcommand reset; and not __fish_seen_subcommand_from role help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c marvel -n "__fish_marvel_using_subcommand reset; and __fish_seen_subcommand_from role" -l state-dir -d 'State directory: daemon socket, state, logs [default: per-user data directory]' -r -F
complete -c marvel -n "__fish_marvel_using_subcommand reset; and __fish_seen_subcommand_from role" -l context -d 'Talk to this context\'s daemon (see marvel context) [default: the current one]' -r
complete -c marvel -n "__fish_marvel_using_subcommand reset; and __fish_seen_subcommand_from role" -l no-color -d 'Never colour the output (NO_COLOR is honoured too)'
complete -c marvel -n "__fish_marvel_using_subcommand reset; and __fish_seen_subcommand_from role" -s h -l help -d 'Print help'
complete -c marvel -n "__fish_marvel_using_subcommand reset; and __fish_seen_subcommand_from help" -f -a "role" -d 'Forget a role\'s crashes and backoff, un-freeze it and spawn at once'
complete -c marvel -n "__fish_marvel_using_subcommand reset; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c marvel -n "__fish_marvel_using_subcommand scale" -l state-dir -d 'State directory: daemon socket, state, logs [default: per-user data directory]' -r -F
complete -c marvel -n "__fish_marvel_using_subcommand scale" -l context -d 'Talk to this context\'s daemon (see marvel context) [default: the current one]' -r
complete -c marvel -n "__fish_marvel_using_subcommand scale" -l no-color -d 'Never colour the output (NO_COLOR is honoured too)'
complete -c marvel -n "__fish_marvel_using_subcommand scale" -s h -l help -d 'Print help'
complete -c marvel -n "__fish_marvel_using_subcommand shift" -l role -d 'Only this role of the team (its name)' -r
complete -c marvel -n "__fish_marvel_using_subcommand shift" -l timeout -d 'How long the shift may take before it fails (30s, 10m, ...)' -r
complete -c marvel -n "__fish_marvel_using_subcommand shift" -l state-dir -d 'State directory: daemon socket, state, logs [default: per-user data directory]' -r -F
complete -c marvel -n "__fish_marvel_using_subcommand shift" -l context -d 'Talk to this context\'s daemon (see marvel context) [default: the current one]' -r
complete -c marvel -n "__fish_marvel_using_subcommand shift" -l wait -d 'Follow the shift until it ends; exit 1 if it fails or is aborted'
complete -c marvel -n "__fish_marvel_using_subcommand shift" -l abort -d 'Stop the team\'s shift in flight; what was replaced stays replaced'
complete -c marvel -n "__fish_marvel_using_subcommand shift" -l no-color -d 'Never colour the output (NO_COLOR is honoured too)'
complete -c marvel -n "__fish_marvel_using_subcommand shift" -s h -l help -d 'Print help'
complete -c marvel -n "__fish_marvel_using_subcommand kill" -l state-dir -d 'State directory: daemon socket, state, logs [default: per-user data directory]' -r -F
complete -c marvel -n "__fish_marvel_using_subcommand kill" -l context -d 'Talk to this context\'s daemon (see marvel context) [default: the current one]' -r
complete -c marvel -n "__fish_marvel_using_subcommand kill" -l no-color -d 'Never colour the output (NO_COLOR is honoured too)'
complete -c marvel -n "__fish_marvel_using_subcommand kill" -s h -l help -d 'Print help'
complete -c marvel -n "__fish_marvel_using_subcommand delete; and not __fish_seen_subcommand_from team help" -l state-dir -d 'State directory: daemon socket, state, logs [default: per-user data directory]' -r -F
complete -c marvel -n "__fish_marvel_using_subcommand delete; and not __fish_seen_subcommand_from team help" -l context -d 'Talk to this context\'s daemon (see marvel context) [default: the current one]' -r
complete -c marvel -n "__fish_marvel_using_subcommand delete; and not __fish_seen_subcommand_from team help" -l no-color -d 'Never colour the output (NO_COLOR is honoured too)'
complete -c marvel -n "__fish_marvel_using_subcommand delete; and not __fish_seen_subcommand_from team help" -s h -l help -d 'Print help'
complete -c marvel -n "__fish_marvel_using_subcommand delete; and not __fish_seen_subcommand_from team help" -f -a "team" -d 'Delete a team: stop every session of every role and forget it'
complete -c marvel -n "__fish_marvel_using_subcommand delete; and not __fish_seen_subcommand_from team help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c marvel -n "__fish_marvel_using_subcommand delete; and __fish_seen_subcommand_from team" -l state-dir -d 'State directory: daemon socket, state, logs [default: per-user data directory]' -r -F
complete -c marvel -n "__fish_marvel_using_subcommand delete; and __fish_seen_subcommand_from team" -l context -d 'Talk to this context\'s daemon (see marvel context) [default: the current one]' -r
complete -c marvel -n "__fish_marvel_using_subcommand delete; and __fish_seen_subcommand_from team" -l no-color -d 'Never colour the output (NO_COLOR is honoured too)'
complete -c marvel -n "__fish_marvel_using_subcommand delete; and __fish_seen_subcommand_from team" -s h -l help -d 'Print help'
complete -c marvel -n "__fish_marvel_using_subcommand delete; and __fish_seen_subcommand_from help" -f -a "team" -d 'Delete a team: stop every session of every role and forget it'
complete -c marvel -n "__fish_marvel_using_subcommand delete; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c marvel -n "__fish_marvel_using_subcommand attach" -l state-dir -d 'State directory: daemon socket, state, logs [default: per-user data directory]' -r -F
complete -c marvel -n "__fish_marvel_using_subcommand attach" -l context -d 'Talk to this context\'s daemon (see marvel context) [default: the current one]' -r
complete -c marvel -n "__fish_marvel_using_subcommand attach" -l no-color -d 'Never colour the output (NO_COLOR is honoured too)'
complete -c marvel -n "__fish_marvel_using_subcommand attach" -s h -l help -d 'Print help'
complete -c marvel -n "__fish_marvel_using_subcommand events" -l key -d 'Only events about this key or what lies under it (suffix allowed)' -r
complete -c marvel -n "__fish_marvel_using_subcommand events" -l kind -d 'Only events of this kind (repeat for several)' -r -f -a "applied\t''
created\t''
started\t''
crashed\t''
backoff\t''
frozen\t''
reset\t''
forgiven\t''
succeeded\t''
stopped\t''
killed\t''
scaled\t''
deleted\t''
adopted\t''
tmux-down\t''
tmux-up\t''
warning\t''
healthy\t''
unhealthy\t''
shift-started\t''
shift-completed\t''
shift-failed\t''
shift-aborted\t''"
complete -c marvel -n "__fish_marvel_using_subcommand events" -l limit -d 'At most this many of the most recent events' -r
complete -c marvel -n "__fish_marvel_using_subcommand events" -s o -l output -d 'Output format (json: one object per line)' -r -f -a "text\t''
json\t''"
complete -c marvel -n "__fish_marvel_using_subcommand events" -l timeout -d 'With --all-contexts: how long each context may take to answer' -r
complete -c marvel -n "__fish_marvel_using_subcommand events" -l state-dir -d 'State directory: daemon socket, state, logs [default: per-user data directory]' -r -F
complete -c marvel -n "__fish_marvel_using_subcommand events" -l context -d 'Talk to this context\'s daemon (see marvel context) [default: the current one]' -r
complete -c marvel -n "__fish_marvel_using_subcommand events" -s f -l follow -d 'Keep printing new events until interrupted'
complete -c marvel -n "__fish_marvel_using_subcommand events" -s A -l all-contexts -d 'Every context\'s events in one stream, each with its context; exit 8 if some did not answer'
complete -c marvel -n "__fish_marvel_using_subcommand events" -l no-color -d 'Never colour the output (NO_COLOR is honoured too)'
complete -c marvel -n "__fish_marvel_using_subcommand events" -s h -l help -d 'Print help'
complete -c marvel -n "__fish_marvel_using_subcommand heartbeat" -l context-pct -d 'How full the agent\'s context window is, in percent' -r
complete -c marvel -n "__fish_marvel_using_subcommand heartbeat" -l note -d 'A short status line shown by describe session (at most 200 characters)' -r
complete -c marvel -n "__fish_marvel_using_subcommand heartbeat" -l state-dir -d 'State directory: daemon socket, state, logs [default: per-user data directory]' -r -F
complete -c marvel -n "__fish_marvel_using_subcommand heartbeat" -l context -d 'Talk to this context\'s daemon (see marvel context) [default: the current one]' -r
complete -c marvel -n "__fish_marvel_using_subcommand heartbeat" -l no-color -d 'Never colour the output (NO_COLOR is honoured too)'
complete -c marvel -n "__fish_marvel_using_subcommand heartbeat" -s h -l help -d 'Print help'
complete -c marvel -n "__fish_marvel_using_subcommand status" -s o -l output -d 'Output format' -r -f -a "text\t''
json\t''"
complete -c marvel -n "__fish_marvel_using_subcommand status" -l state-dir -d 'State directory: daemon socket, state, logs [default: per-user data directory]' -r -F
complete -c marvel -n "__fish_marvel_using_subcommand status" -l context -d 'Talk to this context\'s daemon (see marvel context) [default: the current one]' -r
complete -c marvel -n "__fish_marvel_using_subcommand status" -l no-color -d 'Never colour the output (NO_COLOR is honoured too)'
complete -c marvel -n "__fish_marvel_using_subcommand status" -s h -l help -d 'Print help'
complete -c marvel -n "__fish_marvel_using_subcommand daemon; and not __fish_seen_subcommand_from run stop dial-stdio help" -l state-dir -d 'State directory: daemon socket, state, logs [default: per-user data directory]' -r -F
complete -c marvel -n "__fish_marvel_using_subcommand daemon; and not __fish_seen_subcommand_from run stop dial-stdio help" -l context -d 'Talk to this context\'s daemon (see marvel context) [default: the current one]' -r
complete -c marvel -n "__fish_marvel_using_subcommand daemon; and not __fish_seen_subcommand_from run stop dial-stdio help" -l no-color -d 'Never colour the output (NO_COLOR is honoured too)'
complete -c marvel -n "__fish_marvel_using_subcommand daemon; and not __fish_seen_subcommand_from run stop dial-stdio help" -s h -l help -d 'Print help'
complete -c marvel -n "__fish_marvel_using_subcommand daemon; and not __fish_seen_subcommand_from run stop dial-stdio help" -f -a "run" -d 'Run the daemon in the foreground until stopped'
complete -c marvel -n "__fish_marvel_using_subcommand daemon; and not __fish_seen_subcommand_from run stop dial-stdio help" -f -a "stop" -d 'Stop the daemon; the panes it supervises keep running'
complete -c marvel -n "__fish_marvel_using_subcommand daemon; and not __fish_seen_subcommand_from run stop dial-stdio help" -f -a "dial-stdio" -d 'Relay the daemon\'s protocol over standard input and output (what an ssh context runs)'
complete -c marvel -n "__fish_marvel_using_subcommand daemon; and not __fish_seen_subcommand_from run stop dial-stdio help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c marvel -n "__fish_marvel_using_subcommand daemon; and __fish_seen_subcommand_from run" -l state-dir -d 'State directory: daemon socket, state, logs [default: per-user data directory]' -r -F
complete -c marvel -n "__fish_marvel_using_subcommand daemon; and __fish_seen_subcommand_from run" -l context -d 'Talk to this context\'s daemon (see marvel context) [default: the current one]' -r
complete -c marvel -n "__fish_marvel_using_subcommand daemon; and __fish_seen_subcommand_from run" -l no-color -d 'Never colour the output (NO_COLOR is honoured too)'
complete -c marvel -n "__fish_marvel_using_subcommand daemon; and __fish_seen_subcommand_from run" -s h -l help -d 'Print help'
complete -c marvel -n "__fish_marvel_using_subcommand daemon; and __fish_seen_subcommand_from stop" -l state-dir -d 'State directory: daemon socket, state, logs [default: per-user data directory]' -r -F
complete -c marvel -n "__fish_marvel_using_subcommand daemon; and __fish_seen_subcommand_from stop" -l context -d 'Talk to this context\'s daemon (see marvel context) [default: the current one]' -r
complete -c marvel -n "__fish_marvel_using_subcommand daemon; and __fish_seen_subcommand_from stop" -l no-color -d 'Never colour the output (NO_COLOR is honoured too)'
complete -c marvel -n "__fish_marvel_using_subcommand daemon; and __fish_seen_subcommand_from stop" -s h -l help -d 'Print help'
complete -c marvel -n "__fish_marvel_using_subcommand daemon; and __fish_seen_subcommand_from dial-stdio" -l state-dir -d 'State directory: daemon socket, state, logs [default: per-user data directory]' -r -F
complete -c marvel -n "__fish_marvel_using_subcommand daemon; and __fish_seen_subcommand_from dial-stdio" -l context -d 'Talk to this context\'s daemon (see marvel context) [default: the current one]' -r
complete -c marvel -n "__fish_marvel_using_subcommand daemon; and __fish_seen_subcommand_from dial-stdio" -l no-start -d 'Do not start a daemon when none runs (say so in the greeting)'
complete -c marvel -n "__fish_marvel_using_subcommand daemon; and __fish_seen_subcommand_from dial-stdio" -l no-color -d 'Never colour the output (NO_COLOR is honoured too)'
complete -c marvel -n "__fish_marvel_using_subcommand daemon; and __fish_seen_subcommand_from dial-stdio" -s h -l help -d 'Print help'
complete -c marvel -n "__fish_marvel_using_subcommand daemon; and __fish_seen_subcommand_from help" -f -a "run" -d 'Run the daemon in the foreground until stopped'
complete -c marvel -n "__fish_marvel_using_subcommand daemon; and __fish_seen_subcommand_from help" -f -a "stop" -d 'Stop the daemon; the panes it supervises keep running'
complete -c marvel -n "__fish_marvel_using_subcommand daemon; and __fish_seen_subcommand_from help" -f -a "dial-stdio" -d 'Relay the daemon\'s protocol over standard input and output (what an ssh context runs)'
complete -c marvel -n "__fish_marvel_using_subcommand daemon; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c marvel -n "__fish_marvel_using_subcommand context; and not __fish_seen_subcommand_from add ls use rm help" -l state-dir -d 'State directory: daemon socket, state, logs [default: per-user data directory]' -r -F
complete -c marvel -n "__fish_marvel_using_subcommand context; and not __fish_seen_subcommand_from add ls use rm help" -l context -d 'Talk to this context\'s daemon (see marvel context) [default: the current one]' -r
complete -c marvel -n "__fish_marvel_using_subcommand context; and not __fish_seen_subcommand_from add ls use rm help" -l no-color -d 'Never colour the output (NO_COLOR is honoured too)'
complete -c marvel -n "__fish_marvel_using_subcommand context; and not __fish_seen_subcommand_from add ls use rm help" -s h -l help -d 'Print help'
complete -c marvel -n "__fish_marvel_using_subcommand context; and not __fish_seen_subcommand_from add ls use rm help" -f -a "add" -d 'Add a host: ssh://[user@]host[:port]'
complete -c marvel -n "__fish_marvel_using_subcommand context; and not __fish_seen_subcommand_from add ls use rm help" -f -a "ls" -d 'List the contexts; the current one is marked'
complete -c marvel -n "__fish_marvel_using_subcommand context; and not __fish_seen_subcommand_from add ls use rm help" -f -a "use" -d 'Make a context the one commands use when none is named'
complete -c marvel -n "__fish_marvel_using_subcommand context; and not __fish_seen_subcommand_from add ls use rm help" -f -a "rm" -d 'Forget a context (the host and its daemon are untouched)'
complete -c marvel -n "__fish_marvel_using_subcommand context; and not __fish_seen_subcommand_from add ls use rm help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c marvel -n "__fish_marvel_using_subcommand context; and __fish_seen_subcommand_from add" -l remote-path -d 'marvel\'s path on the host, when it is not on the PATH of its login shell' -r
complete -c marvel -n "__fish_marvel_using_subcommand context; and __fish_seen_subcommand_from add" -l remote-env -d 'A variable for marvel on the host, such as MARVEL_HOME (repeat for several)' -r
complete -c marvel -n "__fish_marvel_using_subcommand context; and __fish_seen_subcommand_from add" -l connect-timeout -d 'How long ssh may take to connect [default: 10s]' -r
complete -c marvel -n "__fish_marvel_using_subcommand context; and __fish_seen_subcommand_from add" -l state-dir -d 'State directory: daemon socket, state, logs [default: per-user data directory]' -r -F
complete -c marvel -n "__fish_marvel_using_subcommand context; and __fish_seen_subcommand_from add" -l context -d 'Talk to this context\'s daemon (see marvel context) [default: the current one]' -r
complete -c marvel -n "__fish_marvel_using_subcommand context; and __fish_seen_subcommand_from add" -l no-share -d 'Open a new ssh connection for every command'
complete -c marvel -n "__fish_marvel_using_subcommand context; and __fish_seen_subcommand_from add" -l force -d 'Replace a context of that name'
complete -c marvel -n "__fish_marvel_using_subcommand context; and __fish_seen_subcommand_from add" -l no-color -d 'Never colour the output (NO_COLOR is honoured too)'
complete -c marvel -n "__fish_marvel_using_subcommand context; and __fish_seen_subcommand_from add" -s h -l help -d 'Print help'
complete -c marvel -n "__fish_marvel_using_subcommand context; and __fish_seen_subcommand_from ls" -s o -l output -d 'Output format' -r -f -a "text\t''
json\t''"
complete -c marvel -n "__fish_marvel_using_subcommand context; and __fish_seen_subcommand_from ls" -l state-dir -d 'State directory: daemon socket, state, logs [default: per-user data directory]' -r -F
complete -c marvel -n "__fish_marvel_using_subcommand context; and __fish_seen_subcommand_from ls" -l context -d 'Talk to this context\'s daemon (see marvel context) [default: the current one]' -r
complete -c marvel -n "__fish_marvel_using_subcommand context; and __fish_seen_subcommand_from ls" -l no-color -d 'Never colour the output (NO_COLOR is honoured too)'
complete -c marvel -n "__fish_marvel_using_subcommand context; and __fish_seen_subcommand_from ls" -s h -l help -d 'Print help'
complete -c marvel -n "__fish_marvel_using_subcommand context; and __fish_seen_subcommand_from use" -l state-dir -d 'State directory: daemon socket, state, logs [default: per-user data directory]' -r -F
complete -c marvel -n "__fish_marvel_using_subcommand context; and __fish_seen_subcommand_from use" -l context -d 'Talk to this context\'s daemon (see marvel context) [default: the current one]' -r
complete -c marvel -n "__fish_marvel_using_subcommand context; and __fish_seen_subcommand_from use" -l no-color -d 'Never colour the output (NO_COLOR is honoured too)'
complete -c marvel -n "__fish_marvel_using_subcommand context; and __fish_seen_subcommand_from use" -s h -l help -d 'Print help'
complete -c marvel -n "__fish_marvel_using_subcommand context; and __fish_seen_subcommand_from rm" -l state-dir -d 'State directory: daemon socket, state, logs [default: per-user data directory]' -r -F
complete -c marvel -n "__fish_marvel_using_subcommand context; and __fish_seen_subcommand_from rm" -l context -d 'Talk to this context\'s daemon (see marvel context) [default: the current one]' -r
complete -c marvel -n "__fish_marvel_using_subcommand context; and __fish_seen_subcommand_from rm" -l no-color -d 'Never colour the output (NO_COLOR is honoured too)'
complete -c marvel -n "__fish_marvel_using_subcommand context; and __fish_seen_subcommand_from rm" -s h -l help -d 'Print help'
complete -c marvel -n "__fish_marvel_using_subcommand context; and __fish_seen_subcommand_from help" -f -a "add" -d 'Add a host: ssh://[user@]host[:port]'
complete -c marvel -n "__fish_marvel_using_subcommand context; and __fish_seen_subcommand_from help" -f -a "ls" -d 'List the contexts; the current one is marked'
complete -c marvel -n "__fish_marvel_using_subcommand context; and __fish_seen_subcommand_from help" -f -a "use" -d 'Make a context the one commands use when none is named'
complete -c marvel -n "__fish_marvel_using_subcommand context; and __fish_seen_subcommand_from help" -f -a "rm" -d 'Forget a context (the host and its daemon are untouched)'
complete -c marvel -n "__fish_marvel_using_subcommand context; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c marvel -n "__fish_marvel_using_subcommand completions" -l state-dir -d 'State directory: daemon socket, state, logs [default: per-user data directory]' -r -F
complete -c marvel -n "__fish_marvel_using_subcommand completions" -l context -d 'Talk to this context\'s daemon (see marvel context) [default: the current one]' -r
complete -c marvel -n "__fish_marvel_using_subcommand completions" -l no-color -d 'Never colour the output (NO_COLOR is honoured too)'
complete -c marvel -n "__fish_marvel_using_subcommand completions" -s h -l help -d 'Print help'
complete -c marvel -n "__fish_marvel_using_subcommand help; and not __fish_seen_subcommand_from run get describe inject capture logs reset scale shift kill delete attach events heartbeat status daemon context completions help" -f -a "run" -d 'Validate a team manifest and apply it'
complete -c marvel -n "__fish_marvel_using_subcommand help; and not __fish_seen_subcommand_from run get describe inject capture logs reset scale shift kill delete attach events heartbeat status daemon context completions help" -f -a "get" -d 'List sessions, roles or teams'
complete -c marvel -n "__fish_marvel_using_subcommand help; and not __fish_seen_subcommand_from run get describe inject capture logs reset scale shift kill delete attach events heartbeat status daemon context completions help" -f -a "describe" -d 'Show everything known about a session, role or team'
complete -c marvel -n "__fish_marvel_using_subcommand help; and not __fish_seen_subcommand_from run get describe inject capture logs reset scale shift kill delete attach events heartbeat status daemon context completions help" -f -a "inject" -d 'Type text or keys into a session\'s pane'
complete -c marvel -n "__fish_marvel_using_subcommand help; and not __fish_seen_subcommand_from run get describe inject capture logs reset scale shift kill delete attach events heartbeat status daemon context completions help" -f -a "capture" -d 'Print what a session\'s pane shows now'
complete -c marvel -n "__fish_marvel_using_subcommand help; and not __fish_seen_subcommand_from run get describe inject capture logs reset scale shift kill delete attach events heartbeat status daemon context completions help" -f -a "logs" -d 'Print what a session printed, also for a crashed one'
complete -c marvel -n "__fish_marvel_using_subcommand help; and not __fish_seen_subcommand_from run get describe inject capture logs reset scale shift kill delete attach events heartbeat status daemon context completions help" -f -a "reset" -d 'Clear a role\'s crash-loop history and frozen state'
complete -c marvel -n "__fish_marvel_using_subcommand help; and not __fish_seen_subcommand_from run get describe inject capture logs reset scale shift kill delete attach events heartbeat status daemon context completions help" -f -a "scale" -d 'Change how many replicas a role keeps'
complete -c marvel -n "__fish_marvel_using_subcommand help; and not __fish_seen_subcommand_from run get describe inject capture logs reset scale shift kill delete attach events heartbeat status daemon context completions help" -f -a "shift" -d 'Replace every session of a team with a fresh one, one at a time'
complete -c marvel -n "__fish_marvel_using_subcommand help; and not __fish_seen_subcommand_from run get describe inject capture logs reset scale shift kill delete attach events heartbeat status daemon context completions help" -f -a "kill" -d 'Stop one session (not counted as a crash)'
complete -c marvel -n "__fish_marvel_using_subcommand help; and not __fish_seen_subcommand_from run get describe inject capture logs reset scale shift kill delete attach events heartbeat status daemon context completions help" -f -a "delete" -d 'Delete a team and stop its sessions'
complete -c marvel -n "__fish_marvel_using_subcommand help; and not __fish_seen_subcommand_from run get describe inject capture logs reset scale shift kill delete attach events heartbeat status daemon context completions help" -f -a "attach" -d 'Open a session\'s pane in tmux'
complete -c marvel -n "__fish_marvel_using_subcommand help; and not __fish_seen_subcommand_from run get describe inject capture logs reset scale shift kill delete attach events heartbeat status daemon context completions help" -f -a "events" -d 'Show the event log: crashes, backoffs, freezes, resets'
complete -c marvel -n "__fish_marvel_using_subcommand help; and not __fish_seen_subcommand_from run get describe inject capture logs reset scale shift kill delete attach events heartbeat status daemon context completions help" -f -a "heartbeat" -d 'Report from inside a session\'s pane that its program is alive'
complete -c marvel -n "__fish_marvel_using_subcommand help; and not __fish_seen_subcommand_from run get describe inject capture logs reset scale shift kill delete attach events heartbeat status daemon context completions help" -f -a "status" -d 'Show daemon and tmux health'
complete -c marvel -n "__fish_marvel_using_subcommand help; and not __fish_seen_subcommand_from run get describe inject capture logs reset scale shift kill delete attach events heartbeat status daemon context completions help" -f -a "daemon" -d 'Run or stop the daemon'
complete -c marvel -n "__fish_marvel_using_subcommand help; and not __fish_seen_subcommand_from run get describe inject capture logs reset scale shift kill delete attach events heartbeat status daemon context completions help" -f -a "context" -d 'Name marvel daemons on other hosts (over ssh) and pick one'
complete -c marvel -n "__fish_marvel_using_subcommand help; and not __fish_seen_subcommand_from run get describe inject capture logs reset scale shift kill delete attach events heartbeat status daemon context completions help" -f -a "completions" -d 'Print a shell completion script'
complete -c marvel -n "__fish_marvel_using_subcommand help; and not __fish_seen_subcommand_from run get describe inject capture logs reset scale shift kill delete attach events heartbeat status daemon context completions help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c marvel -n "__fish_marvel_using_subcommand help; and __fish_seen_subcommand_from reset" -f -a "role" -d 'Forget a role\'s crashes and backoff, un-freeze it and spawn at once'
complete -c marvel -n "__fish_marvel_using_subcommand help; and __fish_seen_subcommand_from delete" -f -a "team" -d 'Delete a team: stop every session of every role and forget it'
complete -c marvel -n "__fish_marvel_using_subcommand help; and __fish_seen_subcommand_from daemon" -f -a "run" -d 'Run the daemon in the foreground until stopped'
complete -c marvel -n "__fish_marvel_using_subcommand help; and __fish_seen_subcommand_from daemon" -f -a "stop" -d 'Stop the daemon; the panes it supervises keep running'
complete -c marvel -n "__fish_marvel_using_subcommand help; and __fish_seen_subcommand_from daemon" -f -a "dial-stdio" -d 'Relay the daemon\'s protocol over standard input and output (what an ssh context runs)'
complete -c marvel -n "__fish_marvel_using_subcommand help; and __fish_seen_subcommand_from context" -f -a "add" -d 'Add a host: ssh://[user@]host[:port]'
complete -c marvel -n "__fish_marvel_using_subcommand help; and __fish_seen_subcommand_from context" -f -a "ls" -d 'List the contexts; the current one is marked'
complete -c marvel -n "__fish_marvel_using_subcommand help; and __fish_seen_subcommand_from context" -f -a "use" -d 'Make a context the one commands use when none is named'
complete -c marvel -n "__fish_marvel_using_subcommand help; and __fish_seen_subcommand_from context" -f -a "rm" -d 'Forget a context (the host and its daemon are untouched)'
