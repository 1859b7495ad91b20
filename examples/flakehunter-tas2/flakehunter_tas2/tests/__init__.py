"""Tests of the tas2 plugin; `flakehunter plugins --check` runs them against the installed package."""
