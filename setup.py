"""Derives the package list, which pyproject.toml cannot: plugins/ and hardware/ install as
flakehunter.plugins and flakehunter.hardware (see ``package-dir`` there), and find_packages only
sees folder names. Every folder with an ``__init__.py`` is a package; nothing is listed by hand."""

from setuptools import find_packages, setup

MAPPED = ("plugins", "hardware")  # top-level folders installed under flakehunter.<folder>

packages = find_packages(include=["flakehunter", "flakehunter.*"])
for folder in MAPPED:
    packages += [f"flakehunter.{name}" for name in find_packages(include=[folder, f"{folder}.*"])]

setup(packages=packages)
