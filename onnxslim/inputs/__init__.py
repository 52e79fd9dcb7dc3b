"""User data, one door: input specs, sample readers for every pass, size arguments."""
