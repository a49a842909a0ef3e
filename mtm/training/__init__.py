"""The training loop and what it needs: device and process-group set-up, schedule, validation."""
