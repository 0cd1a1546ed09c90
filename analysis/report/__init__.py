"""The report: Findings, the papers' numbers, return on investment, report.md assembly."""
