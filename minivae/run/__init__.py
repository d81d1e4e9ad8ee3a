"""The run infrastructure: what turns the library into runs, results and figures.

- :mod:`~minivae.run.threads`: how many BLAS and Numba threads a run takes, from the
  cores actually free (the fast path asks it too).
- :mod:`~minivae.run.rundir`: one training process per run directory (a lock).
- :mod:`~minivae.run.plots`: the paper's figures as PNG files (Figures 2 to 5,
  reconstructions, latent means).
- :mod:`~minivae.run.algorithms`: the training algorithms by name (aevb, wake-sleep,
  mcem), the one list the configuration and the command line use.
- :mod:`~minivae.run.config`: the run configuration, a dataclass with the paper's
  defaults, and the presets.
- :mod:`~minivae.run.sweep`: the cells of Figures 2 and 3, each an ordinary
  ``minivae train`` run, and their local runner.
- :mod:`~minivae.run.cli`: the command line (``minivae ...`` or ``python -m minivae ...``),
  the only place besides :mod:`~minivae.run.algorithms` that asks for the fast path.

Nothing in the core, the baselines or the teaching tools imports from here;
:mod:`minivae.fast` imports :mod:`~minivae.run.threads` only.
"""
