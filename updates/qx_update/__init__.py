"""qx-update: the Quantix OS over-the-air update client (TUF-verified, A/B slots, boot counting)."""
