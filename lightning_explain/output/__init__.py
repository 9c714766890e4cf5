"""The output stage: maps become pictures, pictures and numbers go to loggers.

- ``render``: denormalise, colour map, overlay, grid and captions (tensor work on the maps' device);
  ``render_views``: the grids of the filter and feature-map views.
- ``charts``: which number goes in which chart (TensorBoard's custom scalars, the report, the dashboard).
- ``sinks``: TensorBoard, loggers with ``log_image``, MLflow, PNG files; the background image writer.
- ``_crc32c``: a fast CRC-32C for TensorBoard's records.
"""
