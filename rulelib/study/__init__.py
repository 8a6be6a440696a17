"""Is the fine-rule error constant?  The training-length and training-set-size arms of issue 12.

arms      the runs (quick-profile settings with another length or training set), log-spaced
          checkpoints, segment-wise resumable training
evaluate  each checkpoint -> samples -> rule metrics, memorisation, DSM loss; CSV / JSON
fit       the plateau fit error(images) = c + a images^(-b) with a bootstrap CI on c
command   ``python -m rulelib study ...`` (also ``python -m rulelib.study``)
"""
