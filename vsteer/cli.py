"""`vsteer` command line."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["serve"]:
        from vsteer.server.main import main as serve_main

        return serve_main(argv[1:])
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


def _parser() -> argparse.ArgumentParser:
    from vsteer.early_exit.cli import add_exit_bench, add_exit_commands
    from vsteer.experts.cli import add_experts_commands
    from vsteer.probe.cli import add_probe_commands, add_probe_eval
    from vsteer.refusal.cli import add_refusal_commands, add_refusal_eval
    from vsteer.sae.cli import add_sae_commands
    from vsteer.vector_cli import add_vector_commands

    p = argparse.ArgumentParser(prog="vsteer", description="Inference-time controls for vLLM.")
    sub = p.add_subparsers(metavar="COMMAND")
    sub.add_parser("serve", help="run the OpenAI-compatible server (see `vsteer serve -h`)")
    model = sub.add_parser("model", help="models").add_subparsers(metavar="ACTION")
    default = model.add_parser("default", help="print the default model's directory, "
                               "building it offline first if absent")
    default.set_defaults(func=_model_default)
    add_vector_commands(sub)
    add_refusal_commands(sub)
    add_probe_commands(sub)
    add_sae_commands(sub)
    add_experts_commands(sub)
    evals = sub.add_parser("eval", help="evaluate controls").add_subparsers(metavar="WHAT")
    add_refusal_eval(evals)
    add_probe_eval(evals)
    add_exit_commands(sub)
    bench = sub.add_parser("bench", help="benchmarks").add_subparsers(metavar="WHAT")
    add_exit_bench(bench)
    return p


def _model_default(_: argparse.Namespace) -> int:
    from vsteer.model import ensure_default_model

    print(ensure_default_model())
    return 0


if __name__ == "__main__":
    sys.exit(main())
