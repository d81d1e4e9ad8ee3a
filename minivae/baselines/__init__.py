"""The paper's baselines: what AEVB is compared with, and the estimator Figure 3 needs.

- :mod:`~minivae.baselines.wakesleep`: the wake-sleep algorithm (Section 5, Figures 2
  and 3), a training step with two optimisers, one for theta and one for phi.
- :mod:`~minivae.baselines.hmc`: hybrid Monte Carlo on p(z|x), with the decoder's own
  gradient in z; the sampler of the two below.
- :mod:`~minivae.baselines.mcem`: Monte-Carlo EM with an HMC E-step (Appendix E,
  Figure 3), a training step with persistent chains.
- :mod:`~minivae.baselines.marginal`: the marginal-likelihood estimator of Appendix D
  (Figure 3's log p(x)), and an exact grid over z for J <= 2.

They import the core (the model, the optimisers, the training-step seam of
:mod:`minivae.steps`) and nothing else; the run infrastructure
(:mod:`minivae.run.algorithms`) offers them by name.
"""
