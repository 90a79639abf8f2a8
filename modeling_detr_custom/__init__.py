"""detr-custom: DETR (DEtection TRansformer) packaged for the Hugging Face ecosystem."""

__all__: list[str] = []
