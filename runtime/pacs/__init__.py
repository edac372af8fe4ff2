"""The DICOM gateway: receive X-rays from a PACS, triage them, send one SR per image back."""
