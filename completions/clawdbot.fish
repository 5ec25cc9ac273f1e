# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_clawdbot_global_optspecs
    string join \n home= json h/help V/version
end

function __fish_clawdbot_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_clawdbot_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_clawdbot_using_subcommand
    set -l cmd (__fish_clawdbot_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c clawdbot -n "__fish_clawdbot_needs_command" -l home -d 'Keep every file (config, state, logs, sockets) under this folder' -r -F
complete -c clawdbot -n "__fish_clawdbot_needs_command" -l json -d 'Print one JSON document on stdout (human text goes to stderr)'
complete -c clawdbot -n "__fish_clawdbot_needs_command" -s h -l help -d 'Print help'
complete -c clawdbot -n "__fish_clawdbot_needs_command" -s V -l version -d 'Print version'
complete -c clawdbot -n "__fish_clawdbot_needs_command" -f -a "onboard" -d 'Write a config for a channel and check the credentials and the model endpoint'
complete -c clawdbot -n "__fish_clawdbot_needs_command" -f -a "daemon" -d 'Manage background daemons (the bot, or a supervised model service)'
complete -c clawdbot -n "__fish_clawdbot_needs_command" -f -a "send" -d 'Send a message through a running bot daemon'
complete -c clawdbot -n "__fish_clawdbot_needs_command" -f -a "conversations" -d 'List the conversations a running bot has seen recently (ids for targets and allowlists)'
complete -c clawdbot -n "__fish_clawdbot_needs_command" -f -a "healthcheck" -d 'Check the daemon, the channel and the model, in troubleshooting order'
complete -c clawdbot -n "__fish_clawdbot_needs_command" -f -a "config" -d 'Config file tools'
complete -c clawdbot -n "__fish_clawdbot_needs_command" -f -a "completions" -d 'Print a shell completion script'
complete -c clawdbot -n "__fish_clawdbot_needs_command" -f -a "sim" -d 'Run the local DingTalk simulator (Stream gateway, OpenAPI, session webhooks)'
complete -c clawdbot -n "__fish_clawdbot_needs_command" -f -a "quickstart" -d 'Show the whole path working: simulator, bot daemon, a message and its reply'
complete -c clawdbot -n "__fish_clawdbot_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand onboard" -l channel -r -f -a "dingtalk\t''"
complete -c clawdbot -n "__fish_clawdbot_using_subcommand onboard" -l config -d 'Where to write the config (default: CONFIG_DIR/NAME.yaml, the file `daemon start --name NAME` reads without --config)' -r -F
complete -c clawdbot -n "__fish_clawdbot_using_subcommand onboard" -l name -d 'The bot daemon that will use this config: `daemon start --name NAME` then needs no --config' -r
complete -c clawdbot -n "__fish_clawdbot_using_subcommand onboard" -l client-id -r
complete -c clawdbot -n "__fish_clawdbot_using_subcommand onboard" -l client-secret -r
complete -c clawdbot -n "__fish_clawdbot_using_subcommand onboard" -l robot-code -r
complete -c clawdbot -n "__fish_clawdbot_using_subcommand onboard" -l model-base-url -d 'Base URL of the OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1' -r
complete -c clawdbot -n "__fish_clawdbot_using_subcommand onboard" -l model -d 'Model name sent in each request' -r
complete -c clawdbot -n "__fish_clawdbot_using_subcommand onboard" -l model-api-key-env -d 'Write the model API key as ${VAR} with this variable name' -r
complete -c clawdbot -n "__fish_clawdbot_using_subcommand onboard" -l client-secret-env -d 'Write the client secret as ${VAR} with this variable name instead of inline' -r
complete -c clawdbot -n "__fish_clawdbot_using_subcommand onboard" -l api-base -d 'DingTalk OpenAPI base URL (the simulator\'s, for local tests)' -r
complete -c clawdbot -n "__fish_clawdbot_using_subcommand onboard" -l oapi-base -d 'Deprecated and ignored (the bot makes no call on DingTalk\'s old API host); still accepted and checked so that existing scripts run, with a warning' -r
complete -c clawdbot -n "__fish_clawdbot_using_subcommand onboard" -l target -d 'A send target alias (repeatable): NAME=cidXXX (a group) or NAME=user:STAFFID' -r
complete -c clawdbot -n "__fish_clawdbot_using_subcommand onboard" -l home -d 'Keep every file (config, state, logs, sockets) under this folder' -r -F
complete -c clawdbot -n "__fish_clawdbot_using_subcommand onboard" -l non-interactive -d 'Never prompt; take every value from flags or environment variables'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand onboard" -l force -d 'Overwrite an existing config file'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand onboard" -l skip-checks -d 'Write the config without checking credentials or the model endpoint'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand onboard" -l json -d 'Print one JSON document on stdout (human text goes to stderr)'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand onboard" -s h -l help -d 'Print help'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand onboard" -s V -l version -d 'Print version'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand daemon; and not __fish_seen_subcommand_from start run stop restart status rm logs install uninstall help" -l home -d 'Keep every file (config, state, logs, sockets) under this folder' -r -F
complete -c clawdbot -n "__fish_clawdbot_using_subcommand daemon; and not __fish_seen_subcommand_from start run stop restart status rm logs install uninstall help" -l json -d 'Print one JSON document on stdout (human text goes to stderr)'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand daemon; and not __fish_seen_subcommand_from start run stop restart status rm logs install uninstall help" -s h -l help -d 'Print help'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand daemon; and not __fish_seen_subcommand_from start run stop restart status rm logs install uninstall help" -s V -l version -d 'Print version'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand daemon; and not __fish_seen_subcommand_from start run stop restart status rm logs install uninstall help" -f -a "start" -d 'Start a daemon in the background; returns once it answers on its socket'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand daemon; and not __fish_seen_subcommand_from start run stop restart status rm logs install uninstall help" -f -a "run" -d 'Run a daemon in the foreground (systemd Type=notify, containers)'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand daemon; and not __fish_seen_subcommand_from start run stop restart status rm logs install uninstall help" -f -a "stop" -d 'Stop a daemon: drain in-flight work, then SIGTERM, then SIGKILL'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand daemon; and not __fish_seen_subcommand_from start run stop restart status rm logs install uninstall help" -f -a "restart" -d 'Stop, then start again with the same settings'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand daemon; and not __fish_seen_subcommand_from start run stop restart status rm logs install uninstall help" -f -a "status" -d 'Show whether daemons are running, with their figures'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand daemon; and not __fish_seen_subcommand_from start run stop restart status rm logs install uninstall help" -f -a "rm" -d 'Forget a stopped daemon: `daemon status` no longer lists it (its journal is kept)'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand daemon; and not __fish_seen_subcommand_from start run stop restart status rm logs install uninstall help" -f -a "logs" -d 'Print a daemon\'s log; for a daemon logging to stderr, say where its log is (exit 1)'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand daemon; and not __fish_seen_subcommand_from start run stop restart status rm logs install uninstall help" -f -a "install" -d 'Write a systemd unit that runs a daemon (and with --now enable and start it)'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand daemon; and not __fish_seen_subcommand_from start run stop restart status rm logs install uninstall help" -f -a "uninstall" -d 'Remove a unit written by `daemon install` (with --now, stop and disable it first)'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand daemon; and not __fish_seen_subcommand_from start run stop restart status rm logs install uninstall help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand daemon; and __fish_seen_subcommand_from start" -l name -d 'Daemon name (folder and socket name)' -r
complete -c clawdbot -n "__fish_clawdbot_using_subcommand daemon; and __fish_seen_subcommand_from start" -l config -d 'Config file (default: the last one used for this name, else CONFIG_DIR/NAME.yaml)' -r -F
complete -c clawdbot -n "__fish_clawdbot_using_subcommand daemon; and __fish_seen_subcommand_from start" -l log -d 'Log file, rotated by size, or `-` for stderr (`daemon run` only). Default: stderr for `daemon run` under systemd or in a container, else LOG_DIR/NAME.log (`logging.target` in the config can fix either)' -r -F
complete -c clawdbot -n "__fish_clawdbot_using_subcommand daemon; and __fish_seen_subcommand_from start" -l exec -d 'Supervise this command instead of running the bot (a model service such as llama-server)' -r
complete -c clawdbot -n "__fish_clawdbot_using_subcommand daemon; and __fish_seen_subcommand_from start" -l exec-file -d 'Like --exec, with the command line read from FILE (one line; owner-only permissions), so secrets in it stay out of argv and unit files' -r -F
complete -c clawdbot -n "__fish_clawdbot_using_subcommand daemon; and __fish_seen_subcommand_from start" -l health-url -d 'With --exec or --exec-file: URL polled for the model service\'s health' -r
complete -c clawdbot -n "__fish_clawdbot_using_subcommand daemon; and __fish_seen_subcommand_from start" -l timeout -d 'Seconds to wait for the daemon to answer ready and, for a bot with a channel, for DingTalk to accept its credentials (1 to 86400); a daemon not ready by then, or whose credentials DingTalk refused, is stopped (exit 1)' -r
complete -c clawdbot -n "__fish_clawdbot_using_subcommand daemon; and __fish_seen_subcommand_from start" -l home -d 'Keep every file (config, state, logs, sockets) under this folder' -r -F
complete -c clawdbot -n "__fish_clawdbot_using_subcommand daemon; and __fish_seen_subcommand_from start" -l no-wait-channel -d 'Do not wait for DingTalk to accept the channel\'s credentials (the daemon is reported started once it answers on its control socket)'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand daemon; and __fish_seen_subcommand_from start" -l json -d 'Print one JSON document on stdout (human text goes to stderr)'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand daemon; and __fish_seen_subcommand_from start" -s h -l help -d 'Print help'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand daemon; and __fish_seen_subcommand_from start" -s V -l version -d 'Print version'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand daemon; and __fish_seen_subcommand_from run" -l name -d 'Daemon name (folder and socket name)' -r
complete -c clawdbot -n "__fish_clawdbot_using_subcommand daemon; and __fish_seen_subcommand_from run" -l config -d 'Config file (default: the last one used for this name, else CONFIG_DIR/NAME.yaml)' -r -F
complete -c clawdbot -n "__fish_clawdbot_using_subcommand daemon; and __fish_seen_subcommand_from run" -l log -d 'Log file, rotated by size, or `-` for stderr (`daemon run` only). Default: stderr for `daemon run` under systemd or in a container, else LOG_DIR/NAME.log (`logging.target` in the config can fix either)' -r -F
complete -c clawdbot -n "__fish_clawdbot_using_subcommand daemon; and __fish_seen_subcommand_from run" -l exec -d 'Supervise this command instead of running the bot (a model service such as llama-server)' -r
complete -c clawdbot -n "__fish_clawdbot_using_subcommand daemon; and __fish_seen_subcommand_from run" -l exec-file -d 'Like --exec, with the command line read from FILE (one line; owner-only permissions), so secrets in it stay out of argv and unit files' -r -F
complete -c clawdbot -n "__fish_clawdbot_using_subcommand daemon; and __fish_seen_subcommand_from run" -l health-url -d 'With --exec or --exec-file: URL polled for the model service\'s health' -r
complete -c clawdbot -n "__fish_clawdbot_using_subcommand daemon; and __fish_seen_subcommand_from run" -l home -d 'Keep every file (config, state, logs, sockets) under this folder' -r -F
complete -c clawdbot -n "__fish_clawdbot_using_subcommand daemon; and __fish_seen_subcommand_from run" -l json -d 'Print one JSON document on stdout (human text goes to stderr)'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand daemon; and __fish_seen_subcommand_from run" -s h -l help -d 'Print help'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand daemon; and __fish_seen_subcommand_from run" -s V -l version -d 'Print version'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand daemon; and __fish_seen_subcommand_from stop" -l name -r
complete -c clawdbot -n "__fish_clawdbot_using_subcommand daemon; and __fish_seen_subcommand_from stop" -l timeout -d 'Seconds for draining before SIGTERM, and again before SIGKILL (0 to 86400)' -r
complete -c clawdbot -n "__fish_clawdbot_using_subcommand daemon; and __fish_seen_subcommand_from stop" -l home -d 'Keep every file (config, state, logs, sockets) under this folder' -r -F
complete -c clawdbot -n "__fish_clawdbot_using_subcommand daemon; and __fish_seen_subcommand_from stop" -l json -d 'Print one JSON document on stdout (human text goes to stderr)'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand daemon; and __fish_seen_subcommand_from stop" -s h -l help -d 'Print help'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand daemon; and __fish_seen_subcommand_from stop" -s V -l version -d 'Print version'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand daemon; and __fish_seen_subcommand_from restart" -l name -d 'Daemon name (folder and socket name)' -r
complete -c clawdbot -n "__fish_clawdbot_using_subcommand daemon; and __fish_seen_subcommand_from restart" -l config -d 'Config file (default: the last one used for this name, else CONFIG_DIR/NAME.yaml)' -r -F
complete -c clawdbot -n "__fish_clawdbot_using_subcommand daemon; and __fish_seen_subcommand_from restart" -l log -d 'Log file, rotated by size, or `-` for stderr (`daemon run` only). Default: stderr for `daemon run` under systemd or in a container, else LOG_DIR/NAME.log (`logging.target` in the config can fix either)' -r -F
complete -c clawdbot -n "__fish_clawdbot_using_subcommand daemon; and __fish_seen_subcommand_from restart" -l exec -d 'Supervise this command instead of running the bot (a model service such as llama-server)' -r
complete -c clawdbot -n "__fish_clawdbot_using_subcommand daemon; and __fish_seen_subcommand_from restart" -l exec-file -d 'Like --exec, with the command line read from FILE (one line; owner-only permissions), so secrets in it stay out of argv and unit files' -r -F
complete -c clawdbot -n "__fish_clawdbot_using_subcommand daemon; and __fish_seen_subcommand_from restart" -l health-url -d 'With --exec or --exec-file: URL polled for the model service\'s health' -r
complete -c clawdbot -n "__fish_clawdbot_using_subcommand daemon; and __fish_seen_subcommand_from restart" -l timeout -d 'Seconds allowed for the stop and for the start (1 to 86400)' -r
complete -c clawdbot -n "__fish_clawdbot_using_subcommand daemon; and __fish_seen_subcommand_from restart" -l home -d 'Keep every file (config, state, logs, sockets) under this folder' -r -F
complete -c clawdbot -n "__fish_clawdbot_using_subcommand daemon; and __fish_seen_subcommand_from restart" -l no-wait-channel -d 'Do not wait for DingTalk to accept the channel\'s credentials (the daemon is reported started once it answers on its control socket)'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand daemon; and __fish_seen_subcommand_from restart" -l json -d 'Print one JSON document on stdout (human text goes to stderr)'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand daemon; and __fish_seen_subcommand_from restart" -s h -l help -d 'Print help'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand daemon; and __fish_seen_subcommand_from restart" -s V -l version -d 'Print version'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand daemon; and __fish_seen_subcommand_from status" -l name -d 'One daemon; without it, every daemon under this home' -r
complete -c clawdbot -n "__fish_clawdbot_using_subcommand daemon; and __fish_seen_subcommand_from status" -l home -d 'Keep every file (config, state, logs, sockets) under this folder' -r -F
complete -c clawdbot -n "__fish_clawdbot_using_subcommand daemon; and __fish_seen_subcommand_from status" -l json -d 'Print one JSON document on stdout (human text goes to stderr)'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand daemon; and __fish_seen_subcommand_from status" -s h -l help -d 'Print help'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand daemon; and __fish_seen_subcommand_from status" -s V -l version -d 'Print version'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand daemon; and __fish_seen_subcommand_from rm" -l name -r
complete -c clawdbot -n "__fish_clawdbot_using_subcommand daemon; and __fish_seen_subcommand_from rm" -l home -d 'Keep every file (config, state, logs, sockets) under this folder' -r -F
complete -c clawdbot -n "__fish_clawdbot_using_subcommand daemon; and __fish_seen_subcommand_from rm" -l json -d 'Print one JSON document on stdout (human text goes to stderr)'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand daemon; and __fish_seen_subcommand_from rm" -s h -l help -d 'Print help'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand daemon; and __fish_seen_subcommand_from rm" -s V -l version -d 'Print version'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand daemon; and __fish_seen_subcommand_from logs" -l name -d 'One daemon; without it, every daemon\'s log, merged by time, each line prefixed with its daemon\'s name' -r
complete -c clawdbot -n "__fish_clawdbot_using_subcommand daemon; and __fish_seen_subcommand_from logs" -l since -d 'Only lines logged since then: a duration back from now (`90s`, `10m`, `2h`, `1d`) or an RFC 3339 time (`2026-11-30T22:00:00Z`)' -r
complete -c clawdbot -n "__fish_clawdbot_using_subcommand daemon; and __fish_seen_subcommand_from logs" -s n -l lines -d 'How many lines from the end to print first' -r
complete -c clawdbot -n "__fish_clawdbot_using_subcommand daemon; and __fish_seen_subcommand_from logs" -l home -d 'Keep every file (config, state, logs, sockets) under this folder' -r -F
complete -c clawdbot -n "__fish_clawdbot_using_subcommand daemon; and __fish_seen_subcommand_from logs" -s f -l follow -d 'Keep printing new lines (follows rotation)'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand daemon; and __fish_seen_subcommand_from logs" -l json -d 'Print one JSON document on stdout (human text goes to stderr)'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand daemon; and __fish_seen_subcommand_from logs" -s h -l help -d 'Print help'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand daemon; and __fish_seen_subcommand_from logs" -s V -l version -d 'Print version'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand daemon; and __fish_seen_subcommand_from install" -l name -d 'Daemon name (the unit\'s instance name, %i)' -r
complete -c clawdbot -n "__fish_clawdbot_using_subcommand daemon; and __fish_seen_subcommand_from install" -l unit-dir -d 'Write the unit in this folder instead of systemd\'s (for packaging and tests)' -r -F
complete -c clawdbot -n "__fish_clawdbot_using_subcommand daemon; and __fish_seen_subcommand_from install" -l config -d 'Config file for the bot (default: the unit\'s configuration folder, /etc/clawdbot/NAME.yaml)' -r -F
complete -c clawdbot -n "__fish_clawdbot_using_subcommand daemon; and __fish_seen_subcommand_from install" -l exec -d 'Supervise this command instead of running the bot (a model service unit)' -r
complete -c clawdbot -n "__fish_clawdbot_using_subcommand daemon; and __fish_seen_subcommand_from install" -l health-url -d 'With --exec: URL polled for the model service\'s health' -r
complete -c clawdbot -n "__fish_clawdbot_using_subcommand daemon; and __fish_seen_subcommand_from install" -l home -d 'Keep every file (config, state, logs, sockets) under this folder' -r -F
complete -c clawdbot -n "__fish_clawdbot_using_subcommand daemon; and __fish_seen_subcommand_from install" -l user -d 'A user unit (`systemctl --user`, ~/.config/systemd/user) instead of a system one (/etc/systemd/system, needs root)'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand daemon; and __fish_seen_subcommand_from install" -l now -d 'Also run systemctl: daemon-reload and enable --now (install) or disable --now (uninstall)'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand daemon; and __fish_seen_subcommand_from install" -l force -d 'Replace a unit file that exists already'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand daemon; and __fish_seen_subcommand_from install" -l json -d 'Print one JSON document on stdout (human text goes to stderr)'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand daemon; and __fish_seen_subcommand_from install" -s h -l help -d 'Print help'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand daemon; and __fish_seen_subcommand_from install" -s V -l version -d 'Print version'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand daemon; and __fish_seen_subcommand_from uninstall" -l name -d 'Daemon name (the unit\'s instance name, %i)' -r
complete -c clawdbot -n "__fish_clawdbot_using_subcommand daemon; and __fish_seen_subcommand_from uninstall" -l unit-dir -d 'Write the unit in this folder instead of systemd\'s (for packaging and tests)' -r -F
complete -c clawdbot -n "__fish_clawdbot_using_subcommand daemon; and __fish_seen_subcommand_from uninstall" -l home -d 'Keep every file (config, state, logs, sockets) under this folder' -r -F
complete -c clawdbot -n "__fish_clawdbot_using_subcommand daemon; and __fish_seen_subcommand_from uninstall" -l user -d 'A user unit (`systemctl --user`, ~/.config/systemd/user) instead of a system one (/etc/systemd/system, needs root)'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand daemon; and __fish_seen_subcommand_from uninstall" -l now -d 'Also run systemctl: daemon-reload and enable --now (install) or disable --now (uninstall)'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand daemon; and __fish_seen_subcommand_from uninstall" -l json -d 'Print one JSON document on stdout (human text goes to stderr)'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand daemon; and __fish_seen_subcommand_from uninstall" -s h -l help -d 'Print help'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand daemon; and __fish_seen_subcommand_from uninstall" -s V -l version -d 'Print version'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand daemon; and __fish_seen_subcommand_from help" -f -a "start" -d 'Start a daemon in the background; returns once it answers on its socket'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand daemon; and __fish_seen_subcommand_from help" -f -a "run" -d 'Run a daemon in the foreground (systemd Type=notify, containers)'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand daemon; and __fish_seen_subcommand_from help" -f -a "stop" -d 'Stop a daemon: drain in-flight work, then SIGTERM, then SIGKILL'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand daemon; and __fish_seen_subcommand_from help" -f -a "restart" -d 'Stop, then start again with the same settings'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand daemon; and __fish_seen_subcommand_from help" -f -a "status" -d 'Show whether daemons are running, with their figures'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand daemon; and __fish_seen_subcommand_from help" -f -a "rm" -d 'Forget a stopped daemon: `daemon status` no longer lists it (its journal is kept)'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand daemon; and __fish_seen_subcommand_from help" -f -a "logs" -d 'Print a daemon\'s log; for a daemon logging to stderr, say where its log is (exit 1)'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand daemon; and __fish_seen_subcommand_from help" -f -a "install" -d 'Write a systemd unit that runs a daemon (and with --now enable and start it)'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand daemon; and __fish_seen_subcommand_from help" -f -a "uninstall" -d 'Remove a unit written by `daemon install` (with --now, stop and disable it first)'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand daemon; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand send" -l name -r
complete -c clawdbot -n "__fish_clawdbot_using_subcommand send" -l to -d 'A target alias from the config, a conversation id, or user:STAFFID' -r
complete -c clawdbot -n "__fish_clawdbot_using_subcommand send" -l text -d 'The message' -r
complete -c clawdbot -n "__fish_clawdbot_using_subcommand send" -l timeout -d 'Seconds to wait for DingTalk\'s answer (1 to 86400)' -r
complete -c clawdbot -n "__fish_clawdbot_using_subcommand send" -l home -d 'Keep every file (config, state, logs, sockets) under this folder' -r -F
complete -c clawdbot -n "__fish_clawdbot_using_subcommand send" -l markdown -d 'Send as markdown instead of plain text'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand send" -l json -d 'Print one JSON document on stdout (human text goes to stderr)'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand send" -s h -l help -d 'Print help'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand send" -s V -l version -d 'Print version'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand conversations" -l name -d 'The bot daemon to ask' -r
complete -c clawdbot -n "__fish_clawdbot_using_subcommand conversations" -l limit -d 'Show at most this many, the most recently active first (1 to 200; the daemon remembers 200)' -r
complete -c clawdbot -n "__fish_clawdbot_using_subcommand conversations" -l home -d 'Keep every file (config, state, logs, sockets) under this folder' -r -F
complete -c clawdbot -n "__fish_clawdbot_using_subcommand conversations" -l json -d 'Print one JSON document on stdout (human text goes to stderr)'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand conversations" -s h -l help -d 'Print help'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand conversations" -s V -l version -d 'Print version'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand healthcheck" -l name -d 'The daemon to check' -r
complete -c clawdbot -n "__fish_clawdbot_using_subcommand healthcheck" -l config -d 'Pre-flight: check a config\'s model endpoints and credentials without a daemon' -r -F
complete -c clawdbot -n "__fish_clawdbot_using_subcommand healthcheck" -l timeout -d 'Seconds for all checks together (1 to 86400)' -r
complete -c clawdbot -n "__fish_clawdbot_using_subcommand healthcheck" -l home -d 'Keep every file (config, state, logs, sockets) under this folder' -r -F
complete -c clawdbot -n "__fish_clawdbot_using_subcommand healthcheck" -l json -d 'Print one JSON document on stdout (human text goes to stderr)'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand healthcheck" -s h -l help -d 'Print help'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand healthcheck" -s V -l version -d 'Print version'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand config; and not __fish_seen_subcommand_from check help" -l home -d 'Keep every file (config, state, logs, sockets) under this folder' -r -F
complete -c clawdbot -n "__fish_clawdbot_using_subcommand config; and not __fish_seen_subcommand_from check help" -l json -d 'Print one JSON document on stdout (human text goes to stderr)'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand config; and not __fish_seen_subcommand_from check help" -s h -l help -d 'Print help'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand config; and not __fish_seen_subcommand_from check help" -s V -l version -d 'Print version'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand config; and not __fish_seen_subcommand_from check help" -f -a "check" -d 'Load a config and report the first problem (exit 0 good, 2 bad)'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand config; and not __fish_seen_subcommand_from check help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand config; and __fish_seen_subcommand_from check" -l config -r -F
complete -c clawdbot -n "__fish_clawdbot_using_subcommand config; and __fish_seen_subcommand_from check" -l home -d 'Keep every file (config, state, logs, sockets) under this folder' -r -F
complete -c clawdbot -n "__fish_clawdbot_using_subcommand config; and __fish_seen_subcommand_from check" -l json -d 'Print one JSON document on stdout (human text goes to stderr)'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand config; and __fish_seen_subcommand_from check" -s h -l help -d 'Print help'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand config; and __fish_seen_subcommand_from check" -s V -l version -d 'Print version'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand config; and __fish_seen_subcommand_from help" -f -a "check" -d 'Load a config and report the first problem (exit 0 good, 2 bad)'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand config; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand completions" -l home -d 'Keep every file (config, state, logs, sockets) under this folder' -r -F
complete -c clawdbot -n "__fish_clawdbot_using_subcommand completions" -l json -d 'Print one JSON document on stdout (human text goes to stderr)'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand completions" -s h -l help -d 'Print help'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand completions" -s V -l version -d 'Print version'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand sim; and not __fish_seen_subcommand_from serve inject outbox help" -l home -d 'Keep every file (config, state, logs, sockets) under this folder' -r -F
complete -c clawdbot -n "__fish_clawdbot_using_subcommand sim; and not __fish_seen_subcommand_from serve inject outbox help" -l json -d 'Print one JSON document on stdout (human text goes to stderr)'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand sim; and not __fish_seen_subcommand_from serve inject outbox help" -s h -l help -d 'Print help'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand sim; and not __fish_seen_subcommand_from serve inject outbox help" -s V -l version -d 'Print version'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand sim; and not __fish_seen_subcommand_from serve inject outbox help" -f -a "serve" -d 'Serve the simulator until interrupted (prints its base URL)'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand sim; and not __fish_seen_subcommand_from serve inject outbox help" -f -a "inject" -d 'Send a message to the bot as a simulated user (prints the msgId)'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand sim; and not __fish_seen_subcommand_from serve inject outbox help" -f -a "outbox" -d 'Print what the bot sent (every message, with route and body)'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand sim; and not __fish_seen_subcommand_from serve inject outbox help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand sim; and __fish_seen_subcommand_from serve" -l listen -d 'Address to listen on (loopback by default; port 0 = any free port). Any other address is warned about: the simulator accepts its demo credentials from anyone who can reach it' -r
complete -c clawdbot -n "__fish_clawdbot_using_subcommand sim; and __fish_seen_subcommand_from serve" -l port-file -d 'Write the base URL to this file once listening' -r -F
complete -c clawdbot -n "__fish_clawdbot_using_subcommand sim; and __fish_seen_subcommand_from serve" -l client-id -d 'The app\'s client id (default: the simulator\'s demo app)' -r
complete -c clawdbot -n "__fish_clawdbot_using_subcommand sim; and __fish_seen_subcommand_from serve" -l client-secret -d 'The app\'s client secret (default: the demo app\'s)' -r
complete -c clawdbot -n "__fish_clawdbot_using_subcommand sim; and __fish_seen_subcommand_from serve" -l robot-code -d 'Robot code (defaults to the client id)' -r
complete -c clawdbot -n "__fish_clawdbot_using_subcommand sim; and __fish_seen_subcommand_from serve" -l ping-interval-ms -d 'SYSTEM ping period per connection (0 = never)' -r
complete -c clawdbot -n "__fish_clawdbot_using_subcommand sim; and __fish_seen_subcommand_from serve" -l redeliver-unacked-ms -d 'Redeliver bot messages not ACKed after this long' -r
complete -c clawdbot -n "__fish_clawdbot_using_subcommand sim; and __fish_seen_subcommand_from serve" -l disconnect-every-ms -d 'Send `disconnect` this long after each connection opens' -r
complete -c clawdbot -n "__fish_clawdbot_using_subcommand sim; and __fish_seen_subcommand_from serve" -l disconnect-grace-ms -d 'Close a connection this long after its `disconnect`' -r
complete -c clawdbot -n "__fish_clawdbot_using_subcommand sim; and __fish_seen_subcommand_from serve" -l session-ttl-ms -d 'Session webhook lifetime' -r
complete -c clawdbot -n "__fish_clawdbot_using_subcommand sim; and __fish_seen_subcommand_from serve" -l ticket-ttl-ms -d 'Stream ticket lifetime (single use; DingTalk\'s last 90 s)' -r
complete -c clawdbot -n "__fish_clawdbot_using_subcommand sim; and __fish_seen_subcommand_from serve" -l home -d 'Keep every file (config, state, logs, sockets) under this folder' -r -F
complete -c clawdbot -n "__fish_clawdbot_using_subcommand sim; and __fish_seen_subcommand_from serve" -l json -d 'Print one JSON document on stdout (human text goes to stderr)'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand sim; and __fish_seen_subcommand_from serve" -s h -l help -d 'Print help'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand sim; and __fish_seen_subcommand_from serve" -s V -l version -d 'Print version'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand sim; and __fish_seen_subcommand_from inject" -l sim -d 'Simulator base URL (or HOST:PORT); default: the simulator `quickstart` runs' -r
complete -c clawdbot -n "__fish_clawdbot_using_subcommand sim; and __fish_seen_subcommand_from inject" -l text -r
complete -c clawdbot -n "__fish_clawdbot_using_subcommand sim; and __fish_seen_subcommand_from inject" -l conversation -d 'Conversation id (default: one per chat kind / sender)' -r
complete -c clawdbot -n "__fish_clawdbot_using_subcommand sim; and __fish_seen_subcommand_from inject" -l sender-staff-id -r
complete -c clawdbot -n "__fish_clawdbot_using_subcommand sim; and __fish_seen_subcommand_from inject" -l nick -r
complete -c clawdbot -n "__fish_clawdbot_using_subcommand sim; and __fish_seen_subcommand_from inject" -l msgtype -d 'text, audio, richText, picture, video, file, unknownMsgType' -r
complete -c clawdbot -n "__fish_clawdbot_using_subcommand sim; and __fish_seen_subcommand_from inject" -l wait-timeout -d 'With --wait: the longest wait for the reply, seconds' -r
complete -c clawdbot -n "__fish_clawdbot_using_subcommand sim; and __fish_seen_subcommand_from inject" -l home -d 'Keep every file (config, state, logs, sockets) under this folder' -r -F
complete -c clawdbot -n "__fish_clawdbot_using_subcommand sim; and __fish_seen_subcommand_from inject" -l group -d 'A group chat (the bot was @-mentioned)'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand sim; and __fish_seen_subcommand_from inject" -l direct -d 'A 1:1 chat (default)'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand sim; and __fish_seen_subcommand_from inject" -l wait -d 'Wait for the bot\'s reply in this conversation and print it (exit 1 when none comes within --wait-timeout)'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand sim; and __fish_seen_subcommand_from inject" -l json -d 'Print one JSON document on stdout (human text goes to stderr)'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand sim; and __fish_seen_subcommand_from inject" -s h -l help -d 'Print help'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand sim; and __fish_seen_subcommand_from inject" -s V -l version -d 'Print version'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand sim; and __fish_seen_subcommand_from outbox" -l sim -d 'Simulator base URL (or HOST:PORT); default: the simulator `quickstart` runs' -r
complete -c clawdbot -n "__fish_clawdbot_using_subcommand sim; and __fish_seen_subcommand_from outbox" -l wait -d 'Wait until at least N messages are in the outbox' -r
complete -c clawdbot -n "__fish_clawdbot_using_subcommand sim; and __fish_seen_subcommand_from outbox" -l timeout -d 'Longest wait, seconds' -r
complete -c clawdbot -n "__fish_clawdbot_using_subcommand sim; and __fish_seen_subcommand_from outbox" -l home -d 'Keep every file (config, state, logs, sockets) under this folder' -r -F
complete -c clawdbot -n "__fish_clawdbot_using_subcommand sim; and __fish_seen_subcommand_from outbox" -l json -d 'Print one JSON document on stdout (human text goes to stderr)'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand sim; and __fish_seen_subcommand_from outbox" -s h -l help -d 'Print help'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand sim; and __fish_seen_subcommand_from outbox" -s V -l version -d 'Print version'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand sim; and __fish_seen_subcommand_from help" -f -a "serve" -d 'Serve the simulator until interrupted (prints its base URL)'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand sim; and __fish_seen_subcommand_from help" -f -a "inject" -d 'Send a message to the bot as a simulated user (prints the msgId)'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand sim; and __fish_seen_subcommand_from help" -f -a "outbox" -d 'Print what the bot sent (every message, with route and body)'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand sim; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand quickstart" -l model-base-url -d 'Use this OpenAI-compatible endpoint instead of the built-in demo model' -r
complete -c clawdbot -n "__fish_clawdbot_using_subcommand quickstart" -l model -d 'Model name for --model-base-url' -r
complete -c clawdbot -n "__fish_clawdbot_using_subcommand quickstart" -l text -d 'The message the simulated user sends' -r
complete -c clawdbot -n "__fish_clawdbot_using_subcommand quickstart" -l home -d 'Keep every file (config, state, logs, sockets) under this folder' -r -F
complete -c clawdbot -n "__fish_clawdbot_using_subcommand quickstart" -l stop -d 'Stop the simulator and the daemon when done instead of leaving them running'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand quickstart" -l clean -d 'With --stop: run no demo; only stop the demo\'s bot and simulator and remove the demo folder (its config, state, logs and sockets)'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand quickstart" -l json -d 'Print one JSON document on stdout (human text goes to stderr)'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand quickstart" -s h -l help -d 'Print help'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand quickstart" -s V -l version -d 'Print version'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand help; and not __fish_seen_subcommand_from onboard daemon send conversations healthcheck config completions sim quickstart help" -f -a "onboard" -d 'Write a config for a channel and check the credentials and the model endpoint'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand help; and not __fish_seen_subcommand_from onboard daemon send conversations healthcheck config completions sim quickstart help" -f -a "daemon" -d 'Manage background daemons (the bot, or a supervised model service)'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand help; and not __fish_seen_subcommand_from onboard daemon send conversations healthcheck config completions sim quickstart help" -f -a "send" -d 'Send a message through a running bot daemon'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand help; and not __fish_seen_subcommand_from onboard daemon send conversations healthcheck config completions sim quickstart help" -f -a "conversations" -d 'List the conversations a running bot has seen recently (ids for targets and allowlists)'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand help; and not __fish_seen_subcommand_from onboard daemon send conversations healthcheck config completions sim quickstart help" -f -a "healthcheck" -d 'Check the daemon, the channel and the model, in troubleshooting order'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand help; and not __fish_seen_subcommand_from onboard daemon send conversations healthcheck config completions sim quickstart help" -f -a "config" -d 'Config file tools'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand help; and not __fish_seen_subcommand_from onboard daemon send conversations healthcheck config completions sim quickstart help" -f -a "completions" -d 'Print a shell completion script'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand help; and not __fish_seen_subcommand_from onboard daemon send conversations healthcheck config completions sim quickstart help" -f -a "sim" -d 'Run the local DingTalk simulator (Stream gateway, OpenAPI, session webhooks)'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand help; and not __fish_seen_subcommand_from onboard daemon send conversations healthcheck config completions sim quickstart help" -f -a "quickstart" -d 'Show the whole path working: simulator, bot daemon, a message and its reply'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand help; and not __fish_seen_subcommand_from onboard daemon send conversations healthcheck config completions sim quickstart help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand help; and __fish_seen_subcommand_from daemon" -f -a "start" -d 'Start a daemon in the background; returns once it answers on its socket'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand help; and __fish_seen_subcommand_from daemon" -f -a "run" -d 'Run a daemon in the foreground (systemd Type=notify, containers)'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand help; and __fish_seen_subcommand_from daemon" -f -a "stop" -d 'Stop a daemon: drain in-flight work, then SIGTERM, then SIGKILL'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand help; and __fish_seen_subcommand_from daemon" -f -a "restart" -d 'Stop, then start again with the same settings'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand help; and __fish_seen_subcommand_from daemon" -f -a "status" -d 'Show whether daemons are running, with their figures'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand help; and __fish_seen_subcommand_from daemon" -f -a "rm" -d 'Forget a stopped daemon: `daemon status` no longer lists it (its journal is kept)'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand help; and __fish_seen_subcommand_from daemon" -f -a "logs" -d 'Print a daemon\'s log; for a daemon logging to stderr, say where its log is (exit 1)'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand help; and __fish_seen_subcommand_from daemon" -f -a "install" -d 'Write a systemd unit that runs a daemon (and with --now enable and start it)'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand help; and __fish_seen_subcommand_from daemon" -f -a "uninstall" -d 'Remove a unit written by `daemon install` (with --now, stop and disable it first)'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand help; and __fish_seen_subcommand_from config" -f -a "check" -d 'Load a config and report the first problem (exit 0 good, 2 bad)'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand help; and __fish_seen_subcommand_from sim" -f -a "serve" -d 'Serve the simulator until interrupted (prints its base URL)'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand help; and __fish_seen_subcommand_from sim" -f -a "inject" -d 'Send a message to the bot as a simulated user (prints the msgId)'
complete -c clawdbot -n "__fish_clawdbot_using_subcommand help; and __fish_seen_subcommand_from sim" -f -a "outbox" -d 'Print what the bot sent (every message, with route and body)'
