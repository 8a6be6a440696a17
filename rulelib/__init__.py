"""rulelib: can diffusion models learn hidden inter-feature rules behind images?

Data flow, one module per step:

    tasks     the four rule tasks (A light-shadow, B perspective, C two circles, D two squares)
    measure   sub-pixel feature measurement of rendered or generated images
    metrics   rule metrics with bootstrap confidence intervals, paper-style scatter plots
    unet      denoiser presets ("paper" 23 M U-Net, "small" for CPU)
    diffusion noise schedule, forward process, DSM loss (eq. numbers from Ho et al. 2020)
    train     fast DDPM trainer with atomic, resumable checkpoints
    sample    DDPM ancestral and DDIM samplers, chunked and resumable
    contrastive, classifiers, guidance   the paper's mitigation (section 5)
    theory    the small models of the theory (two-patch data, patch-local and linear denoisers)
    atomic    atomic file writes behind every result and checkpoint
    cli       `python -m rulelib train|sample|evaluate|reproduce|guide|filter`
"""

__version__ = "0.1.0"
