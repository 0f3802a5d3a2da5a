"""telesurg: open software side of long-distance robotic telesurgery."""

__version__ = "0.1.0"
