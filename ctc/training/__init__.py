"""The training of FCRS's learned tools (L-MSFC, the FeatJND estimators): data, task losses,
trainers and calibration. Encoder-side and informative: nothing here is imported by encode or
decode; trained models leave through encoder/ (model files, estimator files)."""
