"""Package data: PFN weights trained by this project (safetensors), loaded by :mod:`bayesnets.pfn.pretrained`."""
