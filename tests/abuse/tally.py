"""Counts the hostile inputs the abuse suite sends, for its closing report."""

from __future__ import annotations

from collections import Counter

CASES: Counter[str] = Counter()
