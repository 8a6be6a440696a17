"""Is the fine-rule error constant?  The training-length and training-set-size arms.

arms      the runs (quick-profile settings with another length or training set), log-spaced
          checkpoints, segment-wise resumable training
evaluate  each checkpoint -> samples -> rule metrics, memorisation, DSM loss; CSV / JSON
fit       the plateau fit error(images) = c + a images^(-b) with a bootstrap CI on c
plateau   every plateau shape with a profile-likelihood CI on c, the LRT and AIC of "decays to
          zero" against "to a plateau", the ruler's floor in quadrature, the fit's power
seeds     CIs over training seeds (a hierarchical bootstrap: seeds, then samples, joined with
          Student's t over the seed values)
variants  each change of the recipe against the recipe at equal images, over seeds
grid      the job grid on submitit (local or Slurm): resumable jobs, one writer per folder, status
carry     an unfinished run packed into a folder to copy, and restored on another machine
command   ``python -m rulelib study ...`` (also ``python -m rulelib.study``)
"""
