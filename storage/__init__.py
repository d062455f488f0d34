"""Where results live and how they leave: storage URLs, artifacts, model files."""
