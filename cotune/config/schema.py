"""The configuration tree. Defaults live here and only here; TOML files and `--set` override them.

Each section validates its own values (`validate`), raising ConfigError with the key relative to the section;
the loader prefixes the section path. The subsystems' sections live beside this module (`crosslm.py`,
`fedcollm.py`, `export.py`, `federation.py`, `server.py`), as vLLM keeps its config classes in one package.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cotune.config.algorithms import ALGORITHMS
from cotune.config.crosslm import CrossLMConfig
from cotune.config.errors import require
from cotune.config.export import ExportConfig
from cotune.config.federation import FederationConfig
from cotune.config.fedcollm import FedCoLLMConfig
from cotune.config.fields import option
from cotune.config.server import ServerConfig

Precision = Literal["nf4", "int8", "none"]


@dataclass
class ModelsConfig:
    slm: str = option(
        "smollm2-90m",
        help="The silos' SLM: a registry name (`cotune models`), a local HF folder, or a hub id.",
    )
    llm: str = option(
        "smollm2-135m-instruct",
        help="The server's LLM; must share the SLM's tokenizer (distillation compares their vocabularies).",
    )
    cache_dir: str = option(
        "", help="Where converted and derived model folders are cached; empty: $COTUNE_CACHE or ~/.cache/cotune."
    )

    def validate(self) -> None:
        for key in ("slm", "llm"):
            spec = getattr(self, key)
            require(bool(spec), key, "a model spec", spec)
            if spec.startswith((".", "/", "~")):
                require(Path(spec).expanduser().is_dir(), key, "an existing HF model folder", spec)


@dataclass
class QuantizationConfig:
    slm_load: Precision = option("nf4", help="How silos load the SLM base: 4-bit NF4 (QLoRA), 8-bit, or unquantized.")
    llm_load: Precision = option("nf4", help="How the server loads the LLM base for its QLoRA updates.")
    double_quant: bool = option(True, help="NF4 double quantization (quantizes the quantization constants too).")
    compute_dtype: Literal["bfloat16", "float16", "float32"] = option(
        "bfloat16", help="Matmul dtype of the 4-bit layers; bfloat16 on CPUs with AVX512-BF16 and on Ampere+ GPUs."
    )
    wire: Literal["fp32", "fp16", "int8"] = option(
        "int8",
        help="Adapter tensors on the wire, both directions: int8 is per-row absmax with fp32 scales.",
    )


@dataclass
class DataConfig:
    task: str = option(
        "rotten-tomatoes",
        help="Builtin task name, or 'file' for your own JSONL/CSV/parquet at data.path.",
    )
    path: str = option("", help="Your data file when task = 'file' (.jsonl, .json, .csv or .parquet).")
    text_field: str = option("text", help="Column holding the input text (task = 'file').")
    label_field: str = option("label", help="Column holding the label (task = 'file').")
    labels: list[str] = option(
        default_factory=list, help="Label values as they appear in the file, in class-index order (task = 'file')."
    )
    label_words: list[str] = option(
        default_factory=list,
        help="Word the LM should answer for each label; empty: the builtin task's, or the labels themselves.",
    )
    template: str = option(
        "", help="Prompt template with {text} and {choices}; empty: the task's default. The answer follows it."
    )
    partition: Literal["iid", "dirichlet"] = option("dirichlet", help="How the client pool is split over silos.")
    dirichlet_alpha: float = option(0.5, help="Dirichlet concentration of label skew; smaller is more non-IID.")
    test_size: int = option(200, help="Held-out test examples (balanced), seen by no client and no server step.")
    public_size: int = option(600, help="Server-side public examples, disjoint from every client's data.")
    client_val_fraction: float = option(0.02, help="Share of each client's partition kept for its local evaluation.")
    max_client_examples: int = option(0, help="Cap on each client's training examples; 0 keeps all.")
    min_client_examples: int = option(
        10, help="Fewest examples a silo's partition may hold; the Dirichlet split redraws until each silo has them."
    )
    generalization_texts: int = option(
        50,
        help="Texts the server LLM's perplexity is measured on before and after co-tuning, so its drift off the "
        "task shows: the first ones of data.generalization_path, else the builtin task's own text of another "
        "register (rotten-tomatoes: plot summaries), else (task = 'file') a seeded sample of the test rows.",
    )
    generalization_path: str = option(
        "",
        help="Your text for that perplexity: .txt (one text a line) or .jsonl/.json/.csv/.parquet (column "
        "data.text_field); empty: the task's own (see data.generalization_texts).",
    )
    seed: int = option(0, help="Seed of the shuffles and the partition; same seed, same splits.")

    def validate(self) -> None:
        require(bool(self.task), "task", "a builtin task name or 'file'", self.task)
        if self.task == "file":
            require(bool(self.path), "path", "a data file path when task = 'file'", self.path)
            require(Path(self.path).expanduser().is_file(), "path", "an existing file", self.path)
            require(len(self.labels) >= 2, "labels", "at least two label values", self.labels)
        if self.label_words and self.labels:
            require(len(self.label_words) == len(self.labels), "label_words", "one word per label", self.label_words)
        if self.template:
            require("{text}" in self.template, "template", "a template containing {text}", self.template)
        require(self.dirichlet_alpha > 0, "dirichlet_alpha", "a number > 0", self.dirichlet_alpha)
        require(self.test_size > 0, "test_size", "an integer > 0", self.test_size)
        require(self.public_size >= 0, "public_size", "an integer >= 0", self.public_size)
        require(0 <= self.client_val_fraction < 1, "client_val_fraction", "a fraction in [0, 1)", self.client_val_fraction)
        require(self.max_client_examples >= 0, "max_client_examples", "an integer >= 0", self.max_client_examples)
        require(self.min_client_examples >= 1, "min_client_examples", "an integer >= 1", self.min_client_examples)
        require(self.generalization_texts >= 1, "generalization_texts", "an integer >= 1", self.generalization_texts)
        if self.generalization_path:
            path = Path(self.generalization_path).expanduser()
            require(path.is_file(), "generalization_path", "an existing file", self.generalization_path)


@dataclass
class ClientsConfig:
    num_clients: int = option(3, help="Silos (Flower SuperNodes) in the federation.")
    fraction_train: float = option(1.0, help="Share of connected silos sampled for each training round.")
    fraction_evaluate: float = option(
        0.0,
        help="Share of connected silos that evaluate each round's global adapter on their own validation split "
        "(federated evaluation, Flower's fraction_evaluate; rows of kind client_eval). 0: none, the server's "
        "central test alone, which is what the report shows: in the default job the silos' evaluations took 8% "
        "of the wall time for figures no report read.",
    )
    min_clients: int = option(
        0,
        help="Fewest accepted updates a round needs, on top of federation.quorum (a strict majority of the sampled "
        "silos by default); 0: the quorum alone. Also the fewest silos sampled per round.",
    )
    round_timeout_s: float = option(3600.0, help="How long the server waits for a round's replies.")

    def validate(self) -> None:
        require(self.num_clients >= 1, "num_clients", "an integer >= 1", self.num_clients)
        require(0 < self.fraction_train <= 1, "fraction_train", "a fraction in (0, 1]", self.fraction_train)
        require(0 <= self.fraction_evaluate <= 1, "fraction_evaluate", "a fraction in [0, 1]", self.fraction_evaluate)
        require(0 <= self.min_clients <= self.num_clients, "min_clients", "0..num_clients", self.min_clients)
        require(self.round_timeout_s > 0, "round_timeout_s", "seconds > 0", self.round_timeout_s)


@dataclass
class RoundsConfig:
    num_rounds: int = option(
        3, help="Federated rounds (the default budget is chosen in benchmarks/budget_sweep.py; see README)."
    )

    def validate(self) -> None:
        require(self.num_rounds >= 1, "num_rounds", "an integer >= 1", self.num_rounds)


@dataclass
class LoraConfig:
    method: Literal["lora", "prompt_tuning"] = option(
        "lora", help="Adapter kind: LoRA, or prompt tuning (federated prompt engineering); both average alike."
    )
    r: int = option(8, help="LoRA rank.")
    alpha: int = option(16, help="LoRA scaling numerator (scale = alpha / r).")
    dropout: float = option(0.05, help="Dropout on the LoRA input.")
    target_modules: list[str] = option(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        help="Linear layers that get LoRA (names inside each decoder layer).",
    )
    num_virtual_tokens: int = option(16, help="Soft prompt length for method = 'prompt_tuning'.")

    def validate(self) -> None:
        require(self.r > 0, "r", "an integer > 0", self.r)
        require(self.alpha > 0, "alpha", "an integer > 0", self.alpha)
        require(0 <= self.dropout < 1, "dropout", "a probability in [0, 1)", self.dropout)
        require(bool(self.target_modules), "target_modules", "at least one module name", self.target_modules)
        require(self.num_virtual_tokens > 0, "num_virtual_tokens", "an integer > 0", self.num_virtual_tokens)


@dataclass
class TrainConfig:
    steps: int = option(10, help="Optimizer steps per client per round (0: use epochs instead).")
    epochs: float = option(0.0, help="Local epochs per round when steps = 0.")
    batch_size: int = option(8, help="Examples per micro-batch.")
    grad_accum: int = option(1, help="Micro-batches per optimizer step.")
    lr: float = option(5e-4, help="AdamW learning rate of the adapter.")
    weight_decay: float = option(0.0, help="AdamW weight decay.")
    max_length: int = option(128, help="Token limit of prompt + answer; longer prompts are cut from the left.")
    gradient_checkpointing: bool = option(False, help="Recompute activations in backward: less memory, slower steps.")
    release_freed_memory: bool = option(
        False,
        help="Return freed activation memory to the OS at once (glibc mmap threshold): lower peak RSS, ~1.5x slower "
        "CPU steps (benchmarks/client_training.py).",
    )
    eval_batch_size: int = option(32, help="Batch size of evaluation forwards.")
    threads: int = option(0, help="torch intra-op threads on CPU; 0 leaves torch's default.")
    seed: int = option(0, help="Seed of adapter init, batching and dropout.")

    def validate(self) -> None:
        require(self.steps > 0 or self.epochs > 0, "steps", "steps > 0 or epochs > 0", self.steps)
        require(self.steps >= 0, "steps", "an integer >= 0", self.steps)
        require(self.batch_size > 0, "batch_size", "an integer > 0", self.batch_size)
        require(self.grad_accum > 0, "grad_accum", "an integer > 0", self.grad_accum)
        require(self.lr > 0, "lr", "a number > 0", self.lr)
        require(self.max_length >= 16, "max_length", "an integer >= 16", self.max_length)
        require(self.eval_batch_size > 0, "eval_batch_size", "an integer > 0", self.eval_batch_size)
        require(self.threads >= 0, "threads", "an integer >= 0", self.threads)


@dataclass
class RunConfig:
    algorithm: str = option(
        "cotune",
        help="What each round does after local training: "
        + ", ".join(f"{name} ({a.summary})" for name, a in ALGORITHMS.items()) + ".",
    )
    compare: list[str] = option(
        default_factory=lambda: ["fedavg"],
        help="Other algorithms the job also runs, same seed, splits and budget, for the report's comparison "
        "(the full ablation, with seeds: benchmarks/cotune_quality.py).",
    )
    output_root: str = option("runs", help="Parent folder of run folders (runs/<timestamp>/).")
    baselines: bool = option(True, help="Also measure zero-shot and local-only baselines on the same test.")
    progress: bool = option(True, help="Progress bars on long steps.")
    reuse_dir: str = option(
        "",
        help="Folder where a job files work identical across its runs (round-1 silo updates, evaluations of the "
        "same model on the same split) so it is done once; `cotune run` sets <run>/reuse. Empty: no reuse.",
    )

    def validate(self) -> None:
        require(self.algorithm in ALGORITHMS, "algorithm", f"one of {list(ALGORITHMS)}", self.algorithm)
        for name in self.compare:
            require(name in ALGORITHMS, "compare", f"algorithms among {list(ALGORITHMS)}", self.compare)


@dataclass
class CotuneConfig:
    models: ModelsConfig = option(default_factory=ModelsConfig, help="Which models.")
    data: DataConfig = option(default_factory=DataConfig, help="Task data, splits and partition.")
    clients: ClientsConfig = option(default_factory=ClientsConfig, help="Silos.")
    rounds: RoundsConfig = option(default_factory=RoundsConfig, help="Federated rounds.")
    lora: LoraConfig = option(default_factory=LoraConfig, help="Adapter shared by silos and server.")
    train: TrainConfig = option(default_factory=TrainConfig, help="Local training of each silo.")
    quantization: QuantizationConfig = option(default_factory=QuantizationConfig, help="Every precision decision.")
    server: ServerConfig = option(default_factory=ServerConfig, help="The cloud side: generation engine, LLM updates.")
    federation: FederationConfig = option(
        default_factory=FederationConfig, help="Reply validation, robust aggregation, differential privacy, SecAgg+."
    )
    fedcollm: FedCoLLMConfig = option(default_factory=FedCoLLMConfig, help="Mutual distillation LLM <-> SLM.")
    crosslm: CrossLMConfig = option(default_factory=CrossLMConfig, help="SLM-scored synthetic data.")
    export: ExportConfig = option(default_factory=ExportConfig, help="The edge model.")
    run: RunConfig = option(default_factory=RunConfig, help="The job.")
