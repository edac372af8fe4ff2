"""``python -m targets``: list the hardware target profiles (plain data; see targets/profiles.py).

Emulated verification of a built bundle is release tooling and lives with the converters:
``python -m converters verify-emulated arm``.
"""

from __future__ import annotations

import argparse
import sys

from targets import all_targets


def list_targets() -> int:
    for profile in all_targets():
        print(f"{profile.name:5s} {profile.description}")
        for spec in profile.artifacts:
            where = ", ".join(spec.providers) if spec.engine == "onnxruntime" else spec.device
            print(f"      - {spec.filename:18s} {spec.format:8s} {spec.precision:5s} "
                  f"{spec.engine} [{where}]")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m targets", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("list", help="list the target profiles (the default)")
    parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    return list_targets()


if __name__ == "__main__":
    sys.exit(main())
