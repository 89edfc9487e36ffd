"""SDMS load benchmarks: one command (`bench/run`) measures SDMS against its floor and its limit.

See bench/README.md for what is measured and how to read the numbers.
"""
