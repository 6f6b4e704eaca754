complete --keep-order --exclusive --command marvel --arguments "(COMPLETE=fish marvel -- (commandline --current-process --tokenize --cut-at-cursor) (commandline --current-token))"
