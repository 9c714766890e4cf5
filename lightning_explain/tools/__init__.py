"""Tools around the callbacks: the ``lightning-explain`` console command (``cli``) and the shortcut demo (``demo``)."""
