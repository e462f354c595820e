"""The README quotes the committed reports' conclusions: the quotes must be the generated sentences."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_findings_quote_the_generated_reports():
    readme = (ROOT / "README.md").read_text()
    findings = readme.split("## Findings", 1)[1]
    quotes = [line[2:].strip() for line in findings.splitlines() if line.startswith("> ")]
    reports = {p: p.read_text() for p in (ROOT / "reports").rglob("README.md")}
    assert quotes, "the Findings section quotes no conclusion"
    for quote in quotes:
        assert any(quote in text for text in reports.values()), f"not in any report: {quote[:80]}"
    for link in re.findall(r"\]\((reports/[^)]+)\)", findings):
        assert (ROOT / link).exists(), link
