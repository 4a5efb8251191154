"""The report's sections, one module each, named as the pipeline names the feature."""
