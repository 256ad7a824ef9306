"""distilbench: can a distilled model replace the big one for your text classifier?"""

__version__ = "0.1.0"
