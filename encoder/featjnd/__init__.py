"""FeatJND: feature just-noticeable-difference estimation and JND-guided step allocation (encoder only)."""
