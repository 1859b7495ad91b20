"""Test helpers for flakehunter and for third-party plugin authors.

* `flakehunter.testing.emulators`: serial protocol emulators of the Prior, ASI, Ludl and Tango
  controllers on real pseudo-terminals, with injectable faults.
* `flakehunter.testing.contracts`: the contract-test suites every stage and camera plugin runs
  (needs pytest).
* `flakehunter.testing.files`: OME-TIFF bytes of a frame, and a writer that streams a file slowly
  (for watch-folder tests).
"""
