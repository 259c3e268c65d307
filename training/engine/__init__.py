"""What every training stage shares: the loop, schedules, EMA, checkpoints, resume, threads, torchrun."""
