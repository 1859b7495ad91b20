"""flakehunter: find thin 2D-material flakes with a motorized microscope."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("flakehunter")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"
