"""The domain: configuration, storage, cryptography, audit. Imports nothing above it."""
