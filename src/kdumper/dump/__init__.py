"""Dump file formats: ELF vmcores, kdump-compressed, flattened streams, split sets."""
