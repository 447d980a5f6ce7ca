"""The SDK's resources (see ARCHITECTURE: cli -> pipeline -> client -> resources -> backends)."""
