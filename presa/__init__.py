"""PreSa (arXiv 2512.20173): offline safe policy learning from preferences and safety labels.

Modules: config (PreSaConfig), losses (pure torch functions), networks (batched-ensemble actor),
trainer (BC warm-up, frozen reference, joint policy/multiplier updates, as a bench.training Learner),
algorithm (PreSa and the CPL ablation behind bench.interfaces.Algorithm). See docs/presa.md.
"""
