"""The coordinator: ServerApp, strategy wrappers, run folder and reports. Never imports fedward.client."""
