"""The units of work (see DESIGN.md).

Importing this package asks PyTorch to back its large CPU buffers with transparent huge pages
(`THP_MEM_ALLOC_ENABLE`, read once, at torch's first CPU allocation, so it is set here, before any
task imports torch). Each batch's activations are fresh multi-megabyte allocations that glibc
maps and unmaps; with 4 KiB pages that cost ~11 M page faults per 320 images and ~15 % of the
forward rate on the benchmark machine (bench/throughput.py). A value already in the
environment wins; the kernel ignores the advice where THP is off.
"""

import os

os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
