"""The paper's section 5: contrastive data, classifiers, filtering and classifier guidance.

contrastive   rule-violating negatives made by scaling the dependent feature
classifiers   the pixel-space classifiers trained on them (and noise-conditional ones)
guidance      classifier-guided DDPM/DDIM sampling
pipeline      the mitigation of one task of a run: classifiers, filtering, guidance sweep
"""
