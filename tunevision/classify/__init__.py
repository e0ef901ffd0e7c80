"""The classification task: prepare, train, evaluate, predict, export and report a classifier."""
