"""The SDK's backends (see ARCHITECTURE: cli -> pipeline -> client -> resources -> backends)."""
