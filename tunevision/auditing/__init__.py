"""Finding what is wrong with a dataset: label errors, duplicates, outliers and odd images, from frozen features."""
