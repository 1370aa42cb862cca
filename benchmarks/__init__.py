"""Speed and memory figures for databroker_lite (issue 2); run ``python -m benchmarks``.

Every figure is measured next to a baseline (raw h5py, plain sqlite3 or a naive
scan) in the same run on the same data. See benchmarks/README.md.
"""
