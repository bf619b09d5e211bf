"""Crescendo's data plane: the elastic trainer launched by torchrun.

Entry point `python -m crescendo_trainer`; the loop in loop.py, one module per decision
(batching, lr, sampler, checkpoint, policies) and one reader of the environment (environment.py).
"""
