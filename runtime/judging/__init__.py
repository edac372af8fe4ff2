"""Judging a scored image: the scope rules, the feature-space guard, and the one verdict rule."""
