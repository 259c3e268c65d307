"""Stages ``ddpm`` and ``features``: the UNet DDPM trained on the defect images, and its activations."""
