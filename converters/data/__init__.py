"""Labelled images for training and evaluation: one type (:mod:`.labelled`), one loader per
dataset (:mod:`.pneumoniamnist`, :mod:`.kermany`, built on :mod:`.folder`: a folder of image files
with a manifest), and the build's one entry point (:mod:`.sets`: validation and test sets for a
model's declared dataset)."""
