"""The commands: plain functions of (session, policy, clock) that return result objects.

The command line and the daemon both call them; neither holds a copy of the pipeline
(inventory, filesystem figures, inodes, ledger catch-up, plan, lock, use watch, apply,
measure). Nothing here prints: what a command has to say on the way it hands to the session's
`notify`, and its result goes back to the caller to show.
"""
