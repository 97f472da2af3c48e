"""The base layer: errors, strict configs, precision, progress and metrics logs, artifacts
(config.json + safetensors), run folders and seeds. Imports nothing else from cxraug."""
