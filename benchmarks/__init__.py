"""The benchmark of mlcube-ssh-ansible against plain ssh + rsync; run benchmarks/bench.py (see README.md)."""
