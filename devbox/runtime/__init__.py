"""devbox's container engine: containers, images and networks. Knows nothing of Devboxfiles."""
