"""The command-line layer: every console script (``lc-train``, ``lc-bench``, ``lc-report``, ``lc-plot``,
``lc-oneshot``), the only part of the package that parses arguments or composes Hydra configs. The library below it
never imports it.
"""
