"""cxraug: synthetic chest X-rays for training disease classifiers (Diff-CXR and friends)."""

__version__ = "0.13.0"
