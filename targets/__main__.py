"""``python -m targets``: list the hardware target profiles."""

from __future__ import annotations

import argparse
import sys

from targets import all_targets


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m targets", description=__doc__)
    parser.parse_args(argv)
    for profile in all_targets():
        print(f"{profile.name:5s} {profile.description}")
        for spec in profile.artifacts:
            where = ", ".join(spec.providers) if spec.engine == "onnxruntime" else spec.device
            print(f"      - {spec.filename:18s} {spec.format:8s} {spec.precision:5s} "
                  f"{spec.engine} [{where}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
