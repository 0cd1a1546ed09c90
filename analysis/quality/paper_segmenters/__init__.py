"""The three segmenters the papers score generated images with, built here and loaded from their
released weight files: DRN-D-105 (Cityscapes, ``drn.py``), ResNet-101 + UPerNet (ADE20K,
``upernet.py``), MSC DeepLabV2 (COCO-Stuff, ``deeplabv2.py``); reading the files (``release.py``)
and each network's evaluation protocol (``protocol.py``). The API lives in
``analysis.quality.segmenters``:

    seg = load_paper_segmenter("drn-d-105", "drn-d-105_ms_cityscapes.pth")
"""
