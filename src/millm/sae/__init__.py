"""sae package."""
