"""Make the README's screenshots: run the app headless over FOLDER, triage it, move to the
second case and save the screen (docs/tui-triage.svg); with --review, open the review instead
(v), sign as "AM", confirm the first case, note on the second, and save docs/review-screen.svg.

    python docs/make_screenshot.py FOLDER [--bundle dist/cpu] [--artifact model.int8.onnx]
                               [--review] [--out docs/tui-triage.svg]

Run it from the folder you run the app from (the results folder it makes there is removed
afterwards when it did not exist before).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


async def shoot(args) -> None:
    from tui.app import CxrApp
    from tui.sources import default_out

    app = CxrApp(folder=args.folder, bundles=[args.bundle], artifact=args.artifact)
    out = default_out(args.folder, app.choice)
    made = not out.exists()
    try:
        async with app.run_test(size=(132, 40)) as pilot:
            screen = app.screen
            start = time.monotonic()
            await pilot.pause(0.5)
            await pilot.press("r")
            while screen.finished_runs == 0 and time.monotonic() - start < 600:
                await pilot.pause(0.1)
            if args.review:
                await review(pilot)
            else:
                await pilot.press("t", "down")
                await pilot.pause(1.5)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            app.save_screenshot(filename=args.out.name, path=str(args.out.parent))
    finally:
        if made:
            shutil.rmtree(out, ignore_errors=True)
            if out.parent.name == "results" and not any(out.parent.iterdir()):
                out.parent.rmdir()
    print(f"wrote {args.out}")


async def review(pilot) -> None:
    """v, the reviewer's initials, y on the first case, a note on the second."""
    await pilot.press("v")
    await pilot.pause(0.5)
    await pilot.press(*"AM", "enter")
    screen = pilot.app.screen

    async def shown() -> None:
        start = time.monotonic()
        while screen.picture_shown != screen.case.file and time.monotonic() - start < 60:
            await pilot.pause(0.1)

    await shown()
    await pilot.press("y")
    await shown()
    await pilot.press("c", *"compare with last year's film", "enter")
    await pilot.pause(0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--bundle", type=Path, default=Path("dist/cpu"))
    parser.add_argument("--artifact", default=None)
    parser.add_argument("--review", action="store_true",
                        help="photograph the review screen (default --out docs/review-screen.svg)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.out is None:
        args.out = Path("docs/review-screen.svg" if args.review else "docs/tui-triage.svg")
    asyncio.run(shoot(args))


if __name__ == "__main__":
    main()
