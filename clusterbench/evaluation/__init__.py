"""From predictions to numbers: `predictions` (what a method returns), `metrics` (ACC, NMI,
ARI, top-k, top->L, ECE), `sampled` (multi-label GT by repeated draws), `evaluate`
(what the run calls, as the view asks) and `plots` (reliability diagram, confidence histogram).
"""
