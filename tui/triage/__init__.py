"""The triage screen, in its parts: :mod:`.screen` composes them and carries the messages between
them; :mod:`.setup` (folder, model, results folder, run and cancel), :mod:`.status` (what the run
is doing, its progress bar and its summary), :mod:`.table` (the results, flagged cases first, and
the files that could not be read), :mod:`.preview` (the selected X-ray); :mod:`.run` runs the
triage in a worker thread and reports by messages; :mod:`.rows` reads a results row."""
