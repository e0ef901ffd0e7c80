"""Networks and the bundle that saves them: backbones, classifier, detectors, hub models."""
