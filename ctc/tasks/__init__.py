"""Task networks split at a feature point (front = encoder side, back = decoder side)."""
