"""Code shared by the coordinator and the sites: configs, data, models, metrics, egress guard."""
