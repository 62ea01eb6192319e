"""The networks: StyleGAN2 (the teacher) and Pix2PixHD (the student), their definitions and the loaders of the
official checkpoints. Below both the pipeline (``training``) and the service (``app``), which share them."""
