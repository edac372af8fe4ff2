"""The Textual clinic app: ``python -m tui [--bundle dist/cpu] [FOLDER]``.

Three screens: Triage (folder -> flagged cases), Reports (benchmark tables per target) and Bundle
(what the chosen model is, and whether its files are intact), and on top of Triage the Review
(every flagged case, one at a time: confirm, overrule, unsure, note, undo; decisions appended to
review.csv through runtime.clinic.review). No business logic lives here: the
app calls :mod:`runtime` (bundle loading, folder walk, triage, results files, decoding) and reads
the report files of :mod:`benchmarks`. Anything slow (counting images, loading a model, triage,
decoding a preview, sha256 checks) runs in ``@work(thread=True)`` workers that report back with
messages; the UI thread only draws.
"""
