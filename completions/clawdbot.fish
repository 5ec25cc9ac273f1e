complete --keep-order --exclusive --command clawdbot --arguments "(COMPLETE=fish clawdbot -- (commandline --current-process --tokenize --cut-at-cursor) (commandline --current-token))"
