"""A lent GPU machine: the data it gets, the suite that checks and times the CUDA path, and
the runs too long for the CPU."""
