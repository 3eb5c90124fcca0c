"""What the notebooks measure, judge and draw: one module per notebook.

The runtime (``colab_tts.*`` outside this package) is what a person imports to deploy; a lesson imports
the runtime to sweep it, time it, check it against published figures and plot it. No runtime module
imports a lesson.
"""
