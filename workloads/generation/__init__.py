"""Generation with a trained classifier read as an EBM (`energy-at generate`): SGLD, inits, metrics."""
from workloads.generation.init import ClassPCA, cached_class_pca, class_means, fit_class_pca, initial
from workloads.generation.sgld import SGLDConfig, SGLDResult, sgld

__all__ = ["ClassPCA", "SGLDConfig", "SGLDResult", "cached_class_pca", "class_means", "fit_class_pca", "initial",
           "sgld"]
