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

# docs/paper.md section 2: training epochs of the paper per task.
EPOCHS = {"A": 400, "B": 800, "C": 1600, "D": 1000}

# docs/paper.md section 3 (unguided DDPM at the paper's epochs), in the units of rule_report.
# "train" is the paper's own measurement of its training images, "generated" of its samples.
# Coarse rate of A: 1 violation in 3000 samples.  Measurable rates: the paper's detector dropped
# about 3/4 of the generated images of B-D and about 4 in 10 training images of B.
RULE_METRICS = {
    "A": {
        "train": {"conforming_pct": 95.02},
        "generated": {
            "n": 3000,
            "coarse_rate": 1 - 1 / 3000,
            "conforming_pct": 75.53,
            "within_1pct": 1.8,
            "within_5pct": 9.4,
            "bias_k1": 0.17,
            "resid_std": 0.014,
        },
    },
    "B": {
        "train": {"measurable_rate": 0.6, "conforming_pct": 97.22},
        "generated": {
            "measurable_rate": 0.25,
            "conforming_pct": 80.99,
            "bias_k1": 0.073,
            "resid_std": 0.013,
        },
    },
    "C": {
        "train": {"conforming_pct": 99.51},
        "generated": {
            "measurable_rate": 0.25,
            "conforming_pct": 49.27,
            "bias_k1": 0.209,
            "resid_std": 0.026,
        },
    },
    "D": {
        "train": {"conforming_pct": 98.63},
        "generated": {
            "measurable_rate": 0.25,
            "conforming_pct": 69.67,
            "bias_k1": 0.42,
            "resid_std": 0.030,
        },
    },
}
# The paper's numbers that it gives only roughly ("about", "≈"); tables prefix them with ≈.
RULE_METRICS_APPROX = {("B", "train", "measurable_rate")} | {
    (t, "generated", m) for t in "ABCD" for m in ("measurable_rate", "bias_k1", "resid_std")
}

# docs/paper.md section 7 (Cifar-MNIST): share of images whose tiles keep the class pairing, as
# the paper's tile classifiers judge them ("about"): generated images against training images.
PAIRING_KEPT = {"generated": 0.23, "train": 0.93}
