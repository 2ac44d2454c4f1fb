"""bmnode: a Bitmessage protocol v3 node for servers."""

__version__ = "0.1.0"
