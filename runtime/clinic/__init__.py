"""The clinic's outputs: the reviewer's decisions (``review.csv``) and DICOM SR back to the archive."""
