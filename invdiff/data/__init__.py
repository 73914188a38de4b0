"""Data sources: generated and installed images (phantoms, synthetic, MNI152, photos)."""
