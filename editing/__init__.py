"""Editing a picture with a teacher's latent direction: applying a direction (``directions``), projecting a photo
into W+ (``projector``, the legacy endpoint's edit), face alignment and paste-back (``alignment``) and the
conversions between pixels and network tensors (``images``). Below both the pipeline (``training``) and the
service (``app``), which share them; the submodules import torch, OpenCV and dlib only where they are used."""
