"""The ``ovota`` command line: thin click commands over the library."""
