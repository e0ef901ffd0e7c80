"""Foundations every layer uses: errors, registry, config, atomic files, runtime, processes, console."""
