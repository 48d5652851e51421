"""Common test conditions (CTC): task networks, datasets, runners and reports for FCRS."""
