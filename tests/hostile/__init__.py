"""Hostile input everywhere: malformed configs, data, ledgers, ciphertexts and Flower messages."""
