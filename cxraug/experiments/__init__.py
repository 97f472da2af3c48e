"""Experiments built from the other packages: the limited-data benchmark (``cxraug bench``) and
the generator quality card (``cxraug eval``). The top of the import graph below the CLI."""
