"""The site: ClientApp, DP training and accounting. Never imports fedward.server."""
