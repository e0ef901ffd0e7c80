"""The HTTP service: a web page, POST /predict and /metrics for any bundle."""
