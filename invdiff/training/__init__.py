"""Training: denoising score matching, crop augmentation, noise-conditional classifiers."""
