"""Throughput and cost measurements that write JSON + a markdown summary (``make bench``; not timed tests).

``python -m benchmarks.run`` runs the CPU benchmarks into ``benchmarks/results``; ``python -m benchmarks.gpu``
is the GPU training-throughput benchmark (one CUDA device).
"""
