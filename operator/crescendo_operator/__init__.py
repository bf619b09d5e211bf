"""Crescendo's control plane: the kopf operator for AdaptiveBatchJob and the `crescendo` CLI.

The pure parts (builders, scaling, status, conditions) and the controller protocols are shared
with the local backend; `kube` is the only module that talks to the Kubernetes API.
"""
