"""Reading, checking, augmenting and sampling the user's images and masks (segmentation), and their
images and pairs with the degradations that make training pairs (restoration)."""

from .check import CheckReport, check_dataset
from .classes import ClassInfo
from .degrade import NoiseModel, parse_noise
from .detect import detect_classes
from .io import IMAGE_SUFFIXES, DataError, is_volume_path, read_image, read_label_image
from .normalize import NormalizeConfig, normalize_image
from .pairs import ImagePair, find_image_pairs
from .patches import PatchDataset
from .samples import Sample, default_num_workers, find_samples, load_sample, split_samples
from .synthetic import make_synthetic_cells, write_synthetic_dataset
from .transforms import AugmentConfig, Augmenter
from .weights import BorderWeightConfig, border_weight_map

__all__ = [
    "IMAGE_SUFFIXES", "AugmentConfig", "Augmenter", "BorderWeightConfig", "CheckReport", "ClassInfo",
    "DataError", "ImagePair", "NoiseModel", "NormalizeConfig", "PatchDataset", "Sample", "border_weight_map",
    "check_dataset", "default_num_workers", "detect_classes", "find_image_pairs", "find_samples",
    "is_volume_path", "load_sample", "make_synthetic_cells", "normalize_image", "parse_noise", "read_image",
    "read_label_image", "split_samples", "write_synthetic_dataset",
]
