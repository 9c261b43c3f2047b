"""A silo's SuperNode authentication key pair.

Flower 1.41 reads the private key in OpenSSH format (`flower-supernode --auth-supernode-private-key`) and the
public key as an OpenSSH line on a NIST curve (`flwr supernode register`). The private key never leaves the
silo; its public key is what the federation operator registers with the SuperLink.
"""

from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec


@dataclass(frozen=True)
class NodeKey:
    private: Path
    public: Path


def write_node_key(folder: Path, name: str) -> NodeKey:
    """`<folder>/<name>` (private, mode 600) and `<folder>/<name>.pub`: a fresh ECDSA P-384 pair."""
    folder.mkdir(parents=True, exist_ok=True)
    key = NodeKey(folder / name, folder / f"{name}.pub")
    if key.private.exists():
        raise FileExistsError(f"{key.private} exists; a silo keeps its key (remove it to make a new one)")
    private = ec.generate_private_key(ec.SECP384R1())
    key.private.write_bytes(private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                                  serialization.NoEncryption()))
    key.private.chmod(0o600)
    key.public.write_bytes(private.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                             serialization.PublicFormat.OpenSSH) + b"\n")
    return key
