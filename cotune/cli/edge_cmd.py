"""`cotune edge generate`: run an exported model as a device would (onnxruntime, no torch), streaming tokens."""

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("edge", help="run an exported edge model on this machine")
    edge_sub = parser.add_subparsers(dest="edge_command", required=True)
    gen = edge_sub.add_parser("generate", help="continue a prompt, streaming the text as it is decoded")
    gen.add_argument("--model", required=True, help="folder written by `cotune export`")
    gen.add_argument("--prompt", required=True, help="text to continue")
    gen.add_argument("--max-new-tokens", type=int, default=64)
    gen.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    gen.add_argument("--temperature", type=float, default=1.0, help="with --sample")
    gen.add_argument("--top-p", type=float, default=1.0, help="with --sample: nucleus mass kept")
    gen.add_argument("--top-k", type=int, default=0, help="with --sample: 0 keeps every token")
    gen.add_argument("--seed", type=int, default=0, help="with --sample")
    gen.add_argument("--backend", choices=["auto", "genai", "session"], default="auto")
    gen.add_argument("--threads", type=int, default=0, help="intra-op threads; 0: onnxruntime's default")
    gen.set_defaults(func=generate)


def generate(args: argparse.Namespace) -> int:
    import time

    from cotune.edge_runtime import EdgeModel, Sampling, TextStream

    try:
        sampling = Sampling(args.sample, args.temperature, args.top_p, args.top_k, args.seed)
        model = EdgeModel(args.model, args.backend, args.threads)
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
