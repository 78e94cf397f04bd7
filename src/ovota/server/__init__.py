"""The update server: release repository, HTTP app, API tokens."""
