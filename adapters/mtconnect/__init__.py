"""MTConnect: the document parser, the client adapter, discovery, and our own agent (with SHDR input)."""

__all__: list[str] = []
