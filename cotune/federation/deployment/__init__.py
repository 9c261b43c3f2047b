"""Flower's deployment engine for cotune: one SuperLink (the cloud) and one SuperNode per silo, as separate
processes, with TLS and SuperNode authentication. The ServerApp and ClientApp are the ones simulation runs."""
