"""L-MSFC fusion coding, encoder part (torch only for training).

    coder.py       the coder TENSOR_CODERS names for Tool lmsfc: tensors ─► groups ─► CodedTensors
    analysis.py    one group: FENet and hyper-analysis in float numpy, then the decoder's integer
                   hyper-synthesis and DRNet (resolve_model finds a model by name or path)
    network.py     FusionModel in torch: training, rate model, integer arithmetic simulated
    model_file.py  a trained FusionModel ─► content-hash named safetensors
"""
