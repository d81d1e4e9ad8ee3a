"""minivae: the Variational Auto-Encoder of Kingma & Welling (AEVB), in NumPy.

Every gradient is written by hand and checked by finite differences; see
``docs/`` for the map from the paper's equations to the functions here.
"""

__version__ = "0.1.0"
