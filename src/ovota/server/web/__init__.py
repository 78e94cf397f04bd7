"""The server's pages: the shared layout, the download area's look, and the release console."""
