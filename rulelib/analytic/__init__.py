"""Closed-form denoisers from a task's training images, from memorising to local.

denoisers  EmpiricalDenoiser (exact DSM minimiser), GaussianDenoiser (affine DSM minimiser),
           LocalDenoiser (Kamb & Ganguli's local score machine, same-location or
           translation-equivariant); each an ``eps_fn`` for rulelib.diffusion.sample.sample
draw       draw and score a denoiser's samples like a trained run (metrics.json, report.md)
command    ``python -m rulelib analytic --task B --denoiser local --n 256 --out DIR``
"""
