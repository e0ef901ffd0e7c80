"""`discover`: any data spec a user gives (a folder, a CSV, `mnist:DIR`, `cifar10:DIR`, `npz:FILE`) to a Dataset.

It sits above both the folder/CSV sources and the archive readers, so that neither imports the other."""
from __future__ import annotations

from pathlib import Path

# importing archives registers mnist:, cifar10: and npz: in SOURCES
from tunevision.data.archives import archive_in
from tunevision.data.sources import SOURCES, Dataset


def discover(spec: str, *, val_fraction: float = 0.2, seed: int = 0, images: str = "",
             multilabel: bool = False) -> Dataset:
    """Dispatch on the spec's prefix (`mnist:`, `cifar10:`), a `.csv` or `.npz` suffix, the archive files a folder
    holds (MNIST's idx files, CIFAR-10's batches), or class folders."""
    prefix, sep, rest = spec.partition(":")
    if sep and prefix in SOURCES and len(prefix) > 1:  # len>1 so Windows drive letters stay paths
        return SOURCES.get(prefix)(rest, val_fraction, seed)
    if spec.lower().endswith(".csv"):
        return SOURCES.get("csv")(spec, val_fraction, seed, images, multilabel)
    if spec.lower().endswith(".npz"):
        return SOURCES.get("npz")(spec, val_fraction, seed)
    return SOURCES.get(archive_in(Path(spec).expanduser()) or "folder")(spec, val_fraction, seed)
