"""Video decoding, shared by the fill engine and the training loader.

``video`` (the CPU decoder: chosen frames of one video, planned from the metadata columns), ``nvdec``
(NVDEC through PyNvVideoCodec), ``clips`` (``ClipSpec``: the frames of a training clip),
``clip_decoders`` (which decoder makes a loader's clips). Depends on :mod:`mmfs_loader.contract` only.
"""
