"""FID exactly as the paper measures it (eq. 11, Inception-V3 pool3), and what it hides (P/R, KID, per class)."""

from diffbalance.evaluate.fid.cache import Embedding, FeatureCache
from diffbalance.evaluate.fid.embedder import Embedder, embed
from diffbalance.evaluate.fid.extra import kid, per_class_fid, precision_recall
from diffbalance.evaluate.fid.extractors import register_extractor
from diffbalance.evaluate.fid.features import (
    DomainFeatures, FeatureExtractor, InceptionPool3, RandomConvFeatures, load_inception, resolve_inception_weights,
)
from diffbalance.evaluate.fid.frechet import GaussianStats, combine_stats, frechet_distance, gaussian_stats
from diffbalance.evaluate.fid.protocol import (
    FidConfig, available_extractors, build_extractor, extractor_kind, fid, fid_embedder, quality_report,
)
from diffbalance.evaluate.fid.sharded import extract_features

__all__ = [
    "DomainFeatures", "Embedder", "Embedding", "FeatureCache", "FeatureExtractor", "FidConfig", "GaussianStats",
    "InceptionPool3", "RandomConvFeatures", "available_extractors", "build_extractor", "combine_stats", "embed",
    "extract_features", "extractor_kind", "fid", "fid_embedder", "frechet_distance", "gaussian_stats", "kid",
    "load_inception", "per_class_fid", "precision_recall", "quality_report", "register_extractor",
    "resolve_inception_weights",
]
