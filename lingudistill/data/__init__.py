"""Training data: records and their two input forms, the sources that hold them, and the weighted mixture."""

from lingudistill.data.mixture import LengthGroupedSampler, MixtureSampler
from lingudistill.data.records import DataError, ImageRef, Record, load_image, load_images, parse_record
from lingudistill.data.sources import Problem, ValidationReport, load_sources, read_source, validate_sources

__all__ = [
    "DataError",
    "ImageRef",
    "LengthGroupedSampler",
    "MixtureSampler",
    "Problem",
    "Record",
    "ValidationReport",
    "load_image",
    "load_images",
    "load_sources",
    "parse_record",
    "read_source",
    "validate_sources",
]
