"""Reading images: sniff a file's format, decode it (JPEG, PNG, BMP, TIFF, DICOM) within the
resource limits, in abandonable worker threads, with library chatter kept off the console."""
