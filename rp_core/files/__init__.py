"""Files in and out, one module per job; nothing here imports `rp_core.video` or `rp_core.manifest`.

- `formats`: which extensions are images and videos, and how each is written;
- `decode`: a file to RGB uint8 pixels (orientation applied once, every mode converted);
- `metadata`: what `--keep-metadata` may write back (an allow-list without free text, a rebuilt ICC profile);
- `encode`: pixels to an image file, checked and published by `write`;
- `write`: the one way rp publishes a file (temporary file beside the target, checked writes, fsync,
  atomic rename, cleanup on error), and the journal's checked appends;
- `plan`: which inputs a run reads and where each output goes.
"""
