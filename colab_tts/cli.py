"""Command line: ``python -m colab_tts doctor [--gpu T4]``.

Each sub-command is a function taking the parsed arguments; `main` turns a ValueError/TypeError
into one line on stderr and exit code 2 instead of a traceback.
"""

from __future__ import annotations

import argparse
import sys

from . import hardware


def cmd_doctor(args) -> int:
    report = hardware.detect(simulate=args.gpu)
    print(report)
    if report.gpu is not None:
        print("\nRecommendations:")
        for line in hardware.recommendations(report.gpu):
            print(f"  - {line}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m colab_tts", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    doctor = sub.add_parser("doctor", help="report the GPU in use (or a simulated one) and what it can run",
                            description="Report the GPU, its compute capability, memory, bf16 support and "
                                        "the dtype to use. With no GPU, --gpu simulates a catalog GPU.")
    doctor.add_argument("--gpu", default=None, metavar="NAME",
                        help=f"GPU to simulate when none is present; one of: {', '.join(hardware.GPUS)}")
    doctor.set_defaults(func=cmd_doctor)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, TypeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
