"""Federation hardening: how replies are validated and aggregated, and the optional privacy layers.

Section `[federation]`. Defaults keep plain FedAvg with every validation check on; differential privacy and
SecAgg+ are off. The server applies all of it: silos need no copy of this section.
"""

from dataclasses import dataclass
from typing import Literal

from cotune.config.errors import require
from cotune.config.fields import option

Aggregation = Literal["fedavg", "trimmed_mean", "median"]
NormAction = Literal["reject", "clip"]


@dataclass
class FederationConfig:
    aggregation: Aggregation = option(
        "fedavg",
        help="How accepted updates combine: example-weighted mean, coordinate-wise trimmed mean, or median "
        "(the last two bound what a few poisoned silos can do).",
    )
    trim_fraction: float = option(0.2, help="Share of updates cut at each end, per coordinate, by trimmed_mean.")
    clip_norm: float = option(
        0.0, help="Scale each accepted update (reply - global) down to this L2 norm before combining; 0: no clipping."
    )
    max_update_norm_multiple: float = option(
        10.0,
        help="Reject an update whose L2 norm exceeds this multiple of the median norm of the round's other "
        "updates; 0 turns the check off. The aggregate row of metrics.jsonl logs each round's median norm.",
    )
    norm_action: NormAction = option(
        "reject",
        help="What happens to an update over max_update_norm_multiple x its reference: rejected, or clipped to that "
        "bound and combined (it then moves the mean by at most bound / accepted silos).",
    )
    norm_history_rounds: int = option(
        5,
        help="Closed rounds whose accepted update norms form the trusted reference norm: an update is judged against "
        "the smaller of the median of the round's other updates and the median of these; 0: the round's medians "
        "alone (colluders who are half of a round then vouch for each other).",
    )
    quorum: float = option(
        0.5,
        help="A round closes when more than this share of its sampled silos sent an accepted update (0.5: a strict "
        "majority; 1: all of them); with fewer it is skipped with a logged reason and the global adapter kept. "
        "clients.min_clients, when > 0, is a floor on top.",
    )
    max_examples_multiple: float = option(
        2.0,
        help="Without a registry of example counts: cap each silo's claimed example count (its FedAvg weight) at this "
        "multiple of the median claim of the round's other silos, logged when it bites. 0: trust claims (one silo "
        "can then take over the mean).",
    )
    registered_examples: list[int] = option(
        default_factory=list,
        help="Example counts the operator registered, by partition id: a silo's claim weighs at most its partition's "
        "count (an unknown partition: the smallest count), and the median cap is not used. Empty: the simulation's "
        "partition sizes when the server passes them, else the median cap.",
    )
    max_message_bytes: int = option(
        0, help="Reject a reply whose arrays take more bytes than this; 0: twice the largest correct reply (fp32)."
    )
    dp_noise_multiplier: float = option(
        0.0,
        help="Central differential privacy when > 0: silos clip their update to dp_clipping_norm (Flower's "
        "fixedclipping_mod) and the server adds Gaussian noise of this multiple of the clipping norm to the sum. "
        "Needs quantization.wire fp32 or fp16.",
    )
    dp_clipping_norm: float = option(
        1.0, help="L2 bound of each silo's update under DP; set it near the round's median update norm."
    )
    dp_delta: float = option(1e-5, help="Delta of the reported (epsilon, delta); keep it well below 1 / num_clients.")
    secagg: bool = option(
        False,
        help="Aggregate with SecAgg+ (Flower's secaggplus_mod): the server learns only the mean update, never one "
        "silo's; silos weigh equally (their example counts cannot be checked), per-update checks and robust "
        "aggregation cannot run.",
    )
    secagg_clipping_range: float = option(
        1.0,
        help="SecAgg+ masks each silo's update (reply - global) after clipping every value to +-this and quantizing "
        "it to 2^22 levels: resolution 2 x range / 2^22. Update values beyond it are clipped without notice.",
    )

    @property
    def dp(self) -> bool:
        return self.dp_noise_multiplier > 0

    def quorum_of(self, sampled: int) -> int:
        """Accepted updates a round of `sampled` silos needs: more than `quorum` of them, at least one."""
        return max(1, min(sampled, int(self.quorum * sampled) + 1))

    def validate(self) -> None:
        require(0 <= self.trim_fraction < 0.5, "trim_fraction", "a fraction in [0, 0.5)", self.trim_fraction)
        require(self.clip_norm >= 0, "clip_norm", "a norm >= 0 (0: off)", self.clip_norm)
        multiple = self.max_update_norm_multiple
        require(multiple == 0 or multiple >= 1, "max_update_norm_multiple", "0 (off) or a number >= 1", multiple)
        require(self.norm_history_rounds >= 0, "norm_history_rounds", "rounds >= 0 (0: off)", self.norm_history_rounds)
        require(0 <= self.quorum <= 1, "quorum", "a share in [0, 1]", self.quorum)
        examples = self.max_examples_multiple
        require(examples == 0 or examples >= 1, "max_examples_multiple", "0 (off) or a number >= 1", examples)
        registered = self.registered_examples
        require(all(n > 0 for n in registered), "registered_examples", "example counts > 0", registered)
        require(self.max_message_bytes >= 0, "max_message_bytes", "bytes >= 0 (0: automatic)", self.max_message_bytes)
        require(self.dp_noise_multiplier >= 0, "dp_noise_multiplier", "a number >= 0", self.dp_noise_multiplier)
        require(self.dp_clipping_norm > 0, "dp_clipping_norm", "a norm > 0", self.dp_clipping_norm)
        require(0 < self.dp_delta < 1, "dp_delta", "a probability in (0, 1)", self.dp_delta)
        require(self.secagg_clipping_range > 0, "secagg_clipping_range", "a number > 0", self.secagg_clipping_range)
        if self.dp:
            # The noise is calibrated to the mean of clipped updates; a median or trimmed mean has another sensitivity.
            fedavg_only = "fedavg when dp_noise_multiplier > 0"
            require(self.aggregation == "fedavg", "aggregation", fedavg_only, self.aggregation)
            require(not self.secagg, "secagg", "false when dp_noise_multiplier > 0 (not wired together)", self.secagg)
        if self.secagg:
            # SecAgg+ hands the server one masked sum: nothing per silo to rank, trim or clip.
            require(self.aggregation == "fedavg", "aggregation", "fedavg when secagg = true", self.aggregation)
            no_clip = "0 when secagg = true (the server sees no single update)"
            require(self.clip_norm == 0, "clip_norm", no_clip, self.clip_norm)

