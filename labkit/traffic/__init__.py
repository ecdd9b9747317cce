"""Traffic generators and meters, bounded in time and count."""
