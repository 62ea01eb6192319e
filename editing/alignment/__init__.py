"""Real photographs: face detection and landmarks, the FFHQ alignment, and the paste-back of an edited face.

``landmarks`` finds faces (a small detector/landmarker interface, dlib behind it), ``ffhq`` crops a face the
way FFHQ was built and returns the transform, ``pasteback`` warps an edited aligned face back into the photo.
``distill align`` (aligned crops and ``alignment.jsonl`` for a folder of photos) is the stage ``training.align``.
"""
