"""Running triage: the folder runner, its results files, and the same pieces on Ray."""
