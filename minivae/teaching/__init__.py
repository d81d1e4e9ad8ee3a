"""The teaching tools: models with closed forms, checks of meaning, the bug zoo, the exercises.

- :mod:`~minivae.teaching.linear_gaussian`: a linear-Gaussian VAE whose log p(x) and
  posterior are known in closed form, the known answer of the tests and notebooks.
- :mod:`~minivae.teaching.em`: the bound from the EM view (Section 2.2, eq. 1-2), in
  closed form on that model (notebook 05).
- :mod:`~minivae.teaching.gradient_estimators`: the score-function and reparameterised
  gradients of one expectation, side by side (notebook 06).
- :mod:`~minivae.teaching.checks`: checks of meaning, what a gradient check cannot see.
- :mod:`~minivae.teaching.bugzoo`: mistakes that published VAE code shipped, injected
  into minivae one at a time, and the check that catches each (notebook 09).
- :mod:`minivae.teaching.exercises`: the class exercises, from one solution source to
  the teacher's and the students' notebooks and the grader
  (``python -m minivae.teaching.exercises``).

They import the core and nothing else; no core module imports them.
"""
