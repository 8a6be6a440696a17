"""The paper's numbers in one place (Han et al., ICML 2025; docs/paper.md cites each source).

Code that compares with the paper, or uses its settings, reads them from here.
"""

# docs/paper.md section 5: test accuracy (%) of the three pixel classifiers on the contrastive data.
CLASSIFIER_ACCURACY = {
    "mlp": {"A": 67.47, "B": 77.58, "C": 45.83, "D": 81.17},
    "resnet8": {"A": 62.74, "B": 66.50, "C": 80.17, "D": 75.83},
    "smallconv": {"A": 64.25, "B": 75.13, "C": 82.37, "D": 81.17},
}


# The paper's guidance scales s for tasks A-D (docs/paper.md section 5).
GUIDANCE_SCALES = {"A": 7.0, "B": 3.0, "C": 7.0, "D": 10.0}
