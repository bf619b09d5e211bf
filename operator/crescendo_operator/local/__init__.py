"""The local backend: each replica of a job is a `torchrun` agent process on this machine."""
