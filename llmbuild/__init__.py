"""llmbuild: compile open-weight LLMs into checked, license-aware artifacts from a Hydra recipe."""

__version__ = "0.1.0"
