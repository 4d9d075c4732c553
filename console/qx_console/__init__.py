"""qx-console: the Quantix OS physical console (DCUI) and installer screens, built with Textual."""
