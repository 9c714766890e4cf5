"""What the callbacks keep and do around the pure functions, between one explained epoch and the next. No Lightning.

In the order an epoch flows through it:

- ``checks``: argument checks with messages that name the fix; ``messages``: the long warnings and errors.
- ``probe``: the fixed probe batch (chosen once, by dataset index, kept on the CPU).
- ``schedule``: which methods are due at an epoch, on how many images; ``StageClock`` (seconds per stage).
- ``maps``: what is explained, the groups' results joined, focus/drift values, flat maps, the default layer.
- ``history``: the state kept between epochs (first and previous maps for drift; the most-confused examples).
- ``faithfulness_schedule``: when faithfulness is due and its per-image values.
- ``grids``: one grid per view, row captions, the layout JSON that says where each probe image's cells are.
- ``distributed``: how each strategy runs the views, and the collectives that keep ranks together.

The output stage (pictures, loggers, charts) is :mod:`lightning_explain.output`.
"""
