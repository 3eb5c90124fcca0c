"""``python -m colab_tts.deploy SYSTEM [--dry-run] [--set key=value ...] [--workdir DIR]``.

``--dry-run`` prints the plan as one JSON object and exits 0; without it the runner makes the
environment, installs, downloads the weights, runs the worker and prints the result JSON.
A bad argument ends in one line on stderr and exit code 2.
"""

from __future__ import annotations

import functools
import json
import sys

from .._checks import OneLineParser, one_line
from .._files import path_text, writable_folder
from ..errors import DiskFullError
from .systems import SYSTEMS, plan


def parse_set(items, system: str | None = None) -> dict:
    """``key=value`` pairs; values are JSON when they parse (8, true, null, "x"), else strings. A key given
    twice, or a JSON object with a key twice, is refused (one of the two would be dropped without a word);
    a text setting of ``system`` keeps what was typed when JSON would read it as a number, list or true/false
    (``--set text=1984`` is the text "1984")."""
    from .setting_rules import takes_text

    out, typed = {}, {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"--set takes key=value (e.g. --set use_fp16=false), got {item!r}")
        key, raw = item.split("=", 1)
        if key in out:
            raise ValueError(f"--set {key} is given twice ({typed[key]!r}, then {raw!r}): keep the one you mean")
        typed[key] = raw
        try:
            out[key] = json.loads(raw, object_pairs_hook=functools.partial(_no_repeated_keys, key))
        except json.JSONDecodeError:
            out[key] = raw
        except RecursionError:  # "[[[[..." thousands deep: Python's JSON reader gives up with a traceback
            raise ValueError(f"--set {key}=... is nested too deeply to read; give a value such as "
                             f"{key}=[{{\"label\": \"a\"}}]") from None
        if system is not None and takes_text(system, key) and out[key] is not None \
                and not isinstance(out[key], str):
            out[key] = raw
    return out


def _no_repeated_keys(setting: str, pairs: list) -> dict:
    keys = [k for k, _ in pairs]
    repeated = [k for k in keys if keys.count(k) > 1]
    if repeated:
        raise ValueError(f"--set {setting}=... has the key {repeated[0]!r} twice in one object: keep the one you "
                         "mean")
    return dict(pairs)


def build_parser() -> OneLineParser:
    parser = OneLineParser(prog="python -m colab_tts.deploy", description=__doc__.splitlines()[0])
    parser.add_argument("system", help=f"one of: {', '.join(SYSTEMS)}")
    parser.add_argument("--dry-run", action="store_true", help="print the plan as JSON and exit")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE", help="change a default setting")
    parser.add_argument("--workdir", default="colab_tts_deploy", help="where envs, clones and outputs go")
    parser.add_argument("--no-weights", action="store_true", help="skip the weight download")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        overrides = parse_set(args.set, args.system)
        writable_folder(path_text(args.workdir, "--workdir", folder=True), "the work directory")  # as deploy() checks it: the dry run too
        if args.dry_run:
            print(json.dumps(plan(args.system, overrides, workdir=args.workdir)))
            return 0
        from .env import deploy

        result = deploy(args.system, overrides, workdir=args.workdir, weights=not args.no_weights)
    except (ValueError, TypeError) as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 2
    except (RuntimeError, DiskFullError) as e:  # a failed install or a full disk: the message and the log's end
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: run the same command again; finished steps are kept, the interrupted one is redone",
              file=sys.stderr)
        return 130
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
