"""Runtime adapters: the only code that talks to a container engine."""
