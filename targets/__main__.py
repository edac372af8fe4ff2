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
        for key in profile.formats:
            marks = [f"default #{profile.preference.index(key) + 1}"] \
                if key in profile.preference else []
            marks += ["optional"] if key in profile.optional else []
            print(f"      - {key:14s} {', '.join(marks)}")
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
