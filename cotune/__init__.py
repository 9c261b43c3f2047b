"""cotune: federated co-tuning of a cloud LLM and the SLMs of private silos.

OpenMP threads wait passively unless the user chose otherwise. Set here, before torch loads its OpenMP runtime:
a cotune job shares the cores between processes (the server, Ray's silo workers, the vLLM server), and with
libgomp's default active spin-wait a 2-thread LoRA step on 2 shared cores ran 5x slower (10-19 s against 2-3 s).
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
