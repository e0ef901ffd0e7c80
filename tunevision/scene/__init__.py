"""The detection and segmentation tasks: train, evaluate, predict, export and report on boxes and masks."""
