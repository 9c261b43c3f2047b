"""Every silo a round sampled, accounted for: accepted, rejected (with the reason) or missing.

Flower hands the strategy only the replies that came back; a silo that timed out or disconnected without an error
reply leaves nothing to look at. The ledger remembers which nodes the round's train messages went to, so the
aggregate row can name the silos that never answered instead of silently counting the ones that did.
"""

from dataclasses import dataclass, field

ACCEPTED, REJECTED, MISSING = "accepted", "rejected", "missing"
NO_REPLY = "missing: no reply before the round closed (timed out or disconnected)"


@dataclass
class RoundLedger:
    sampled: list[int] = field(default_factory=list)  # node ids the train messages went to; empty: unknown
    entries: dict[int, dict] = field(default_factory=dict)  # node id -> {"node", "client", "status", "reason"?}

    def accept(self, node: int, client: int) -> None:
        self.entries[node] = {"node": node, "client": client, "status": ACCEPTED}

    def reject(self, node: int, client: int, reason: str, failed: bool = False) -> None:
        """`failed`: the silo answered with an error (its exception, or Flower's NODE_UNAVAILABLE), not content."""
        entry = {"node": node, "client": client, "status": REJECTED, "reason": reason}
        self.entries[node] = {**entry, "failed": True} if failed else entry

    def missing(self) -> list[int]:
        """Sampled nodes with no entry: no reply and no error came back from them."""
        return [node for node in self.sampled if node not in self.entries]

    def num_sampled(self) -> int:
        """The round's sample size; when unknown (the strategy was driven without `configure_train`), the silos
        that answered."""
        return len(self.sampled) if self.sampled else len(self.entries)

    def facts(self) -> dict:
        """Counts per status and one entry per sampled silo, for the round's aggregate row."""
        silos = [*self.entries.values(), *({"node": n, "client": -1, "status": MISSING} for n in self.missing())]
        silos.sort(key=lambda e: (e["client"], e["node"]))
        rejected = [e for e in silos if e["status"] == REJECTED]
        return {
            "sampled": self.num_sampled(),
            "valid": sum(e["status"] == ACCEPTED for e in silos),
            "rejected": sum(not e.get("failed") for e in rejected),
            "failed": sum(bool(e.get("failed")) for e in rejected),
            "missing": len(self.missing()),
            "silos": silos,
        }
