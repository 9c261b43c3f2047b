"""How OpenMP threads wait between parallel regions, chosen from what shares the cores when cotune starts.

Measured on the default SLM (2 cores, seconds per LoRA step, `benchmarks/client_training.py`): on a host the job
has to itself, passive waiting (threads sleep at once) costs about a third of a step's speed against libgomp's
default bounded spin (spin ~300k iterations, then sleep); when another compute-bound process shares the cores,
spinning threads steal its time and steps ran 5-10x slower. So: the libgomp default when the cores are free,
PASSIVE when three quarters of them are already busy (not half: the 1-minute load average lags, and a process
that ended a moment ago still counts). A user's own OMP_WAIT_POLICY always wins.

The job's own idle processes (the server while silos train, an idle engine) spin only for the bounded default,
never indefinitely: ACTIVE (spin without end) is never chosen, since an idle server's spinning threads would
take a core from the silo training beside it.
"""

import os

# Why the policy was chosen, for the job's log (workers inherit the environment, so the choice is made once).
REASON_ENV = "COTUNE_OMP_REASON"
BUSY_SHARE = 0.75


def usable_cpus() -> int:
    """Cores this process may run on (its affinity where the OS tells it, else every core)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def choose_wait_policy(user_policy: str | None, load_1min: float, cpus: int) -> tuple[str | None, str]:
    """(OMP_WAIT_POLICY to set, or None for libgomp's bounded-spin default; why)."""
    if user_policy:
        return user_policy, f"OMP_WAIT_POLICY={user_policy} set by the user"
    if load_1min >= BUSY_SHARE * cpus:
        return "PASSIVE", f"load average {load_1min:.2f} on {cpus} cores: other work shares them, threads sleep"
    return None, f"load average {load_1min:.2f} on {cpus} cores: cores free, libgomp's bounded spin"


def apply_wait_policy() -> None:
    """Set OMP_WAIT_POLICY for this process and its children, once (a child keeps its parent's choice)."""
    if REASON_ENV in os.environ:
        return
    policy, reason = choose_wait_policy(os.environ.get("OMP_WAIT_POLICY"), os.getloadavg()[0], usable_cpus())
    if policy:
        os.environ["OMP_WAIT_POLICY"] = policy
    os.environ[REASON_ENV] = reason
