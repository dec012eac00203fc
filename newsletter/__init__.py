"""newsletter: write your newsletter in Markdown; compile it once, preview it, send it exactly once."""

__version__ = "0.1.0"
