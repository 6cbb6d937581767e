"""Readers of on-disk formats that both the runtime adapters (runtimes/) and fsck (fsck/) use:
bbolt files, containerd's snapshotter records, content-addressed ids and chain ids, and the
sizing of trees. It imports neither of them."""
