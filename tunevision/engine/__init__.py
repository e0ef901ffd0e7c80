"""What every task's training shares: the run folder, checkpoints, optimisers, calibration, export."""
