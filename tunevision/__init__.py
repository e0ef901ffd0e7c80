"""tunevision: transfer learning on images, from a folder of photos to a model you can predict with."""
__version__ = "0.1.0"

__all__ = ["__version__"]
