"""The speed and memory tool (`make bench` = `python -m clusterbench perf`).

model.py         problem shapes, FLOP count of a step, the exact memory model of the fused step
step.py          the timed steps: fused, the per-head reference loop, GEMM rate, a Lightning fit
memory_probe.py  peak-memory probes in fresh processes, and the memory model's scaling check
probing.py       the stacked linear-probe grid against the same probes trained one by one
extract.py       extraction throughput: the whole pipeline against the bare model forward
scale.py         a million rows on a CPU: IVF kNN recall and time vs exact search, kNN + k-means
scale_data.py    the scale benchmark's data: a class mixture on the unit sphere, its exact kNN
gpu.py           every GPU measurement in one run (`make bench-gpu`)
__main__.py      the CLI: runs everything, writes the JSON report and prints the table
"""
