"""cotune: federated co-tuning of a cloud LLM and the SLMs of private silos.

How OpenMP threads wait is chosen here, before torch loads its OpenMP runtime (see `cotune.openmp`), and
inherited by every process the job starts (Ray's silo workers, exporters).
"""

from cotune.openmp import apply_wait_policy

apply_wait_policy()
