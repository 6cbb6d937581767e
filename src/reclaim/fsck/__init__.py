"""fsck: find the storage an engine leaked, prove it, quarantine it, restore it."""
