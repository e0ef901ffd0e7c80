"""Images and labels from disk: sources, decoding, preprocessing, augmentation, annotations."""
