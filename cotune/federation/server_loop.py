"""The server's rounds: central evaluation, checkpoints, the strategy, and the final global adapter.

Flower-facing only through `grid` and the strategy, so the same loop runs in simulation and deployment.
"""

import logging
from pathlib import Path

from flwr.app import ArrayRecord, MetricRecord
from flwr.serverapp import Grid

from cotune.config import CotuneConfig
from cotune.data import build_splits, generalization_texts
from cotune.lm.adapted_lm import AdaptedLM
from cotune.lm.evaluate import perplexity
from cotune.export.runtime_adapter import write_beside
from cotune.federation.cloud import CloudSide
from cotune.federation.records import config_record, from_record, samples_record, to_record
from cotune.federation.strategies.factory import build_strategy
from cotune.federation.evaluation import eval_facts, reuse_memo, slm_test_accuracy
from cotune.memo import fingerprint
from cotune.lm.adapter_folder import load_adapter_tensors
from cotune.federation.outputs import RunOutputs
from cotune.metrics_log import MetricsLog
from cotune.server_vllm.engine import GenerationEngine

log = logging.getLogger(__name__)


def log_llm(cloud: CloudSide, metrics: MetricsLog, server_round: int, stage: str) -> None:
    """The LLM's task accuracy and its perplexity on text it is not tuned on (the task's generalization text), so
    co-tuning's cost to it shows."""
    llm, cfg = cloud.llm, cloud.cfg

    def compute() -> dict:
        texts = generalization_texts(cfg.data, cloud.splits)
        ppl = perplexity(llm.model, llm.tokenizer, texts, cfg.train.eval_batch_size, cfg.train.max_length)
        return {"test_accuracy": cloud.llm_accuracy(), "generalization_ppl": ppl}

    memo = reuse_memo(cfg)
    with metrics.timed("central_eval_llm", server_round, stage=stage):
        result = compute() if memo is None else memo.value(fingerprint("llm", eval_facts(cfg), llm.state()), compute)[0]
    metrics.write({"round": server_round, "kind": "llm", "stage": stage, **result})


def norm_history(rows: list[dict], start_round: int) -> list[list[float]]:
    """Accepted update norms of the closed rounds (client_train rows carry `update_norm`)."""
    by_round: dict[int, list[float]] = {}
    for r in rows:
        accepted = r["kind"] == "client_train" and r.get("status") == "accepted" and "update_norm" in r
        if accepted and r["round"] <= start_round:
            by_round.setdefault(r["round"], []).append(float(r["update_norm"]))
    return [by_round[k] for k in sorted(by_round)]


def run_rounds(grid: Grid, cfg: CotuneConfig, out: RunOutputs, engine: GenerationEngine | None = None) -> None:
    """All rounds of one run into `out`, resuming from its last checkpoint if it has one."""
    metrics, checkpoints = out.metrics, out.checkpoints
    splits = build_splits(cfg.data, cfg.clients.num_clients)
    with metrics.timed("load_slm", scope="job"):
        slm = AdaptedLM.load(cfg)
    with metrics.timed("load_llm", scope="job"):
        cloud = CloudSide(cfg, out, splits, slm, engine)
    memo = reuse_memo(cfg)
    state = slm.state()
    start_round = 0
    if (latest := checkpoints.latest()) is not None:
        start_round, folder = latest
        state = load_adapter_tensors(folder, "slm_adapter")
        cloud.restore(folder)
        metrics.drop_rounds_after(start_round)
        log.info("resuming after round %d from %s", start_round, folder)
    else:
        metrics.drop_rounds_after(-1)
        if cloud.llm is not None:
            log_llm(cloud, metrics, 0, "zero_shot")

    def save_round(folder: Path, server_round: int) -> None:
        slm.model.save_pretrained(folder / "slm_adapter")
        write_beside(folder / "slm_adapter", version=server_round)  # a device can follow the federation round by round
        cloud.save(folder)

    def central_evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        if server_round == 0 and start_round > 0:
            return None  # the restored state was evaluated when its round completed
        current = server_round + start_round
        slm.set_state(from_record(arrays))
        with metrics.timed("central_eval_slm", current):
            accuracy = slm_test_accuracy(slm, splits, cfg, memo)
        metrics.write({"round": current, "kind": "global", "test_accuracy": accuracy})
        if current > 0:
            with metrics.timed("checkpoint", current):
                checkpoints.save(current, lambda folder: save_round(folder, current))
        return MetricRecord({"test-accuracy": accuracy})

    n = cfg.clients.num_clients
    sampled = max(1, int(n * cfg.clients.fraction_train))
    strategy = build_strategy(
        cfg.federation,
        cfg.quantization.wire,
        num_sampled=sampled,
        server_step=cloud.step if cloud.llm is not None else None,
        dp_history=[r["noise_multiplier"] for r in metrics.rows() if r["kind"] == "dp"],
        round_offset=start_round,
        log_row=metrics.write,
        train_extras=lambda: samples_record(cloud.synthetic["text"], cloud.synthetic["label"]),
        min_clients=cfg.clients.min_clients,  # floor on accepted updates, on top of federation.quorum
        registered_examples=[len(c.train) for c in splits.clients],  # what each silo may claim (num-examples)
        norm_history=norm_history(metrics.rows(), start_round),  # a resumed run keeps its trusted norm reference
        fraction_train=cfg.clients.fraction_train,
        fraction_evaluate=cfg.clients.fraction_evaluate,
        min_train_nodes=cfg.clients.min_clients or sampled,
        min_evaluate_nodes=cfg.clients.min_clients or max(1, int(n * cfg.clients.fraction_evaluate)),
        min_available_nodes=cfg.clients.min_clients or n,
    )
    remaining = cfg.rounds.num_rounds - start_round
    cloud.grid = grid
    if remaining > 0:
        result = strategy.start(
            grid,
            to_record(state, "fp32"),
            num_rounds=remaining,
            timeout=cfg.clients.round_timeout_s,
            train_config=config_record(cfg),
            evaluate_config=config_record(cfg),
            evaluate_fn=central_evaluate,
        )
        if len(result.arrays):  # empty when no round accepted an update: the global adapter is the one we had
            state = from_record(result.arrays)
    if cloud.llm is not None:
        log_llm(cloud, metrics, cfg.rounds.num_rounds, "after")
        cloud.llm.model.save_pretrained(out.llm_adapter)
    cloud.close()
    slm.set_state(state)
    slm.model.save_pretrained(out.global_adapter)
    write_beside(out.global_adapter, version=cfg.rounds.num_rounds)
    log.info("global adapter written to %s", out.global_adapter)
