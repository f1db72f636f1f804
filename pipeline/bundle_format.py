"""The Kaggle bundle's contract between the stage that writes it (pipeline.bundle) and the Kernel that reads it."""

MANIFEST_FORMAT = 1  # bundle.json's layout; pipeline.kernel refuses others
