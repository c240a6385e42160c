"""FID exactly as the paper measures it (eq. 11, Inception-V3 pool3), and what it hides (P/R, KID, per class)."""

from diffbalance.evaluate.fid.cache import Embedding, FeatureCache, embed
from diffbalance.evaluate.fid.extra import kid, per_class_fid, precision_recall
from diffbalance.evaluate.fid.features import (
    DomainFeatures, FeatureExtractor, InceptionPool3, RandomConvFeatures, load_inception, resolve_inception_weights,
)
from diffbalance.evaluate.fid.frechet import GaussianStats, frechet_distance, gaussian_stats
from diffbalance.evaluate.fid.protocol import FidConfig, build_extractor, fid, quality_report

__all__ = [
    "DomainFeatures", "Embedding", "FeatureCache", "FeatureExtractor", "FidConfig", "GaussianStats", "InceptionPool3",
    "RandomConvFeatures", "build_extractor", "embed", "fid", "frechet_distance", "gaussian_stats", "kid",
    "load_inception", "per_class_fid", "precision_recall", "quality_report", "resolve_inception_weights",
]
