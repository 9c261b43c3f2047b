"""`cotune edge generate|classify`: run an exported model as a device would (onnxruntime, no torch).

Nothing here may import torch, at module level or in the commands: the test suite runs these commands with
torch made unimportable.
"""

import argparse
import json
import sys
from pathlib import Path

from cotune.cli.defaults import field_default, literal_choices, parameter_default
from cotune.cli.lazy_subcommands import add_command


def register(sub: argparse._SubParsersAction) -> None:
    add_command(sub, "edge", _arguments, None, help="run an exported edge model on this machine")


def _arguments(parser: argparse.ArgumentParser) -> None:
    """Defaults are the runtime's own (`Sampling`, `EdgeModel`, `EdgeClassifier`)."""
    from cotune.edge_runtime import EdgeClassifier, EdgeModel, Sampling

    edge_sub = parser.add_subparsers(dest="edge_command", required=True)
    gen = edge_sub.add_parser("generate", help="continue a prompt, streaming the text as it is decoded")
    _model_args(gen)
    gen.add_argument("--prompt", required=True, help="text to continue")
    gen.add_argument("--max-new-tokens", type=int, default=parameter_default(EdgeModel.stream_tokens, "max_new_tokens"),
                     help="default: %(default)s")
    gen.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    gen.add_argument("--temperature", type=float, default=field_default(Sampling, "temperature"),
                     help="with --sample (default: %(default)s)")
    gen.add_argument("--top-p", type=float, default=field_default(Sampling, "top_p"),
                     help="with --sample: nucleus mass kept (default: %(default)s)")
    gen.add_argument("--top-k", type=int, default=field_default(Sampling, "top_k"),
                     help="with --sample: 0 keeps every token (default: %(default)s)")
    gen.add_argument("--seed", type=int, default=field_default(Sampling, "seed"),
                     help="with --sample (default: %(default)s)")
    gen.add_argument("--backend", choices=literal_choices(EdgeModel.__init__, "backend"),
                     default=parameter_default(EdgeModel, "backend"), help="default: %(default)s")
    gen.set_defaults(func=generate)
    cls = edge_sub.add_parser("classify", help="label texts with the folder's task card (labels + probabilities)")
    _model_args(cls)
    texts = cls.add_mutually_exclusive_group(required=True)
    texts.add_argument("--text", action="append", help="a text to classify (repeatable)")
    texts.add_argument("--file", help="JSONL: one object per line (its --text-field) or one JSON string per line")
    cls.add_argument("--text-field", default="text", help="with --file: the field holding the text")
    cls.add_argument("--batch-size", type=int, default=parameter_default(EdgeClassifier, "batch_size"),
                     help="default: %(default)s")
    cls.set_defaults(func=classify)


def _model_args(parser: argparse.ArgumentParser) -> None:
    from cotune.edge_runtime import EdgeModel

    parser.add_argument("--model", required=True, help="folder written by `cotune export`")
    parser.add_argument(
        "--adapter", help="an .onnx_adapter file to run with (a runtime-adapter export); default: the folder's own"
    )
    parser.add_argument("--no-adapter", action="store_true", help="run the bare base of a runtime-adapter export")
    parser.add_argument("--threads", type=int, default=parameter_default(EdgeModel, "threads"),
                        help="intra-op threads; 0: onnxruntime's default (default: %(default)s)")


def _adapter(args: argparse.Namespace):
    from cotune.edge_runtime.model import DEFAULT_ADAPTER

    return None if args.no_adapter else (args.adapter or DEFAULT_ADAPTER)


def generate(args: argparse.Namespace) -> int:
    import time

    from cotune.edge_runtime import EdgeModel, Sampling, TextStream

    try:
        sampling = Sampling(args.sample, args.temperature, args.top_p, args.top_k, args.seed)
        model = EdgeModel(args.model, args.backend, args.threads, _adapter(args))
    except ValueError as err:
        print(f"cotune: error: {err}", file=sys.stderr)
        return 2
    text, count, start = TextStream(model), 0, time.perf_counter()
    for token in model.stream_tokens(args.prompt, args.max_new_tokens, sampling):
        print(text.push(token), end="", flush=True)
        count += 1
    seconds = time.perf_counter() - start
    print()
    print(f"[{count} tokens in {seconds:.2f} s, {count / seconds:.1f} tokens/s, {model.backend}]", file=sys.stderr)
    return 0


def read_texts(path: Path, field: str) -> list[str]:
    """Texts of a JSONL file: objects (their `field`) or bare JSON strings; a bad line is named."""
    texts = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{number}: not JSON ({err.msg})") from None
        if isinstance(row, dict) and isinstance(row.get(field), str):
            texts.append(row[field])
        elif isinstance(row, str):
            texts.append(row)
        else:
            raise ValueError(f"{path}:{number}: expected a JSON string or an object with a string '{field}'")
    return texts


def classify(args: argparse.Namespace) -> int:
    from cotune.edge_runtime import EdgeClassifier

    try:
        texts = args.text if args.text else read_texts(Path(args.file), args.text_field)
        classifier = EdgeClassifier(args.model, _adapter(args), args.threads, args.batch_size)
    except ValueError as err:
        print(f"cotune: error: {err}", file=sys.stderr)
        return 2
    for text, result in zip(texts, classifier.classify(texts)):
        if args.file:
            print(json.dumps({"text": text, "label": result.label, "probabilities": result.probabilities}))
        else:
            shown = ", ".join(f"{label} {p:.3f}" for label, p in result.probabilities.items())
            print(f"{result.label}\t({shown})")
    return 0
